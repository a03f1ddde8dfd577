using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace Nanolora.Transformer;

/// <summary>
/// GPT-2's byte-level BPE (Microsoft.ML.Tokenizers' tiktoken "gpt2" data) with the vocabulary cut down to the ids a
/// corpus actually uses, so the model's embedding table has VocabSize rows instead of 50,257. Compact ids: 0 pad,
/// 1 bos, 2 eos, 3 unk, then the kept GPT-2 ids from 4 on, most frequent first. A GPT-2 token outside the kept
/// set is spelled with kept tokens (all printable ASCII characters are always kept, like SentencePiece's byte
/// fallback), so a rare word such as "Magick" is not lost; only characters outside the kept set become Unk.
/// Decode(Encode(s)) == s exactly when no Unk was produced. Two spellings (<see cref="TokenFallback"/>):
/// longest kept pieces first (" Azure" → " Az" + "ure"), the default, or single characters (files written before
/// the longest-match spelling existed, which stay tokenized exactly as their models were trained).
/// </summary>
public sealed class SubwordTokenizer : ISeq2SeqTokenizer
{
    /// <summary>The special ids: pad, bos, eos, unk (the same in every <see cref="ISeq2SeqTokenizer"/>).</summary>
    public const int Pad = 0, Bos = 1, Eos = 2, Unk = 3;
    const int FirstRegular = 4;
    const string Kind = "gpt2-subset";

    static readonly Lazy<TiktokenTokenizer> Gpt2Lazy = new(() => TiktokenTokenizer.CreateForModel("gpt2"));
    // GPT-2's ids are 0..50255 for BPE tokens and 50256 for <|endoftext|>, its only special token; the library's
    // Decode returns "" for ids past the end instead of failing, so Load checks the range itself.
    static readonly Lazy<int> Gpt2SizeLazy = new(() => (Gpt2Lazy.Value.SpecialTokens?.Values.DefaultIfEmpty(50256).Max() ?? 50256) + 1);

    internal static Tokenizer Gpt2 => Gpt2Lazy.Value;

    /// <summary>Number of ids in the full GPT-2 vocabulary (50,257: 50,256 BPE tokens and &lt;|endoftext|&gt;).</summary>
    public static int Gpt2VocabSize => Gpt2SizeLazy.Value;

    readonly int[] gpt2Ids;                        // compact id (minus 4) → GPT-2 id
    readonly Dictionary<int, int> compactOf;       // GPT-2 id → compact id
    readonly System.Collections.Concurrent.ConcurrentDictionary<int, int[]> fallback = new(); // unkept GPT-2 id → compact ids
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> keptByText; // a kept token's text → compact id
    readonly int longestKeptText;

    /// <summary>How a GPT-2 token outside the kept set is spelled.</summary>
    public TokenFallback Fallback { get; }

    /// <summary>GPT-2 ids of the printable ASCII characters: always in the vocabulary, so fallback can spell anything ASCII.</summary>
    static int[] CharacterIds() => Enumerable.Range(32, 95).SelectMany(c => Gpt2.EncodeToIds(((char)c).ToString())).Distinct().ToArray();

    /// <summary>Compact ids for one GPT-2 id: itself if kept, else its spelling in kept tokens (Unk for characters not kept).</summary>
    int[] CompactIds(int gpt2Id)
    {
        if (compactOf.TryGetValue(gpt2Id, out int c)) return [c];
        return fallback.GetOrAdd(gpt2Id, id =>
        {
            var pieces = Spell(Gpt2.Decode([id]) ?? "");
            return pieces.Count == 0 ? [Unk] : pieces.ToArray();
        });
    }

    /// <summary>
    /// Kept tokens covering <paramref name="text"/>: with longest-match, at each position the longest kept token
    /// text that starts there (as WordPiece does); a character no kept token starts with is spelled alone.
    /// </summary>
    List<int> Spell(string text)
    {
        var pieces = new List<int>();
        int i = 0;
        while (i < text.Length)
        {
            int matched = 0;
            if (Fallback == TokenFallback.LongestMatch)
                for (int len = Math.Min(longestKeptText, text.Length - i); len > 0 && matched == 0; len--)
                    if (keptByText.TryGetValue(text.AsSpan(i, len), out int id)) { pieces.Add(id); matched = len; }
            if (matched > 0) { i += matched; continue; }
            var rune = System.Text.Rune.GetRuneAt(text, i);
            foreach (int g in Gpt2.EncodeToIds(rune.ToString())) pieces.Add(compactOf.TryGetValue(g, out int k) ? k : Unk);
            i += rune.Utf16SequenceLength;
        }
        return pieces;
    }

