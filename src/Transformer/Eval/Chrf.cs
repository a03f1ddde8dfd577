namespace Nanolora.Transformer;

/// <summary>
/// chrF's settings, named and defaulted as sacrebleu's <c>CHRF</c>: character n-grams up to 6, no word n-grams,
/// β = 2 (recall weighs β² = 4 times precision), case kept, whitespace removed before the character n-grams, and
/// sacrebleu's "effective order" averaging (orders neither side has are left out) rather than ε smoothing.
/// </summary>
public sealed record ChrfOptions(int CharOrder = 6, int WordOrder = 0, int Beta = 2, bool Lowercase = false, bool Whitespace = false, bool EpsSmoothing = false)
{
    /// <summary>sacrebleu's defaults: chrF2.</summary>
    public static ChrfOptions Default { get; } = new();

    /// <summary>chrF++ (Popović 2017): sacrebleu's <c>CHRF(word_order=2)</c>.</summary>
    public static ChrfOptions PlusPlus { get; } = new(WordOrder: 2);

    /// <summary>sacrebleu's name for the variant: chrF2, chrF2++.</summary>
    public string Name => $"chrF{Beta}" + new string('+', WordOrder);
}

/// <summary>
/// chrF (Popović 2015) and chrF++ exactly as sacrebleu 2.x computes them, on its 0–100 scale. Per segment and per
/// order it counts hypothesis n-grams, reference n-grams and their clipped matches; a corpus score is the F-score
/// of those counts summed over segments (not a mean of segment scores). With several references a segment keeps
/// the statistics of the reference it scores best against.
/// </summary>
public static class Chrf
{
    // string.punctuation: what chrF++ splits off the start or end of a word.
    const string Punctuation = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

