using System.Diagnostics;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>One configuration to time: how many inputs it holds, what they are called in errors, and the work for a batch size.</summary>
public sealed record LatencyRun(int Available, string Inputs, Func<int, Action> Prepare);

/// <summary>A method's median latency by batch size, merged (null where it does not merge), and the base measured interleaved with them.</summary>
public sealed record PairedLatency(IReadOnlyDictionary<int, double> Unmerged, IReadOnlyDictionary<int, double>? Merged, IReadOnlyDictionary<int, double> Base)
{
    /// <summary>The three as one log line: "batch 1 12.0 ms, …; merged …; base beside it …".</summary>
    public override string ToString()
    {
        static string Ms(IReadOnlyDictionary<int, double> ms) => string.Join(", ", ms.Select(kv => $"batch {kv.Key} {kv.Value:F1} ms"));
        return $"{Ms(Unmerged)}{(Merged is { } m ? $"; merged {Ms(m)}" : "")}; base beside it {Ms(Base)}";
    }
}

/// <summary>How <see cref="LatencyProbe"/> measures: decode steps per run, batch sizes, timed repeats after a warm-up.</summary>
/// <param name="Steps">Greedy decode steps per run, always all of them (no early stop at end-of-sequence).</param>
/// <param name="Repeats">Timed runs per batch size; the median is reported.</param>
/// <param name="Batches">The batch sizes (results.json's <c>latency_ms_b1</c>, <c>latency_ms_b32</c>).</param>
public sealed record LatencySettings(int Steps = 16, int Repeats = 5, int[]? Batches = null)
{
    /// <summary>The batch sizes measured: 1 and 32 unless given.</summary>
    public int[] BatchSizes => Batches ?? [1, 32];

    /// <summary>The settings as one recipe line (a resumed experiment must measure the same way).</summary>
    public override string ToString() => $"steps{Steps},repeats{Repeats},batches{string.Join('/', BatchSizes)}";
}

/// <summary>
/// Inference latency of a model as it stands (base, a method unmerged or merged): the wall time of encoding a batch of
/// sources and decoding a fixed number of greedy steps with the KV cache, median of several repeats after one warm-up
/// run. Every configuration decodes the same inputs for the same number of steps, so the difference between two of
/// them is the extra work the method puts in the path (LoRA's unmerged B·A, (IA)³'s rescaling, an adapter's
/// bottleneck), not a difference in output length. <see cref="EncoderRun"/> does the same for a sentence encoder
/// (embedding a batch of queries), for the retrieval table.
/// <para>Comparisons are measured <see cref="Interleaved"/>: the configurations take turns repeat by repeat, so load from
/// other processes that drifts over seconds falls on all of them alike instead of on whichever ran in the bad minute.</para>
/// <para>This is a benchmark-style measurement for the experiment's comparison table, not a test: it depends on the
/// machine and on whatever else runs on it, and nothing asserts on it. A row's numbers say which machine and load
/// they came from only through the README's account of the run.</para>
/// </summary>
public static class LatencyProbe
{
    /// <summary>
    /// Median milliseconds per batch for each of <paramref name="settings"/>' batch sizes; the batch of size b is the first
    /// b of <paramref name="sources"/> (token ids, end-of-sequence included), which must hold at least the largest size.
    /// </summary>
    public static IReadOnlyDictionary<int, double> Measure(Seq2SeqTransformer model, IReadOnlyList<int[]> sources, LatencySettings settings) =>
        Medians(Interleaved(settings, [DecoderRun(model, sources, settings)])[0]);

    /// <summary>
    /// The work timed for a seq2seq model: for batch size b, encoding the first b of <paramref name="sources"/> and
    /// <see cref="LatencySettings.Steps"/> cached greedy steps.
    /// </summary>
    public static LatencyRun DecoderRun(Seq2SeqTransformer model, IReadOnlyList<int[]> sources, LatencySettings settings) =>
        new(sources.Count, "sources", batch =>
        {
            var (ids, length) = Pad(sources.Take(batch).ToList());
            return () => Decode(model, ids, batch, length, settings.Steps);
        });

    /// <summary>
    /// The encoder's counterpart: embedding the first b of <paramref name="texts"/> as one batch (tokenizing, the forward
    /// pass, mean pooling and normalization: what a caller of the sentence encoder waits for). <see cref="LatencySettings.Steps"/> does not apply.
    /// </summary>
    public static LatencyRun EncoderRun(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<string> texts, int maxTokens) =>
        new(texts.Count, "texts", batch =>
        {
            var chunk = texts.Take(batch).ToList();
            return () => SentenceEmbedder.Embed(model, tokenizer, chunk, batch, maxLength: maxTokens);
        });