    SubwordTokenizer(int[] gpt2Ids, TokenFallback fallbackKind)
    {
        this.gpt2Ids = gpt2Ids;
        Fallback = fallbackKind;
        compactOf = new Dictionary<int, int>(gpt2Ids.Length);
        for (int i = 0; i < gpt2Ids.Length; i++) compactOf.Add(gpt2Ids[i], FirstRegular + i);
        var byText = new Dictionary<string, int>();
        foreach (var (gpt2Id, compact) in compactOf)
        {
            // Byte-level pieces of a multi-byte character decode to U+FFFD and can't be matched as text.
            string text = Gpt2.Decode([gpt2Id]) ?? "";
            if (text.Length == 0 || text.Contains('\uFFFD')) continue;
            if (byText.TryAdd(text, compact)) longestKeptText = Math.Max(longestKeptText, text.Length);
        }
        keptByText = byText.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>The same kept vocabulary with another fallback spelling.</summary>
    public SubwordTokenizer WithFallback(TokenFallback kind) => kind == Fallback ? this : new SubwordTokenizer(gpt2Ids, kind);

    /// <summary>Rows of the embedding table: the 4 specials plus the kept GPT-2 ids.</summary>
    public int VocabSize => FirstRegular + gpt2Ids.Length;

    /// <summary>The kept GPT-2 ids in compact order (compact id = index + 4).</summary>
    public IReadOnlyList<int> Gpt2Ids => gpt2Ids;

    /// <summary>
    /// Counts GPT-2 ids over <paramref name="corpus"/> and keeps those seen at least <paramref name="minCount"/> times,
    /// most frequent first (ties by smaller GPT-2 id), so that VocabSize ≤ <paramref name="maxVocab"/> (specials included).
    /// </summary>
    public static SubwordTokenizer Build(IEnumerable<string> corpus, int maxVocab, int minCount = 1)
    {
        ArgumentNullException.ThrowIfNull(corpus);
        if (maxVocab < FirstRegular) throw new ArgumentException($"maxVocab must be at least {FirstRegular} (the specials), got {maxVocab}");
        if (minCount < 1) throw new ArgumentException($"minCount must be at least 1, got {minCount}");
        var counts = new Dictionary<int, long>();
        foreach (var text in corpus)
        {
            if (text is null) throw new ArgumentException("corpus contains a null string");
            foreach (int id in Gpt2.EncodeToIds(text)) counts[id] = counts.GetValueOrDefault(id) + 1;
        }
        var characters = CharacterIds();
        if (maxVocab < FirstRegular + characters.Length)
            throw new ArgumentException($"maxVocab must be at least {FirstRegular + characters.Length} (specials and the printable ASCII characters), got {maxVocab}");
        var frequent = counts.Where(kv => kv.Value >= minCount && !characters.Contains(kv.Key))
            .OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key)
            .Take(maxVocab - FirstRegular - characters.Length).Select(kv => kv.Key);
        // Characters first (fixed ids), then the corpus's most frequent tokens.
        return new SubwordTokenizer(characters.Concat(frequent).ToArray(), TokenFallback.LongestMatch);
    }

    /// <summary>
    /// Compact ids of <paramref name="text"/>, at most <paramref name="maxTokens"/> in all (BOS/EOS included; when
    /// truncating, the text is cut and EOS is still appended).
    /// </summary>
    public int[] Encode(string text, int maxTokens = int.MaxValue, bool addBos = false, bool addEos = false)
    {
        ArgumentNullException.ThrowIfNull(text);
        int specials = (addBos ? 1 : 0) + (addEos ? 1 : 0);
        if (maxTokens < specials) throw new ArgumentException($"maxTokens {maxTokens} leaves no room for the {specials} requested special tokens");
        int room = maxTokens - specials;
        int n = 0;
        IReadOnlyList<int> ids = [];
        if (room > 0)
        {
            // Asking the BPE for only about as many tokens as fit keeps a 12,000-word source from being encoded whole.
            // Ask for some slack and cut exactly; should the library ever stop short of `room` before the end of the
            // text, encode everything, so the result is always a prefix of the full encoding.
            ids = Gpt2.EncodeToIds(text, room > int.MaxValue - 64 ? int.MaxValue : room + 64, out _, out int consumed);
            if (ids.Count < room && consumed < text.Length) ids = Gpt2.EncodeToIds(text);
            n = Math.Min(ids.Count, room);
        }
        var result = new List<int>(n + specials);
        if (addBos) result.Add(Bos);
        // A fallback can spell one GPT-2 token as several, so the cut to `room` happens after mapping.
        for (int i = 0; i < n && result.Count - (addBos ? 1 : 0) < room; i++)
            foreach (int c in CompactIds(ids[i]))
                if (result.Count - (addBos ? 1 : 0) < room) result.Add(c);
        if (addEos) result.Add(Eos);
        return result.ToArray();
    }

