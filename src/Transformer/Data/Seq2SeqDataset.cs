using System.IO.Compression;
using System.Text;
using System.Text.Json;

namespace Nanolora.Transformer;

/// <summary>One training or evaluation pair: the source text the encoder reads and the target text the decoder writes.</summary>
public sealed record Example(string Source, string Target);

/// <summary>Reads the shipped datasets: JSON Lines (gzip'd or plain), one object per line with source, target and split.</summary>
public static class JsonlDataset
{
    /// <summary>
    /// The examples of <paramref name="split"/> in file order, at most <paramref name="limit"/>. A malformed line throws
    /// InvalidDataException naming the file and line number; a split the file does not have throws ArgumentException.
    /// </summary>
    public static IReadOnlyList<Example> Load(string path, string split, int? limit = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(split);
        if (limit is < 0) throw new ArgumentException($"limit must be non-negative, got {limit}");
        var result = new List<Example>();
        if (limit == 0) return result;
        var splitsSeen = new SortedSet<string>(StringComparer.Ordinal);
        using var reader = OpenText(path);
        int lineNo = 0;
        string? line;
        while ((line = ReadLine(reader, path, lineNo + 1)) is not null)
        {
            lineNo++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            var (source, target, lineSplit) = ParseLine(path, lineNo, line);
            splitsSeen.Add(lineSplit);
            if (lineSplit != split) continue;
            result.Add(new Example(source, target));
            if (result.Count == limit) break;
        }
        if (result.Count == 0 && !splitsSeen.Contains(split))
            throw new ArgumentException($"'{path}' has no split '{split}' (it has: {string.Join(", ", splitsSeen)})");
        return result;
    }

    static StreamReader OpenText(string path)
    {
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        Span<byte> magic = stackalloc byte[2];
        int got = fs.ReadAtLeast(magic, 2, throwOnEndOfStream: false);
        fs.Position = 0;
        Stream s = got == 2 && magic[0] == 0x1f && magic[1] == 0x8b ? new GZipStream(fs, CompressionMode.Decompress) : fs;
        return new StreamReader(s, new UTF8Encoding(false, throwOnInvalidBytes: true));
    }

    static string? ReadLine(StreamReader r, string path, int lineNo)
    {
        try { return r.ReadLine(); }
        catch (InvalidDataException e) { throw new InvalidDataException($"'{path}' line {lineNo}: corrupt gzip data ({e.Message})", e); }
        catch (DecoderFallbackException e) { throw new InvalidDataException($"'{path}' line {lineNo}: invalid UTF-8 ({e.Message})", e); }
    }

    static (string Source, string Target, string Split) ParseLine(string path, int lineNo, string line)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            if (doc.RootElement.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"'{path}' line {lineNo}: expected a JSON object, got {doc.RootElement.ValueKind}");
            return (Field(doc.RootElement, "source"), Field(doc.RootElement, "target"), Field(doc.RootElement, "split"));

            string Field(JsonElement o, string name) =>
                o.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String
                    ? v.GetString()!
                    : throw new InvalidDataException($"'{path}' line {lineNo}: missing string field \"{name}\"");
        }
        catch (JsonException e) { throw new InvalidDataException($"'{path}' line {lineNo}: invalid JSON ({e.Message})", e); }
    }
}

/// <summary>
/// One padded batch, row-major. SourceIds [B, S]: source tokens then Eos, padded with Pad. TargetInput [B, T] =
/// [Bos, y...] and TargetOutput [B, T] = [y..., Eos] (the next-token labels), both padded with Pad.
/// SourceLengths [B]: unpadded source lengths (for the encoder's attention mask).
/// </summary>
public sealed record Batch(int[] SourceIds, int[] TargetInput, int[] TargetOutput, int BatchSize, int SourceLength, int TargetLength, int[] SourceLengths);

/// <summary>
/// Tokenizes every example once and serves padded batches: <see cref="Epoch"/> for training (length-bucketed,
/// shuffled deterministically by seed and epoch) and <see cref="InOrder"/> for evaluation.
/// </summary>
public sealed class BatchLoader
{
    /// <summary>Examples per sort window, in batches: big enough to bucket by length, small enough to keep batches varied.</summary>
    public const int BucketBatches = 50;

    readonly int[][] sources;   // source ids + Eos, at most maxSourceTokens
    readonly int[][] targets;   // target ids without specials, at most maxTargetTokens - 1
    readonly int batchSize;
    readonly ulong seed;

    /// <summary>Tokenizes every example once (in parallel); batches are built from the ids.</summary>
    /// <param name="examples">The pairs to serve.</param>
    /// <param name="tok">Encodes sources and targets.</param>
    /// <param name="maxSourceTokens">The most source ids per example, Eos included.</param>
    /// <param name="maxTargetTokens">The most target ids per example with Bos or Eos added (the text gets one fewer).</param>
    /// <param name="batchSize">Examples per batch (the last batch of an epoch may be smaller).</param>
    /// <param name="seed">The shuffle seed (see <see cref="Seed"/>).</param>
    public BatchLoader(IReadOnlyList<Example> examples, ISeq2SeqTokenizer tok, int maxSourceTokens, int maxTargetTokens, int batchSize, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentNullException.ThrowIfNull(tok);
        if (maxSourceTokens < 1) throw new ArgumentException($"maxSourceTokens must be at least 1 (room for Eos), got {maxSourceTokens}");
        if (maxTargetTokens < 1) throw new ArgumentException($"maxTargetTokens must be at least 1 (room for Bos/Eos), got {maxTargetTokens}");
        if (batchSize < 1) throw new ArgumentException($"batchSize must be at least 1, got {batchSize}");
        this.batchSize = batchSize;
        this.seed = seed;
        sources = new int[examples.Count][];
        targets = new int[examples.Count][];
        Parallel.For(0, examples.Count, i =>
        {
            sources[i] = tok.EncodeSource(examples[i].Source, maxSourceTokens);
            targets[i] = tok.EncodeTarget(examples[i].Target, maxTargetTokens - 1);
        });
    }

