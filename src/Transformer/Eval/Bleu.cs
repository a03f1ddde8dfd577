using System.Text.RegularExpressions;

namespace Nanolora.Transformer;

/// <summary>
/// BLEU's settings, named and defaulted as sacrebleu's <c>BLEU</c>: the 13a tokenizer (mteval-v13a.pl's, WMT's),
/// "exp" smoothing (NIST's: the k-th order with no match counts as 1/2^k of a match), n-grams up to 4, case
/// kept, and no effective order (sentence BLEU turns it on, as sacrebleu's <c>sentence_bleu</c> does).
/// </summary>
public sealed record BleuOptions(string Tokenize = "13a", string SmoothMethod = "exp", double? SmoothValue = null, int MaxNgramOrder = 4,
    bool EffectiveOrder = false, bool Lowercase = false)
{
    /// <summary>sacrebleu's defaults.</summary>
    public static BleuOptions Default { get; } = new();

    /// <summary>sacrebleu.sentence_bleu's defaults: as <see cref="Default"/> with effective order.</summary>
    public static BleuOptions Sentence { get; } = new(EffectiveOrder: true);
}

/// <summary>A BLEU score (0–100) and the statistics it came from, as sacrebleu's BLEUScore.</summary>
public sealed record BleuScore(double Score, IReadOnlyList<double> Counts, IReadOnlyList<double> Totals, IReadOnlyList<double> Precisions,
    double BrevityPenalty, long SysLen, long RefLen);

/// <summary>
/// Corpus and sentence BLEU (Papineni et al. 2002) exactly as sacrebleu 2.x computes them. Each segment is
/// tokenized, its n-grams are clipped by the largest count any of its references has, and the reference length is
/// the one closest to the hypothesis (the shorter on ties). A corpus score sums those counts over segments, then
/// takes the geometric mean of the n-gram precisions times the brevity penalty.
/// </summary>
public static class Bleu
{
    static readonly string[] Tokenizers = ["13a", "none"];
    static readonly string[] SmoothMethods = ["none", "floor", "add-k", "exp"];