    /// <summary>The text's ids and Eos (no Bos: the encoder never needs one).</summary>
    public int[] EncodeSource(string text, int maxTokens) => Encode(text, maxTokens, addEos: true);

    /// <inheritdoc/>
    public int[] EncodeTarget(string text, int maxTokens) => Encode(text, maxTokens);

    /// <summary>Text of compact ids: Pad, Bos and Unk are skipped, decoding stops at the first Eos.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var gpt = new List<int>();
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary [0, {VocabSize})");
            if (id == Eos) break;
            if (id >= FirstRegular) gpt.Add(gpt2Ids[id - FirstRegular]);
        }
        return gpt.Count == 0 ? "" : Gpt2.Decode(gpt);
    }

    /// <summary>Writes the JSON description (kind, specials, GPT-2 ids in compact order) atomically.</summary>
    public void Save(string path)
    {
        var json = new JsonObject
        {
            ["kind"] = Kind,
            ["base"] = "gpt2",
            ["specials"] = new JsonObject { ["pad"] = Pad, ["bos"] = Bos, ["eos"] = Eos, ["unk"] = Unk },
            ["fallback"] = Fallback == TokenFallback.LongestMatch ? "longest-match" : "characters",
            ["gpt2_ids"] = new JsonArray(gpt2Ids.Select(i => (JsonNode)i).ToArray()),
        };
        string full = Path.GetFullPath(path);
        string tmp = Path.Combine(Path.GetDirectoryName(full) ?? ".", $".{Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            File.WriteAllText(tmp, json.ToJsonString());
            File.Move(tmp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(tmp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    /// <summary>Reads a tokenizer.json written by <see cref="Save"/>.</summary>
    public static SubwordTokenizer Load(string path)
    {
        JsonNode? root;
        if (Directory.Exists(path)) throw Bad(path, "is a directory, expected a tokenizer.json file");
        try { root = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw Bad(path, $"not valid JSON ({e.Message})"); }
        if (root is not JsonObject obj) throw Bad(path, "top level is not a JSON object");

        string? kind = Str(obj, "kind");
        if (kind != Kind) throw Bad(path, $"\"kind\" is {(kind is null ? "missing" : $"'{kind}'")}, expected '{Kind}'");
        if (obj["specials"] is not JsonObject sp) throw Bad(path, "missing \"specials\" object");
        foreach (var (name, expected) in new[] { ("pad", Pad), ("bos", Bos), ("eos", Eos), ("unk", Unk) })
            if (Int(sp, name) != expected) throw Bad(path, $"special \"{name}\" must be {expected}");
        if (obj["gpt2_ids"] is not JsonArray arr) throw Bad(path, "missing \"gpt2_ids\" array");
        // Files from before the "fallback" field spelled unkept tokens by characters; they keep doing so.
        var fallbackKind = Str(obj, "fallback") switch
        {
            null when obj["fallback"] is null => TokenFallback.Characters,
            "characters" => TokenFallback.Characters,
            "longest-match" => TokenFallback.LongestMatch,
            _ => throw Bad(path, $"\"fallback\" is {obj["fallback"]?.ToJsonString()}, expected \"longest-match\" or \"characters\""),
        };

        var ids = new int[arr.Count];
        var seen = new HashSet<int>();
        for (int i = 0; i < arr.Count; i++)
        {
            int? v = arr[i] is JsonValue jv && jv.TryGetValue(out int x) ? x : null;
            if (v is not int id || id < 0 || id >= Gpt2VocabSize)
                throw Bad(path, $"gpt2_ids[{i}] = {arr[i]?.ToJsonString() ?? "null"} is not a GPT-2 id in [0, {Gpt2VocabSize})");
            if (!seen.Add(id)) throw Bad(path, $"gpt2_ids[{i}] = {id} is a duplicate");
            ids[i] = id;
        }
        return new SubwordTokenizer(ids, fallbackKind);
    }

    static string? Str(JsonObject o, string key) =>
        o[key] is JsonValue v && v.TryGetValue(out string? s) ? s : null;

    static int? Int(JsonObject o, string key) =>
        o[key] is JsonValue v && v.TryGetValue(out int i) ? i : null;

    static InvalidDataException Bad(string path, string problem) => new($"tokenizer file '{path}': {problem}");
}

/// <summary>How <see cref="SubwordTokenizer"/> spells a GPT-2 token outside its kept vocabulary.</summary>
public enum TokenFallback
{
    /// <summary>Each character's own token (the first tokenizer files; rare words become long letter runs).</summary>
    Characters,
    /// <summary>The longest kept token texts, left to right (fewer, more meaningful pieces).</summary>
    LongestMatch,
}
