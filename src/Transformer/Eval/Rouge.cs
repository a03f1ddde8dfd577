namespace Nanolora.Transformer;

/// <summary>One ROUGE variant's precision, recall and F1, each in [0, 1].</summary>
public readonly record struct RougeScore(double Precision, double Recall, double F)
{
    /// <summary>F1 as rouge_score computes it: 2PR/(P+R), 0 when both are 0.</summary>
    public static RougeScore From(double precision, double recall) =>
        new(precision, recall, precision + recall > 0 ? 2 * precision * recall / (precision + recall) : 0);
}

/// <summary>The four ROUGE variants of one prediction, or their means over a set.</summary>
public sealed record RougeResult(RougeScore Rouge1, RougeScore Rouge2, RougeScore RougeL, RougeScore RougeLsum);

/// <summary>
/// ROUGE-1/2/L/Lsum as Google's rouge_score (RougeScorer(["rouge1","rouge2","rougeL","rougeLsum"])) computes them:
/// lower-case, every run of characters outside [a-z0-9] becomes a separator, optional Porter stemming of tokens longer
/// than 3 characters. Precision is relative to the prediction, recall to the reference. ROUGE-Lsum splits both texts
/// into sentences on '\n' and scores the summary-level union LCS, counting each token at most as often as it occurs.
/// </summary>
public static class Rouge
{
    /// <summary>The tokens ROUGE compares: lower-cased [a-z0-9] runs, Porter-stemmed when longer than 3 characters if <paramref name="useStemmer"/>.</summary>
    public static IReadOnlyList<string> Tokenize(string text, bool useStemmer = false) => TokenArray(text, useStemmer);

    /// <summary>ROUGE-1, -2, -L and -Lsum of one prediction against one reference.</summary>
    public static RougeResult Score(string prediction, string reference, bool useStemmer = false)
    {
        ArgumentNullException.ThrowIfNull(prediction);
        ArgumentNullException.ThrowIfNull(reference);
        var pred = TokenArray(prediction, useStemmer);
        var refr = TokenArray(reference, useStemmer);
        return new RougeResult(NGram(pred, refr, 1), NGram(pred, refr, 2), Lcs(pred, refr),
            SummaryLcs(Sentences(prediction, useStemmer), Sentences(reference, useStemmer)));
    }

    /// <summary>Mean over examples of each per-example precision, recall and F (rouge_score's aggregate mid point).</summary>
    public static RougeResult Average(IReadOnlyList<string> predictions, IReadOnlyList<string> references, bool useStemmer = false)
    {
        ArgumentNullException.ThrowIfNull(predictions);
        ArgumentNullException.ThrowIfNull(references);
        if (predictions.Count != references.Count)
            throw new ArgumentException($"predictions and references differ in count: expected {references.Count} predictions, got {predictions.Count}");
        if (predictions.Count == 0) throw new ArgumentException("cannot average ROUGE over zero examples");
        var sums = new double[12];
        for (int i = 0; i < predictions.Count; i++)
        {
            var r = Score(predictions[i], references[i], useStemmer);
            int k = 0;
            foreach (var s in new[] { r.Rouge1, r.Rouge2, r.RougeL, r.RougeLsum })
            {
                sums[k++] += s.Precision;
                sums[k++] += s.Recall;
                sums[k++] += s.F;
            }
        }
        double n = predictions.Count;
        RougeScore At(int j) => new(sums[3 * j] / n, sums[3 * j + 1] / n, sums[3 * j + 2] / n);
        return new RougeResult(At(0), At(1), At(2), At(3));
    }

    static string[] TokenArray(string text, bool useStemmer)
    {
        string lower = text.ToLowerInvariant();
        var tokens = new List<string>();
        int i = 0;
        while (i < lower.Length)
        {
            if (!IsAlnum(lower[i])) { i++; continue; }
            int start = i;
            while (i < lower.Length && IsAlnum(lower[i])) i++;
            string t = lower[start..i];
            if (useStemmer && t.Length > 3) t = PorterStemmer.Stem(t);
            if (t.Length > 0) tokens.Add(t); // rouge_score's final ^[a-z0-9]+$ filter; the stemmer only emits a-z

        }
        return [.. tokens];
    }