    /// <summary>The median at <paramref name="batch"/> in a measurement, or null when it was not measured.</summary>
    public static double? At(IReadOnlyDictionary<int, double>? ms, int batch) => ms != null && ms.TryGetValue(batch, out var v) ? v : null;

    /// <summary>
    /// Times every run at each batch size: one warm-up of each, then <see cref="LatencySettings.Repeats"/> rounds in which
    /// each run is timed once, the order rotating from round to round (no run always first after another's cache traffic).
    /// Returns each run's samples (ms) by batch size, in the order given.
    /// </summary>
    public static List<Dictionary<int, List<double>>> Interleaved(LatencySettings settings, IReadOnlyList<LatencyRun> runs)
    {
        var samples = runs.Select(_ => new Dictionary<int, List<double>>()).ToList();
        foreach (int batch in settings.BatchSizes)
        {
            var prepared = runs.Select(r => batch <= r.Available ? r.Prepare(batch)
                : throw new ArgumentException($"LatencyProbe: batch {batch} needs {batch} {r.Inputs}, got {r.Available}.")).ToList();
            foreach (var run in prepared) run();
            for (int i = 0; i < runs.Count; i++) samples[i][batch] = new List<double>(settings.Repeats);
            for (int round = 0; round < settings.Repeats; round++)
                for (int k = 0; k < runs.Count; k++)
                {
                    int i = (round + k) % runs.Count;
                    long start = Stopwatch.GetTimestamp();
                    prepared[i]();
                    samples[i][batch].Add(Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
        }
        return samples;
    }

    /// <summary>
    /// A method's latency beside a base: <paramref name="run"/> interleaved with <paramref name="baseRun"/>, then, after
    /// <paramref name="merge"/> (when given; it changes the weights <paramref name="run"/> uses), merged, interleaved with the
    /// base again. The base's samples from both interleavings give the latency each change is computed against.
    /// </summary>
    public static PairedLatency Paired(LatencySettings settings, LatencyRun baseRun, LatencyRun run, Action? merge)
    {
        var unmerged = Interleaved(settings, [baseRun, run]);
        List<Dictionary<int, List<double>>>? merged = null;
        if (merge != null)
        {
            merge();
            merged = Interleaved(settings, [baseRun, run]);
        }
        return new PairedLatency(Medians(unmerged[1]), merged == null ? null : Medians(merged[1]), Medians(unmerged[0], merged?[0]));
    }

    /// <summary>The median per batch size over all the samples of <paramref name="measurements"/> (one run measured in several interleavings pools them).</summary>
    public static IReadOnlyDictionary<int, double> Medians(params Dictionary<int, List<double>>?[] measurements) =>
        measurements.Where(m => m != null).SelectMany(m => m!).GroupBy(kv => kv.Key).ToDictionary(g => g.Key, g => Stats.Median(g.SelectMany(kv => kv.Value).ToArray()));

    /// <summary>The sources as one [B, S] block padded with Pad (0), which the encoder masks.</summary>
    static (int[] Ids, int Length) Pad(IReadOnlyList<int[]> sources)
    {
        int length = sources.Max(s => s.Length);
        var ids = new int[sources.Count * length];
        for (int i = 0; i < sources.Count; i++) sources[i].CopyTo(ids, i * length);
        return (ids, length);
    }

    /// <summary>Encodes [B, S] once and runs <paramref name="steps"/> cached greedy steps, feeding each step's argmax back.</summary>
    static void Decode(Seq2SeqTransformer model, int[] ids, int batch, int length, int steps)
    {
        bool wasTraining = model.Training;
        model.Eval();
        try
        {
            using var noGrad = Graph.NoGrad();
            using var outer = new GraphScope();
            var (memory, mask) = model.Encode(ids, batch, length);
            using var _ = mask;
            var caches = model.NewCaches();
            try
            {
                var last = Enumerable.Repeat(SubwordTokenizer.Bos, batch).ToArray();
                for (int step = 0; step < steps; step++)
                {
                    using var scope = new GraphScope();
                    var hidden = model.Decode(last, batch, 1, memory, mask, caches, positionOffset: step);
                    last = Ops.ArgMaxLastAxis(F.Reshape(model.Logits(hidden), batch, model.Config.VocabSize).Data);
                }
            }
            finally { foreach (var c in caches) c.Dispose(); }
        }
        finally { model.Train(wasTraining); }
    }
}
