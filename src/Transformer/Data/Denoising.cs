namespace Nanolora.Transformer;

/// <summary>
/// The pretraining objective (BART-style text infilling): the source is a text with random word spans
/// removed and replaced by one "…" each; the target is the text's opening words, restored. It teaches the
/// encoder to read and the decoder to write fluent text, without ever seeing a synopsis.
/// </summary>
public static class Denoising
{
    public const string MaskToken = "…";

    public static Example Corrupt(string text, Random rng, float maskRate = 0.3f, double meanSpan = 3, int targetWords = 24)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var kept = new List<string>(words.Length);
        int i = 0, toMask = (int)Math.Round(words.Length * maskRate);
        while (i < words.Length)
        {
            if (toMask > 0 && rng.NextDouble() < maskRate / meanSpan)
            {
                // Span length ~ geometric with the given mean (Poisson in BART; close enough and simpler).
                int span = 1;
                while (rng.NextDouble() > 1 / meanSpan && span < toMask) span++;
                kept.Add(MaskToken);
                i += span;
                toMask -= span;
            }
            else kept.Add(words[i++]);
        }
        return new Example(string.Join(' ', kept), string.Join(' ', words.Take(targetWords)));
    }

    /// <summary>Corrupted copies of the given texts (a fresh corruption each, from a fixed seed).</summary>
    public static List<Example> Build(IEnumerable<string> texts, int seed)
    {
        var rng = new Random(seed);
        return texts.Where(t => !string.IsNullOrWhiteSpace(t)).Select(t => Corrupt(t, rng)).ToList();
    }
}