    static bool IsAlnum(char c) => c is >= 'a' and <= 'z' or >= '0' and <= '9';

    // rouge_score: text.split("\n") keeping non-empty strings; a line of only punctuation becomes an empty sentence.
    static List<string[]> Sentences(string text, bool useStemmer) =>
        text.Split('\n').Where(s => s.Length > 0).Select(s => TokenArray(s, useStemmer)).ToList();

    /// <summary>Clipped n-gram overlap: each n-gram counts min(count in prediction, count in reference).</summary>
    static RougeScore NGram(string[] pred, string[] refr, int n)
    {
        var refCounts = Counts(refr, n);
        var predCounts = Counts(pred, n);
        long overlap = 0;
        foreach (var (g, c) in refCounts)
            if (predCounts.TryGetValue(g, out int pc)) overlap += Math.Min(c, pc);
        int predTotal = Math.Max(pred.Length - n + 1, 0), refTotal = Math.Max(refr.Length - n + 1, 0);
        return RougeScore.From((double)overlap / Math.Max(predTotal, 1), (double)overlap / Math.Max(refTotal, 1));
    }

    static Dictionary<string, int> Counts(string[] tokens, int n)
    {
        var d = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i + n <= tokens.Length; i++)
        {
            // Tokens are [a-z0-9]+, so a space joins them unambiguously.
            string key = string.Join(' ', tokens, i, n);
            d[key] = d.GetValueOrDefault(key) + 1;
        }
        return d;
    }

    static RougeScore Lcs(string[] pred, string[] refr)
    {
        if (pred.Length == 0 || refr.Length == 0) return default;
        int l = LcsLength(refr, pred);
        return RougeScore.From((double)l / pred.Length, (double)l / refr.Length);
    }

    /// <summary>
    /// Above this many cells (16 MB of ints) the LCS is found in linear memory (Hirschberg) instead of from the full
    /// table; below it the table's backtracking reproduces rouge_score's choice among equally long LCSs exactly.
    /// </summary>
    public const long MaxTableCells = 1 << 22;

    /// <summary>The LCS length in two rows over the shorter text: O(min(|a|, |b|)) memory, so a 100k-token line cannot exhaust it.</summary>
    static int LcsLength(string[] a, string[] b)
    {
        if (b.Length > a.Length) (a, b) = (b, a);
        var (x, y) = Ids(a, b);
        var row = new int[y.Length + 1];
        LcsRow(x, 0, x.Length, y, 0, y.Length, reversed: false, row);
        return row[y.Length];
    }

    /// <summary>Tokens as small integers (shared between both texts), so the quadratic loops compare ints, not strings.</summary>
    static (int[], int[]) Ids(string[] a, string[] b)
    {
        var ids = new Dictionary<string, int>(StringComparer.Ordinal);
        int[] Map(string[] t) => t.Select(w => ids.TryGetValue(w, out int id) ? id : ids[w] = ids.Count).ToArray();
        return (Map(a), Map(b));
    }

    /// <summary>
    /// Last row of the LCS table of a[aLo, aHi) against b[bLo, bHi) (or of both reversed) into <paramref name="row"/>,
    /// whose entry j is the LCS length with the first (or last) j tokens of the b range.
    /// </summary>
    static void LcsRow(int[] a, int aLo, int aHi, int[] b, int bLo, int bHi, bool reversed, int[] row)
    {
        int n = bHi - bLo;
        Array.Clear(row, 0, n + 1);
        for (int i = 0; i < aHi - aLo; i++)
        {
            int token = reversed ? a[aHi - 1 - i] : a[aLo + i];
            int diagonal = 0; // row[j - 1] of the previous row
            for (int j = 1; j <= n; j++)
            {
                int up = row[j];
                int other = reversed ? b[bHi - j] : b[bLo + j - 1];
                row[j] = token == other ? diagonal + 1 : Math.Max(up, row[j - 1]);
                diagonal = up;
            }
        }
    }

    static int[,] LcsTable(string[] a, string[] b)
    {
        var t = new int[a.Length + 1, b.Length + 1];
        for (int i = 1; i <= a.Length; i++)
            for (int j = 1; j <= b.Length; j++)
                t[i, j] = a[i - 1] == b[j - 1] ? t[i - 1, j - 1] + 1 : Math.Max(t[i - 1, j], t[i, j - 1]);
        return t;
    }

    /// <summary>
    /// Indices into <paramref name="refr"/> of one LCS with <paramref name="cand"/>, ascending: from the table with
    /// rouge_score's backtracking tie-break when it has at most <paramref name="maxTableCells"/> cells, else by
    /// Hirschberg's divide and conquer in linear memory (an LCS of the same length; ties may fall elsewhere).
    /// </summary>
    public static IReadOnlyList<int> LcsIndices(string[] refr, string[] cand, long maxTableCells = MaxTableCells)
    {
        var result = new List<int>();
        if ((long)(refr.Length + 1) * (cand.Length + 1) <= maxTableCells)
        {
            var t = LcsTable(refr, cand);
            int i = refr.Length, j = cand.Length;
            while (i > 0 && j > 0)
            {
                if (refr[i - 1] == cand[j - 1]) { result.Add(i - 1); i--; j--; }
                else if (t[i, j - 1] > t[i - 1, j]) j--;
                else i--;
            }
            result.Reverse();
            return result;
        }
        var (a, b) = Ids(refr, cand);
        Hirschberg(a, 0, a.Length, b, 0, b.Length, result, new int[b.Length + 1], new int[b.Length + 1]);
        return result;
    }

    /// <summary>Splits a at its middle and b where the forward and backward LCS rows sum highest, then recurses on both halves.</summary>
    static void Hirschberg(int[] a, int aLo, int aHi, int[] b, int bLo, int bHi, List<int> result, int[] forward, int[] backward)
    {
        if (aHi <= aLo || bHi <= bLo) return;
        if (aHi - aLo == 1)
        {
            if (Array.IndexOf(b, a[aLo], bLo, bHi - bLo) >= 0) result.Add(aLo);
            return;
        }
        int mid = (aLo + aHi) / 2, n = bHi - bLo;
        LcsRow(a, aLo, mid, b, bLo, bHi, reversed: false, forward);
        LcsRow(a, mid, aHi, b, bLo, bHi, reversed: true, backward);
        int split = 0, best = -1;
        for (int j = 0; j <= n; j++)
            if (forward[j] + backward[n - j] > best) { best = forward[j] + backward[n - j]; split = j; }
        Hirschberg(a, aLo, mid, b, bLo, bLo + split, result, forward, backward);
        Hirschberg(a, mid, aHi, b, bLo + split, bHi, result, forward, backward);
    }

    /// <summary>Summary-level LCS (ROUGE paper §3.2) with ROUGE-1.5.5's guard against counting a token twice.</summary>
    static RougeScore SummaryLcs(List<string[]> pred, List<string[]> refr)
    {
        int m = refr.Sum(s => s.Length), n = pred.Sum(s => s.Length);
        if (m == 0 || n == 0) return default;
        var refLeft = new Dictionary<string, int>(StringComparer.Ordinal);
        var predLeft = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var t in refr.SelectMany(s => s)) refLeft[t] = refLeft.GetValueOrDefault(t) + 1;
        foreach (var t in pred.SelectMany(s => s)) predLeft[t] = predLeft.GetValueOrDefault(t) + 1;

        int hits = 0;
        foreach (var r in refr)
        {
            var union = new SortedSet<int>();
            foreach (var c in pred) union.UnionWith(LcsIndices(r, c));
            foreach (int idx in union)
            {
                string tok = r[idx];
                if (predLeft.GetValueOrDefault(tok) > 0 && refLeft.GetValueOrDefault(tok) > 0)
                {
                    hits++;
                    predLeft[tok]--;
                    refLeft[tok]--;
                }
            }
        }
        return RougeScore.From((double)hits / n, (double)hits / m);
    }
}
