using System.Text.RegularExpressions;

namespace Nanolora.Transformer;

/// <summary>
/// PEGASUS's gap-sentence generation (Zhang et al. 2020), the "Ind-Orig" variant with one gap: the sentence that
/// overlaps most with the rest of the text (ROUGE-1 F1 of its words against the others') is replaced by a mask, and the
/// target is that sentence. It asks for the central statement of a text without ever showing a synopsis, which makes
/// it a pretraining objective for summarization. With <c>keep</c>, the sentence stays in the source (PEGASUS's
/// unmasked variant): the model learns to pick out the central statement when it is there, which is what a summary of an
/// unmasked text asks for.
/// </summary>
public static partial class GapSentences
{
    /// <summary>The token that replaces the chosen sentence in the source.</summary>
    public const string MaskToken = "[MASK]";

    // A sentence ends at . ! ? followed by whitespace and an upper-case letter or digit (so "e.g. foo" and "v2.0" stay whole).
    [GeneratedRegex(@"(?<=[.!?])\s+(?=[\p{Lu}\d])")]
    private static partial Regex SentenceBreak();

    [GeneratedRegex(@"[\p{L}\p{N}]+")]
    private static partial Regex Word();

    /// <summary>Splits a text into trimmed, non-empty sentences at . ! ? followed by whitespace and an upper-case letter or digit.</summary>
    public static IReadOnlyList<string> Sentences(string text) =>
        SentenceBreak().Split(text.Trim()).Select(s => s.Trim()).Where(s => s.Length > 0).ToList();

    /// <summary>
    /// The gap example of <paramref name="text"/>, or null when it has fewer than two sentences or the chosen one is
    /// outside <paramref name="minWords"/>..<paramref name="maxWords"/> words.
    /// </summary>
    public static Example? Build(string text, int minWords = 3, int maxWords = 24, bool keep = false)
    {
        var sentences = Sentences(text);
        if (sentences.Count < 2) return null;
        var words = sentences.Select(s => Word().Matches(s.ToLowerInvariant()).Select(m => m.Value).ToList()).ToList();
        int best = -1;
        double bestScore = -1;
        for (int i = 0; i < sentences.Count; i++)
        {
            var rest = words.Where((_, j) => j != i).SelectMany(w => w).ToList();
            double score = UnigramF1(words[i], rest);
            if (score > bestScore) (best, bestScore) = (i, score);   // ties keep the earlier sentence
        }
        if (words[best].Count < minWords || words[best].Count > maxWords) return null;
        var source = string.Join(' ', sentences.Select((s, i) => i == best && !keep ? MaskToken : s));
        return new Example(source, sentences[best]);
    }

    /// <summary>ROUGE-1 F1 of two bags of words (clipped counts).</summary>
    static double UnigramF1(IReadOnlyList<string> a, IReadOnlyList<string> b)
    {
        if (a.Count == 0 || b.Count == 0) return 0;
        var counts = b.GroupBy(w => w).ToDictionary(g => g.Key, g => g.Count());
        int overlap = 0;
        foreach (var g in a.GroupBy(w => w)) overlap += Math.Min(g.Count(), counts.GetValueOrDefault(g.Key));
        if (overlap == 0) return 0;
        double p = (double)overlap / a.Count, r = (double)overlap / b.Count;
        return 2 * p * r / (p + r);
    }
}
