using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// How sure "LoRA reached X % of full fine-tuning's gain" is: a paired bootstrap over the test pairs (Koehn 2004's paired
/// resampling). Each resample draws N pair indices with replacement and recomputes (mean LoRA − mean base) / (mean full −
/// mean base) over the same draws, so what the three rows share (the easy and the hard pairs) moves all three means
/// together, as it does in the point estimate. Scores are per-pair ROUGE-1 F, whose mean is the table's ROUGE-1.
/// </summary>
public static class GainShareInterval
{
    /// <summary>
    /// Full fine-tuning's ROUGE-1 gain below which no share is given: a share of a gain inside the noise of a few hundred
    /// pairs would read as a huge, meaningless percentage (the report's text and the bootstrap both use it).
    /// </summary>
    public const double MinFullGain = 0.005;

    /// <summary>The point estimate and the central <see cref="Level"/> interval of the share (fractions, not percent).</summary>
    public sealed record Interval(double Share, double Low, double High, double Level, int Resamples, int Seed, int Pairs);

    /// <summary>
    /// The share and its bootstrap interval from per-pair scores (same pairs, same order), or null when full fine-tuning
    /// gained too little for a share (see <see cref="ExperimentReport.ShareOfFullGain"/>). Resamples where full gained
    /// nothing count at the low end (a share there is undefined, and leaving them out would narrow the interval).
    /// </summary>
    public static Interval? Compute(IReadOnlyList<double> baseScores, IReadOnlyList<double> full, IReadOnlyList<double> lora,
        int resamples = 2000, int seed = 1, double level = 0.95)
    {
        int n = baseScores.Count;
        if (n == 0 || full.Count != n || lora.Count != n)
            throw new ArgumentException($"Gain-share interval: base, full and LoRA need scores for the same pairs; got {n}, {full.Count} and {lora.Count}.");
        if (resamples < 100) throw new ArgumentException($"Gain-share interval: {resamples} resamples are too few for a {level:P0} interval; expected at least 100.");
        double share = Share(baseScores, full, lora, null);
        if (double.IsNaN(share)) return null;
        var rng = new Random(seed);
        var draw = new int[n];
        var shares = new double[resamples];
        for (int b = 0; b < resamples; b++)
        {
            for (int i = 0; i < n; i++) draw[i] = rng.Next(n);
            double s = Share(baseScores, full, lora, draw);
            shares[b] = double.IsNaN(s) ? double.NegativeInfinity : s;
        }
        Array.Sort(shares);
        double tail = (1 - level) / 2;
        return new Interval(share, Quantile(shares, tail), Quantile(shares, 1 - tail), level, resamples, seed, n);
    }

    /// <summary>
    /// The interval for the experiment's rows from its prediction files (predictions/base.txt, full.txt and
    /// <paramref name="loraFile"/>, with their references), or null when a file is missing or the three were not scored
    /// on the same references (then there is nothing paired to resample).
    /// </summary>
    public static Interval? FromPredictions(string predictionsDirectory, string loraFile)
    {
        var names = new[] { "base", "full", loraFile };
        var predictions = new List<string[]>();
        string[]? references = null;
        foreach (var name in names)
        {
            string p = Path.Combine(predictionsDirectory, name + ".txt"), r = Path.Combine(predictionsDirectory, name + ".references.txt");
            if (!File.Exists(p) || !File.Exists(r)) return null;
            var refs = File.ReadAllLines(r);
            if (references != null && !references.SequenceEqual(refs)) return null;
            references = refs;
            var lines = File.ReadAllLines(p);
            if (lines.Length != refs.Length) return null;
            predictions.Add(lines);
        }
        double[] Scores(string[] lines) => lines.Select((line, i) => Rouge.Score(line, references![i]).Rouge1.F).ToArray();
        return Compute(Scores(predictions[0]), Scores(predictions[1]), Scores(predictions[2]));
    }

    /// <summary>The share over the pairs <paramref name="draw"/> picks (all pairs when null); NaN when full's gain is under <see cref="MinFullGain"/>.</summary>
    static double Share(IReadOnlyList<double> baseScores, IReadOnlyList<double> full, IReadOnlyList<double> lora, int[]? draw)
    {
        int n = draw?.Length ?? baseScores.Count;
        double b = 0, f = 0, l = 0;
        for (int k = 0; k < n; k++)
        {
            int i = draw?[k] ?? k;
            b += baseScores[i]; f += full[i]; l += lora[i];
        }
        double fullGain = (f - b) / n;
        return fullGain < MinFullGain ? double.NaN : (l - b) / n / fullGain;
    }

    /// <summary>The q-quantile of sorted values, linearly interpolated between finite neighbours (an infinite one is returned as is).</summary>
    static double Quantile(double[] sorted, double q)
    {
        double at = q * (sorted.Length - 1);
        int lo = (int)Math.Floor(at), hi = Math.Min(lo + 1, sorted.Length - 1);
        // Only −∞ occurs (a resample without a share), sorted first: an infinite hi means an infinite lo.
        if (at == lo || double.IsInfinity(sorted[lo])) return sorted[lo];
        return sorted[lo] + (at - lo) * (sorted[hi] - sorted[lo]);
    }
}