    /// <summary>Corpus BLEU of hypotheses against one reference each.</summary>
    public static BleuScore Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<string> references, BleuOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(references);
        return Corpus(hypotheses, [references.Select(r => (string?)r).ToList()], options);
    }

    /// <summary>Corpus BLEU with sacrebleu's reference streams (<c>references[k][i]</c>: segment i's k-th reference, or null).</summary>
    public static BleuScore Corpus(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string?>> references, BleuOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(hypotheses);
        if (hypotheses.Count == 0) throw new ArgumentException("BLEU needs at least one hypothesis.");
        var o = Check(options ?? BleuOptions.Default);
        var sums = new long[2 + 2 * o.MaxNgramOrder];
        for (int i = 0; i < hypotheses.Count; i++)
        {
            var stats = SegmentStatistics(hypotheses[i], ReferenceStreams.ForSegment(references, hypotheses.Count, i), o);
            for (int k = 0; k < sums.Length; k++) sums[k] += stats[k];
        }
        return FromStatistics(sums, o);
    }

    /// <summary>BLEU of one hypothesis against its references; by default with effective order, as sacrebleu.sentence_bleu.</summary>
    public static BleuScore Sentence(string hypothesis, IReadOnlyList<string> references, BleuOptions? options = null)
    {
        var o = Check(options ?? BleuOptions.Sentence);
        return FromStatistics(SegmentStatistics(hypothesis, references, o), o);
    }

    /// <summary>
    /// sacrebleu's <c>BLEU.compute_bleu</c>: the score from matched (<paramref name="correct"/>) and total n-gram
    /// counts per order and the summed hypothesis and reference lengths.
    /// </summary>
    public static BleuScore Compute(IReadOnlyList<double> correct, IReadOnlyList<double> total, long sysLen, long refLen,
        string smoothMethod = "none", double? smoothValue = null, bool effectiveOrder = false, int maxNgramOrder = 4)
    {
        if (!SmoothMethods.Contains(smoothMethod)) throw new ArgumentException($"unknown smoothing '{smoothMethod}'; expected one of {string.Join(", ", SmoothMethods)}");
        double value = smoothValue ?? smoothMethod switch { "floor" => 0.1, "add-k" => 1, _ => 0 };
        var c = correct.ToArray();
        var t = total.ToArray();
        double bp = sysLen < refLen ? (sysLen > 0 ? Math.Exp(1 - (double)refLen / sysLen) : 0) : 1;
        var precisions = new double[maxNgramOrder];
        // No match at any order: 0, whatever the smoothing (sacrebleu #141).
        if (c.All(x => x == 0)) return new BleuScore(0, c, t, precisions, bp, sysLen, refLen);
        double smoothMteval = 1;
        int order = maxNgramOrder;
        for (int n = 1; n <= maxNgramOrder; n++)
        {
            if (smoothMethod == "add-k" && n > 1) { c[n - 1] += value; t[n - 1] += value; }
            if (t[n - 1] == 0) break;   // orders past the hypothesis' length keep precision 0
            if (effectiveOrder) order = n;
            if (c[n - 1] == 0)
            {
                if (smoothMethod == "exp") { smoothMteval *= 2; precisions[n - 1] = 100.0 / (smoothMteval * t[n - 1]); }
                else if (smoothMethod == "floor") precisions[n - 1] = 100.0 * value / t[n - 1];
            }
            else precisions[n - 1] = 100.0 * c[n - 1] / t[n - 1];
        }
        // sacrebleu's my_log: log 0 is floored at -9999999999, so a zero precision drives the score to 0.
        double logSum = 0;
        for (int n = 0; n < order; n++) logSum += precisions[n] == 0 ? -9999999999 : Math.Log(precisions[n]);
        return new BleuScore(bp * Math.Exp(logSum / order), c, t, precisions, bp, sysLen, refLen);
    }

    static BleuScore FromStatistics(long[] s, BleuOptions o)
    {
        int m = o.MaxNgramOrder;
        var correct = s.Skip(2).Take(m).Select(x => (double)x).ToArray();
        var total = s.Skip(2 + m).Take(m).Select(x => (double)x).ToArray();
        return Compute(correct, total, s[0], s[1], o.SmoothMethod, o.SmoothValue, o.EffectiveOrder, m);
    }

    /// <summary>[hyp length, closest reference length, matches per order..., hypothesis n-grams per order...].</summary>
    internal static long[] SegmentStatistics(string hypothesis, IReadOnlyList<string> references, BleuOptions o)
    {
        ArgumentNullException.ThrowIfNull(hypothesis);
        if (references.Count == 0) throw new ArgumentException("BLEU: a segment needs at least one reference.");
        int m = o.MaxNgramOrder;
        Dictionary<string, int>? refGrams = null;
        var refLengths = new List<int>(references.Count);
        foreach (var reference in references)
        {
            var (grams, length) = NGrams(Preprocess(reference, o), m);
            refLengths.Add(length);
            if (refGrams == null) refGrams = grams;
            else foreach (var (g, count) in grams) refGrams[g] = Math.Max(refGrams.GetValueOrDefault(g), count);
        }
        var (hypGrams, hypLength) = NGrams(Preprocess(hypothesis, o), m);
        var stats = new long[2 + 2 * m];
        stats[0] = hypLength;
        stats[1] = ClosestLength(hypLength, refLengths);
        foreach (var (g, count) in hypGrams)
        {
            int n = g.Count(ch => ch == ' ');   // tokens hold no spaces, so an n-gram key has n - 1 of them
            stats[2 + m + n] += count;
            if (refGrams!.TryGetValue(g, out int r)) stats[2 + n] += Math.Min(count, r);
        }
        return stats;
    }

    /// <summary>The reference length closest to the hypothesis', the shorter one on a tie.</summary>
    static int ClosestLength(int hypLength, List<int> refLengths)
    {
        int best = -1, bestDiff = -1;
        foreach (int len in refLengths)
        {
            int diff = Math.Abs(hypLength - len);
            if (bestDiff == -1 || diff < bestDiff || (diff == bestDiff && len < best)) { bestDiff = diff; best = len; }
        }
        return best;
    }

    /// <summary>Counts of the 1..maxOrder-grams of whitespace-separated tokens (keys joined with spaces), and the token count.</summary>
    static (Dictionary<string, int> Grams, int Length) NGrams(string line, int maxOrder)
    {
        var tokens = PythonText.Split(line);
        var grams = new Dictionary<string, int>();
        for (int n = 1; n <= maxOrder; n++)
            for (int i = 0; i + n <= tokens.Count; i++)
            {
                string g = string.Join(' ', tokens.GetRange(i, n));
                grams[g] = grams.GetValueOrDefault(g) + 1;
            }
        return (grams, tokens.Count);
    }

    static string Preprocess(string text, BleuOptions o)
    {
        if (o.Lowercase) text = text.ToLowerInvariant();
        text = PythonText.RStrip(text);
        return o.Tokenize == "13a" ? Tokenize13a(text) : text;
    }

    static BleuOptions Check(BleuOptions o)
    {
        if (!Tokenizers.Contains(o.Tokenize)) throw new ArgumentException($"unknown BLEU tokenizer '{o.Tokenize}'; this port has {string.Join(", ", Tokenizers)}");
        if (!SmoothMethods.Contains(o.SmoothMethod)) throw new ArgumentException($"unknown smoothing '{o.SmoothMethod}'; expected one of {string.Join(", ", SmoothMethods)}");
        if (o.MaxNgramOrder < 1) throw new ArgumentException($"max n-gram order must be at least 1, got {o.MaxNgramOrder}");
        return o;
    }

    // mteval-v13a's tokenization, as sacrebleu's TokenizerRegexp applies it: symbols become tokens; a period or
    // comma splits off unless it sits between digits (3.14, 1,000 stay whole); a dash after a digit splits off.
    static readonly (Regex Pattern, string Replacement)[] Rules =
    [
        (new Regex(@"([\{-\~\[-\` -\&\(-\+\:-\@\/])", RegexOptions.CultureInvariant), " $1 "),
        (new Regex(@"([^0-9])([\.,])", RegexOptions.CultureInvariant), "$1 $2 "),
        (new Regex(@"([\.,])([^0-9])", RegexOptions.CultureInvariant), " $1 $2"),
        (new Regex(@"([0-9])(-)", RegexOptions.CultureInvariant), "$1 $2 "),
    ];

    /// <summary>sacrebleu's "13a" tokenizer: the language-independent clean-up, then the rules above, single-spaced.</summary>
    public static string Tokenize13a(string line)
    {
        line = line.Replace("<skipped>", "").Replace("-\n", "").Replace("\n", " ");
        if (line.Contains('&'))
            line = line.Replace("&quot;", "\"").Replace("&amp;", "&").Replace("&lt;", "<").Replace("&gt;", ">");
        line = $" {line} ";
        foreach (var (pattern, replacement) in Rules) line = pattern.Replace(line, replacement);
        return string.Join(' ', PythonText.Split(line));
    }
}
