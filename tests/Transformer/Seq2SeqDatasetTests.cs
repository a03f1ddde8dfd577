using System.IO.Compression;
using System.Text;
using Nanolora.Transformer;
using static Nanolora.Transformer.SubwordTokenizer;

namespace Nanolora.Tests.Transformer;

public sealed class Seq2SeqDatasetTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("nanolora-data-").FullName;

    public void Dispose() => Directory.Delete(dir, recursive: true);

    static string Debian => DataPaths.Find("debian-descriptions.jsonl.gz");

    [Fact]
    public void ShippedDebianFileHasTheDocumentedSplitCounts()
    {
        var test = JsonlDataset.Load(Debian, "test");
        Assert.Equal(3240, test.Count);
        Assert.Equal(3026, JsonlDataset.Load(Debian, "validation").Count);
        Assert.All(test, e => Assert.False(string.IsNullOrWhiteSpace(e.Source) || string.IsNullOrWhiteSpace(e.Target)));
        Assert.Equal(test.Take(10), JsonlDataset.Load(Debian, "test", limit: 10));
    }

    [Fact]
    public void DataPathsFindsShippedFilesAndListsWhereItLooked()
    {
        Assert.True(File.Exists(Debian));
        Assert.EndsWith(Path.Combine("data", "debian-descriptions.jsonl.gz"), Debian);
        var e = Assert.Throws<FileNotFoundException>(() => DataPaths.Find("no-such-file.jsonl.gz"));
        Assert.Contains("looked in", e.Message);
        Assert.Contains(Path.Combine("data", "no-such-file.jsonl.gz"), e.Message);
        Assert.Contains(Path.Combine("shared", "data", "no-such-file.jsonl.gz"), e.Message);
    }

    string WriteJsonl(string name, IEnumerable<string> lines, bool gzip = true)
    {
        string p = Path.Combine(dir, name);
        using var fs = File.Create(p);
        using Stream s = gzip ? new GZipStream(fs, CompressionLevel.Fastest) : fs;
        s.Write(Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"));
        return p;
    }

    static string Line(string source, string target, string split) =>
        $$"""{"source": "{{source}}", "target": "{{target}}", "split": "{{split}}", "extra": 1}""";

    [Theory]
    [InlineData("""{"source": "a", "target": "b", "split": """, "invalid JSON")]
    [InlineData("""{"source": "a", "split": "train"}""", "missing string field \"target\"")]
    [InlineData("""{"source": 3, "target": "b", "split": "train"}""", "missing string field \"source\"")]
    [InlineData("""["a", "b"]""", "expected a JSON object")]
    public void MalformedLineNamesItsLineNumber(string bad, string expect)
    {
        var p = WriteJsonl("bad.jsonl.gz", [Line("x", "y", "train"), "", bad, Line("z", "w", "train")]);
        var e = Assert.Throws<InvalidDataException>(() => JsonlDataset.Load(p, "train"));
        Assert.Contains("line 3", e.Message);
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void PlainJsonlAndBlankLinesAreAccepted()
    {
        var p = WriteJsonl("plain.jsonl", [Line("s1", "t1", "train"), "   ", Line("s2", "t2", "test"), Line("s3", "t3", "train")], gzip: false);
        Assert.Equal([new Example("s1", "t1"), new Example("s3", "t3")], JsonlDataset.Load(p, "train"));
        Assert.Equal([new Example("s2", "t2")], JsonlDataset.Load(p, "test"));
        Assert.Empty(JsonlDataset.Load(p, "train", limit: 0));
        var e = Assert.Throws<ArgumentException>(() => JsonlDataset.Load(p, "dev"));
        Assert.Contains("no split 'dev' (it has: test, train)", e.Message);
    }

    /// <summary>Examples whose target is "item k" so a batch row can be traced back to its example.</summary>
    static (List<Example> Examples, SubwordTokenizer Tok) Numbered(int n)
    {
        var rng = new Random(7);
        string[] words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"];
        var xs = Enumerable.Range(0, n)
            .Select(k => new Example(string.Join(" ", Enumerable.Range(0, 1 + rng.Next(12)).Select(_ => words[rng.Next(words.Length)])), $"item {k}"))
            .ToList();
        return (xs, Build(xs.SelectMany(x => new[] { x.Source, x.Target }), maxVocab: 1000));
    }

    static int ExampleOf(Batch b, int row, SubwordTokenizer tok) =>
        int.Parse(tok.Decode(b.TargetOutput.AsSpan(row * b.TargetLength, b.TargetLength).ToArray()).Split(' ')[1]);

    [Fact]
    public void BatchesArePaddedWithBosAndEosInPlace()
    {
        var xs = new List<Example> { new("one two three four five", "short"), new("one", "a longer target text"), new("two three", "") };
        var tok = Build(xs.SelectMany(x => new[] { x.Source, x.Target }), maxVocab: 100);
        var loader = new BatchLoader(xs, tok, maxSourceTokens: 64, maxTargetTokens: 64, batchSize: 3, seed: 1);
        var b = Assert.Single(loader.InOrder());
        Assert.Equal(3, b.BatchSize);

        var src = xs.Select(x => tok.Encode(x.Source, addEos: true)).ToArray();
        var tgt = xs.Select(x => tok.Encode(x.Target)).ToArray();
        Assert.Equal(src.Max(s => s.Length), b.SourceLength);
        Assert.Equal(tgt.Max(t => t.Length) + 1, b.TargetLength);
        Assert.Equal(3 * b.SourceLength, b.SourceIds.Length);
        Assert.Equal(3 * b.TargetLength, b.TargetInput.Length);
        Assert.Equal(3 * b.TargetLength, b.TargetOutput.Length);
        for (int r = 0; r < 3; r++)
        {
            Assert.Equal(src[r].Length, b.SourceLengths[r]);
            int[] expectSrc = [.. src[r], .. Enumerable.Repeat(Pad, b.SourceLength - src[r].Length)];
            Assert.Equal(expectSrc, b.SourceIds[(r * b.SourceLength)..((r + 1) * b.SourceLength)]);
            Assert.Equal(Eos, b.SourceIds[r * b.SourceLength + src[r].Length - 1]);
            var padT = Enumerable.Repeat(Pad, b.TargetLength - tgt[r].Length - 1);
            Assert.Equal([Bos, .. tgt[r], .. padT], b.TargetInput[(r * b.TargetLength)..((r + 1) * b.TargetLength)]);
            Assert.Equal([.. tgt[r], Eos, .. padT], b.TargetOutput[(r * b.TargetLength)..((r + 1) * b.TargetLength)]);
        }
        // The empty target is [Bos] → [Eos].
        Assert.Equal(Bos, b.TargetInput[2 * b.TargetLength]);
        Assert.Equal(Eos, b.TargetOutput[2 * b.TargetLength]);
    }

    [Fact]
    public void TruncationRespectsTokenLimits()
    {
        var xs = JsonlDataset.Load(Debian, "test", limit: 40);
        var tok = Build(xs.SelectMany(x => new[] { x.Source, x.Target }), maxVocab: 5000);
        var loader = new BatchLoader(xs, tok, maxSourceTokens: 12, maxTargetTokens: 5, batchSize: 8, seed: 3);
        foreach (var b in loader.InOrder())
        {
            Assert.InRange(b.SourceLength, 1, 12);
            Assert.InRange(b.TargetLength, 1, 5);
            for (int r = 0; r < b.BatchSize; r++)
                Assert.Equal(Eos, b.SourceIds[r * b.SourceLength + b.SourceLengths[r] - 1]);
        }
        Assert.Equal(40, loader.InOrder().Sum(b => b.BatchSize));
    }

    [Fact]
    public void InOrderFollowsDataOrder()
    {
        var (xs, tok) = Numbered(23);
        var loader = new BatchLoader(xs, tok, 32, 8, batchSize: 5, seed: 9);
        var rows = loader.InOrder().SelectMany(b => Enumerable.Range(0, b.BatchSize).Select(r => ExampleOf(b, r, tok))).ToArray();
        Assert.Equal(Enumerable.Range(0, 23), rows);
        Assert.Equal([5, 5, 5, 5, 3], loader.InOrder().Select(b => b.BatchSize));
    }

    [Fact]
    public void EpochIsDeterministicCoversEveryExampleAndChangesAcrossEpochs()
    {
        var (xs, tok) = Numbered(403);
        var loader = new BatchLoader(xs, tok, 32, 8, batchSize: 4, seed: 42);
        int[][] Rows(BatchLoader l, int epoch) =>
            l.Epoch(epoch).Select(b => Enumerable.Range(0, b.BatchSize).Select(r => ExampleOf(b, r, tok)).ToArray()).ToArray();

        var e0 = Rows(loader, 0);
        Assert.Equal(loader.BatchesPerEpoch, e0.Length);
        Assert.Equal(Enumerable.Range(0, 403), e0.SelectMany(r => r).Order());
        var again = new BatchLoader(xs, tok, 32, 8, batchSize: 4, seed: 42);
        Assert.Equal(e0, Rows(again, 0));                                  // same (seed, epoch): same batches
        Assert.NotEqual(e0, Rows(loader, 1));                              // next epoch: different
        Assert.NotEqual(e0, Rows(new BatchLoader(xs, tok, 32, 8, 4, seed: 43), 0)); // other seed: different
        Assert.Equal(Enumerable.Range(0, 403), Rows(loader, 1).SelectMany(r => r).Order());

        // Bucketing: windows of 50 x 4 = 200 examples (3 here); within a window, batches are consecutive runs of the
        // length-sorted examples, so their length spread is far below that of randomly formed batches.
        var lens = loader.Epoch(5).Select(b => b.SourceLengths).ToArray();
        int spread = lens.Sum(l => l.Max() - l.Min());
        var shuffledSpread = ShuffledSpread(xs.Select(x => tok.Encode(x.Source, 32, addEos: true).Length).ToArray(), 4);
        Assert.True(spread * 3 < shuffledSpread, $"length bucketing: total within-batch spread {spread} vs {shuffledSpread} unbucketed");
    }

    static int ShuffledSpread(int[] lengths, int batchSize)
    {
        var a = (int[])lengths.Clone();
        new Random(1).Shuffle(a);
        int s = 0;
        for (int i = 0; i < a.Length; i += batchSize)
        {
            var chunk = a[i..Math.Min(i + batchSize, a.Length)];
            s += chunk.Max() - chunk.Min();
        }
        return s;
    }

    [Fact]
    public void SingleWindowEpochBatchesAreSortedRuns()
    {
        var (xs, tok) = Numbered(60); // one window: 50 batches x 3 = 150 > 60
        var loader = new BatchLoader(xs, tok, 32, 8, batchSize: 3, seed: 5);
        var batches = loader.Epoch(0).Select(b => b.SourceLengths).OrderBy(l => l.Min()).ThenBy(l => l.Max()).ToArray();
        for (int i = 0; i < batches.Length; i++)
        {
            Assert.True(batches[i].SequenceEqual(batches[i].Order()), $"batch {i} not sorted by source length: [{string.Join(", ", batches[i])}]");
            if (i > 0) Assert.True(batches[i - 1].Max() <= batches[i].Min(), $"batches {i - 1} and {i} interleave");
        }
    }

    [Fact]
    public void ConstructorValidatesArguments()
    {
        var (xs, tok) = Numbered(3);
        Assert.Throws<ArgumentException>(() => new BatchLoader(xs, tok, 0, 8, 2, 1));
        Assert.Throws<ArgumentException>(() => new BatchLoader(xs, tok, 8, 0, 2, 1));
        Assert.Throws<ArgumentException>(() => new BatchLoader(xs, tok, 8, 8, 0, 1));
    }
}
