using System.Text;
using System.Text.Json.Nodes;

namespace Nanolora.Transformer;

/// <summary>
/// A BERT WordPiece vocabulary (all-MiniLM-L6-v2's) as a seq2seq tokenizer. The seq2seq model's ids 0–3 are pad,
/// bos, eos, unk; BERT's are [PAD] 0, [unused0] 1, [unused1] 2, [unused2] 3, with [UNK] 100, [CLS] 101, [SEP] 102.
/// So the compact ids are BERT's with three swaps — bos ↔ [CLS], eos ↔ [SEP], unk ↔ [UNK] — and the embedding
/// rows are permuted the same way (<see cref="BertIdOf"/>). The decoder starts from [CLS] and stops at [SEP], as
/// Hugging Face's BERT2BERT does; a source reads <c>[CLS] pieces [SEP]</c>, exactly what the pretrained encoder saw.
/// </summary>
public sealed class WordPieceSeq2SeqTokenizer : ISeq2SeqTokenizer
{
    /// <summary>The "kind" field of this tokenizer's tokenizer.json.</summary>
    public const string Kind = "bert-wordpiece";
    static readonly string[] SpecialTokens = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]; // compact 0, 1, 2, 3

    readonly int[] _bertOf;      // compact id → BERT id
    readonly int[] _compactOf;   // BERT id → compact id
    readonly string[] _tokens;   // BERT id → token text

    /// <summary>The underlying BERT tokenizer (BERT ids).</summary>
    public BertWordPieceTokenizer Bert { get; }
    /// <inheritdoc/>
    public int VocabSize => _bertOf.Length;

    /// <summary>Maps <paramref name="bert"/>'s vocabulary to compact ids; throws when it lacks [PAD], [CLS], [SEP] or [UNK].</summary>
    public WordPieceSeq2SeqTokenizer(BertWordPieceTokenizer bert)
    {
        Bert = bert;
        _tokens = bert.VocabText.Split('\n').Select(l => l.TrimEnd('\r')).Where(l => l.Length > 0).ToArray();
        if (_tokens.Length != bert.VocabSize || _tokens.Length < 4)
            throw new InvalidDataException($"WordPiece vocabulary: {_tokens.Length} lines for {bert.VocabSize} tokens (duplicate lines?); expected one token per line.");
        int n = _tokens.Length;
        _bertOf = Enumerable.Range(0, n).ToArray();
        _compactOf = Enumerable.Range(0, n).ToArray();
        var idOf = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < n; i++) idOf[_tokens[i]] = i;
        for (int compact = 0; compact < SpecialTokens.Length; compact++)
        {
            if (!idOf.TryGetValue(SpecialTokens[compact], out int bertId))
                throw new InvalidDataException($"WordPiece vocabulary has no {SpecialTokens[compact]} token.");
            // Swap so that compact id `compact` is this special; whatever BERT token held it moves to the special's old place.
            int other = _compactOf[bertId];
            (_bertOf[compact], _bertOf[other]) = (_bertOf[other], _bertOf[compact]);
            _compactOf[_bertOf[compact]] = compact;
            _compactOf[_bertOf[other]] = other;
        }
    }

    /// <summary>The BERT id (row of the pretrained embedding table) of a compact id.</summary>
    public int BertIdOf(int compactId) => _bertOf[compactId];

    /// <inheritdoc/>
    public int[] EncodeSource(string text, int maxTokens)
    {
        if (maxTokens < 2) throw new ArgumentException($"maxTokens {maxTokens} leaves no room for [CLS] and [SEP].");
        return Bert.Encode(text, maxTokens).Select(id => _compactOf[id]).ToArray();
    }

    /// <inheritdoc/>
    public int[] EncodeTarget(string text, int maxTokens)
    {
        if (maxTokens < 0) throw new ArgumentException($"maxTokens must be at least 0, got {maxTokens}.");
        var ids = Bert.Encode(text, Math.Min(maxTokens, int.MaxValue - 2) + 2);
        return ids[1..^1].Select(id => _compactOf[id]).ToArray();
    }

    /// <summary>
    /// Word pieces joined ("##" continues a word), with BERT's punctuation split undone where text usually has no
    /// space ("command - line" → "command-line", "2 . 0" → "2.0"). The original spacing is not recoverable: BERT drops
    /// it, so this is a best guess; ROUGE and chrF ignore spacing around punctuation anyway.
    /// </summary>
    public string Decode(IEnumerable<int> ids)
    {
        var sb = new StringBuilder();
        bool glueNext = false, afterNumberPoint = false;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"id {id} is outside the vocabulary [0, {VocabSize})");
            if (id == SubwordTokenizer.Eos) break;
            if (id is SubwordTokenizer.Pad or SubwordTokenizer.Bos or SubwordTokenizer.Unk) continue;
            string token = _tokens[_bertOf[id]];
            if (token.StartsWith("##", StringComparison.Ordinal) && sb.Length > 0) { sb.Append(token, 2, token.Length - 2); glueNext = false; continue; }
            bool glue = glueNext || token is "." or "," or ";" or ":" or "!" or "?" or ")" or "]" or "}" or "%" or "-" or "/" or "_" or "+" or "'"
                || (afterNumberPoint && char.IsAsciiDigit(token[0]));   // "2 . 0" → "2.0"
            if (sb.Length > 0 && !glue) sb.Append(' ');
            afterNumberPoint = token == "." && sb.Length > 0 && char.IsAsciiDigit(sb[^1]);
            sb.Append(token);
            glueNext = token is "(" or "[" or "{" or "-" or "/" or "_" or "'";   // "+" glues only backwards: "c++ library"
        }
        return sb.ToString();
    }

    /// <inheritdoc/>
    public void Save(string path)
    {
        var json = new JsonObject
        {
            ["kind"] = Kind,
            ["lower_case"] = Bert.LowerCase,
            ["max_length"] = Bert.MaxLength,
            ["specials"] = new JsonObject { ["pad"] = "[PAD]", ["bos"] = "[CLS]", ["eos"] = "[SEP]", ["unk"] = "[UNK]" },
            ["vocab"] = new JsonArray(_tokens.Select(t => (JsonNode)t).ToArray()),
        };
        AtomicFile.WriteAllText(path, json.ToJsonString());
    }

    /// <summary>Reads a tokenizer.json written by <see cref="Save"/>.</summary>
    public static WordPieceSeq2SeqTokenizer Load(string path)
    {
        InvalidDataException Bad(string problem) => new($"tokenizer file '{path}': {problem}");
        JsonObject obj;
        try { obj = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw Bad("top level is not a JSON object"); }
        catch (System.Text.Json.JsonException e) { throw Bad($"not valid JSON ({e.Message})"); }
        if (obj["vocab"] is not JsonArray vocab || vocab.Count < 4) throw Bad("missing \"vocab\" array of word pieces");
        var tokens = new List<string>(vocab.Count);
        for (int i = 0; i < vocab.Count; i++)
        {
            if (vocab[i] is not JsonValue v || !v.TryGetValue(out string? t) || t.Length == 0 || t.Contains('\n'))
                throw Bad($"vocab[{i}] = {vocab[i]?.ToJsonString() ?? "null"} is not a non-empty single-line string");
            tokens.Add(t);
        }
        if (tokens.Distinct(StringComparer.Ordinal).Count() != tokens.Count) throw Bad("\"vocab\" has duplicate word pieces");
        bool lower = obj["lower_case"] is JsonValue lv && lv.TryGetValue(out bool b) ? b : throw Bad("missing boolean \"lower_case\"");
        int maxLength = obj["max_length"] is JsonValue mv && mv.TryGetValue(out int m) && m >= 2 ? m : throw Bad("missing \"max_length\" (an integer ≥ 2)");
        return new WordPieceSeq2SeqTokenizer(new BertWordPieceTokenizer(string.Join('\n', tokens), lower, maxLength, path));
    }
}