    /// <summary>Corpus chrF of hypotheses against one reference each.</summary>
    public static double Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<string> references, ChrfOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(references);
        return Corpus(hypotheses, [references.Select(r => (string?)r).ToList()], options);
    }

    /// <summary>
    /// Corpus chrF with reference streams as sacrebleu takes them: <c>references[k][i]</c> is the k-th reference of
    /// segment i; a null entry means segment i has no k-th reference.
    /// </summary>
    public static double Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string?>> references, ChrfOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hypotheses);
        if (hypotheses.Count == 0) throw new ArgumentException("chrF needs at least one hypothesis.");
        var o = options ?? ChrfOptions.Default;
        var totals = new long[3 * (o.CharOrder + o.WordOrder)];
        for (int i = 0; i < hypotheses.Count; i++)
        {
            var stats = SegmentStatistics(hypotheses[i], ReferenceStreams.ForSegment(references, hypotheses.Count, i), o);
            for (int k = 0; k < totals.Length; k++) totals[k] += stats[k];
        }
        return FScore(totals, o);
    }

    /// <summary>chrF of one hypothesis against its references (sacrebleu's <c>sentence_chrf</c>).</summary>
    public static double Sentence(string hypothesis, IReadOnlyList<string> references, ChrfOptions? options = null)
    {
        var o = options ?? ChrfOptions.Default;
        return FScore(SegmentStatistics(hypothesis, references, o), o);
    }

    /// <summary>
    /// [hyp, ref, match] counts for each order (character orders first, then word orders) against the reference
    /// whose F-score is highest (the first on ties).
    /// </summary>
    internal static long[] SegmentStatistics(string hypothesis, IReadOnlyList<string> references, ChrfOptions o)
    {
        ArgumentNullException.ThrowIfNull(hypothesis);
        if (references.Count == 0) throw new ArgumentException("chrF: a segment needs at least one reference.");
        var hyp = NGrams(o.Lowercase ? hypothesis.ToLowerInvariant() : hypothesis, o);
        long[] best = [];
        double bestF = -1;
        foreach (var reference in references)
        {
            var refGrams = NGrams(o.Lowercase ? reference.ToLowerInvariant() : reference, o);
            var stats = new long[3 * hyp.Count];
            for (int n = 0; n < hyp.Count; n++)
            {
                long hypCount = 0, match = 0;
                foreach (var (gram, count) in hyp[n])
                {
                    hypCount += count;
                    if (refGrams[n].TryGetValue(gram, out int r)) match += Math.Min(count, r);
                }
                // sacrebleu counts no hypothesis n-grams for an order the reference has none of.
                stats[3 * n] = refGrams[n].Count > 0 ? hypCount : 0;
                stats[3 * n + 1] = refGrams[n].Values.Sum();
                stats[3 * n + 2] = match;
            }
            double f = FScore(stats, o);
            if (f > bestF) { bestF = f; best = stats; }
        }
        return best;
    }

    /// <summary>The F-score (0–100) of summed [hyp, ref, match] statistics.</summary>
    internal static double FScore(IReadOnlyList<long> stats, ChrfOptions o)
    {
        const double eps = 1e-16;
        double factor = o.Beta * o.Beta;
        int orders = o.CharOrder + o.WordOrder;
        double epsScore = 0, precisionSum = 0, recallSum = 0;
        int effectiveOrder = 0;
        for (int n = 0; n < orders; n++)
        {
            long hyp = stats[3 * n], reference = stats[3 * n + 1], match = stats[3 * n + 2];
            double precision = hyp > 0 ? (double)match / hyp : eps;
            double recall = reference > 0 ? (double)match / reference : eps;
            double denominator = factor * precision + recall;
            epsScore += denominator > 0 ? (1 + factor) * precision * recall / denominator : eps;
            // Effective order: an order only counts when both sides have n-grams of it.
            if (hyp > 0 && reference > 0)
            {
                precisionSum += precision;
                recallSum += recall;
                effectiveOrder++;
            }
        }
        if (o.EpsSmoothing) return 100 * epsScore / orders;
        if (effectiveOrder == 0) return 0;
        double p = precisionSum / effectiveOrder, rc = recallSum / effectiveOrder;
        // F-beta of the averaged precision and recall (not the average of per-order F-scores).
        return p + rc > 0 ? 100 * (1 + factor) * p * rc / (factor * p + rc) : 0;
    }

    /// <summary>n-gram counts per order: characters 1..CharOrder (whitespace removed unless kept), then words 1..WordOrder.</summary>
    static List<Dictionary<string, int>> NGrams(string text, ChrfOptions o)
    {
        var orders = new List<Dictionary<string, int>>(o.CharOrder + o.WordOrder);
        string chars = o.Whitespace ? text : PythonText.RemoveSpaces(text);
        int[] starts = PythonText.CodePointStarts(chars);
        int length = starts.Length - 1;
        for (int n = 1; n <= o.CharOrder; n++)
        {
            var counts = new Dictionary<string, int>();
            for (int i = 0; i + n <= length; i++) Add(counts, chars[starts[i]..starts[i + n]]);
            orders.Add(counts);
        }
        if (o.WordOrder > 0)
        {
            var words = SplitPunctuation(text);
            for (int n = 1; n <= o.WordOrder; n++)
            {
                var counts = new Dictionary<string, int>();
                for (int i = 0; i + n <= words.Count; i++) Add(counts, string.Join(' ', words.GetRange(i, n)));
                orders.Add(counts);
            }
        }
        return orders;

        static void Add(Dictionary<string, int> counts, string gram) => counts[gram] = counts.GetValueOrDefault(gram) + 1;
    }

    /// <summary>
    /// chrF++'s words: whitespace-split, then one punctuation character split off the end, or else off the start
    /// ("(hi)" → "(hi", ")", as sacrebleu does). A one-character word stays whole; the punctuation set is ASCII, so
    /// checking UTF-16 ends is the same as checking code points.
    /// </summary>
    static List<string> SplitPunctuation(string text)
    {
        var words = new List<string>();
        foreach (var w in PythonText.Split(text))
        {
            if (w.Length == 1) words.Add(w);
            else if (Punctuation.Contains(w[^1])) { words.Add(w[..^1]); words.Add(w[^1..]); }
            else if (Punctuation.Contains(w[0])) { words.Add(w[..1]); words.Add(w[1..]); }
            else words.Add(w);
        }
        return words;
    }
}