    /// <summary>Number of examples.</summary>
    public int Count => sources.Length;
    /// <summary>Examples per batch.</summary>
    public int BatchSize => batchSize;
    /// <summary>The shuffle seed (a resumed run must use the same one to see the same batches).</summary>
    public ulong Seed => seed;
    /// <summary>Batches in one pass over the examples (the last one may be partial).</summary>
    public int BatchesPerEpoch => (Count + batchSize - 1) / batchSize;

    /// <summary>
    /// Every example once: shuffled, sorted by source length within windows of <see cref="BucketBatches"/> batches,
    /// cut into batches, batch order shuffled. The same (seed, epoch) always gives the same batches.
    /// </summary>
    public IEnumerable<Batch> Epoch(int epoch)
    {
        var rng = new SplitMix64(seed ^ (0x9E3779B97F4A7C15UL * ((ulong)(uint)epoch + 1)));
        var order = Enumerable.Range(0, Count).ToArray();
        rng.Shuffle(order);
        int window = BucketBatches * batchSize;
        var batches = new List<int[]>(BatchesPerEpoch);
        for (int w = 0; w < order.Length; w += window)
        {
            // Stable sort keeps the shuffled order among equal lengths.
            var chunk = order.AsSpan(w, Math.Min(window, order.Length - w)).ToArray()
                .OrderBy(i => sources[i].Length).ThenBy(i => targets[i].Length).ToArray();
            for (int b = 0; b < chunk.Length; b += batchSize) batches.Add(chunk[b..Math.Min(b + batchSize, chunk.Length)]);
        }
        var batchOrder = batches.ToArray();
        rng.Shuffle(batchOrder);
        foreach (var rows in batchOrder) yield return Make(rows);
    }

    /// <summary>Batches of consecutive examples in data order (the last may be smaller); for evaluation.</summary>
    public IEnumerable<Batch> InOrder()
    {
        for (int b = 0; b < Count; b += batchSize)
            yield return Make(Enumerable.Range(b, Math.Min(batchSize, Count - b)).ToArray());
    }

    Batch Make(int[] rows)
    {
        int B = rows.Length;
        int S = rows.Max(i => sources[i].Length);
        int T = rows.Max(i => targets[i].Length) + 1;
        var src = new int[B * S];                  // Pad == 0, so fresh arrays are already padded
        var tin = new int[B * T];
        var tout = new int[B * T];
        var srcLen = new int[B];
        for (int r = 0; r < B; r++)
        {
            var s = sources[rows[r]];
            var y = targets[rows[r]];
            s.CopyTo(src, r * S);
            srcLen[r] = s.Length;
            tin[r * T] = SubwordTokenizer.Bos;
            y.CopyTo(tin, r * T + 1);
            y.CopyTo(tout, r * T);
            tout[r * T + y.Length] = SubwordTokenizer.Eos;
        }
        return new Batch(src, tin, tout, B, S, T, srcLen);
    }

    /// <summary>SplitMix64 (Steele et al. 2014): a fixed, documented generator so shuffles never change with .NET.</summary>
    struct SplitMix64(ulong state)
    {
        ulong s = state;

        ulong Next()
        {
            ulong z = s += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Fisher–Yates with an unbiased bounded draw (Lemire's multiply-shift with rejection).</summary>
        public void Shuffle<T>(T[] a)
        {
            for (int i = a.Length - 1; i > 0; i--)
            {
                int j = Below((ulong)i + 1);
                (a[i], a[j]) = (a[j], a[i]);
            }
        }

        int Below(ulong n)
        {
            ulong threshold = (0UL - n) % n;
            while (true)
            {
                UInt128 m = (UInt128)Next() * n;
                if ((ulong)m >= threshold) return (int)(ulong)(m >> 64);
            }
        }
    }
}

/// <summary>Finds the shipped data files from wherever the program or tests run.</summary>
public static class DataPaths
{
    /// <summary>
    /// ./data/&lt;file&gt;, then data/&lt;file&gt; in each parent of the working directory and of the program's
    /// directory, then shared/data/&lt;file&gt; beside each of those (the ../shared/data of a checkout).
    /// </summary>
    public static string Find(string fileName)
    {
        ArgumentException.ThrowIfNullOrEmpty(fileName);
        var roots = new List<string>();
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (!roots.Contains(d.FullName)) roots.Add(d.FullName);
        var tried = new List<string>();
        foreach (var sub in new[] { "data", Path.Combine("shared", "data") })
            foreach (var root in roots)
            {
                string p = Path.Combine(root, sub, fileName);
                if (File.Exists(p)) return p;
                tried.Add(p);
            }
        throw new FileNotFoundException($"data file '{fileName}' not found; looked in:\n  {string.Join("\n  ", tried)}", fileName);
    }
}
