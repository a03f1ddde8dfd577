namespace Nanolora.Transformer;

/// <summary>
/// The pretraining objective, T5's span corruption: about 15% of a text's words, in spans of mean length 3,
/// are cut out and each span is replaced by one "…" in the source; the target is the removed spans in order,
/// each introduced by "…". It teaches the encoder to read and the decoder to write text, without ever asking
/// for a summary (the lead of a description is never a target, so the base model is not a lead-k copier).
/// </summary>
public static class Denoising
{
    /// <summary>The marker that replaces each removed span in the source and introduces it in the target.</summary>
    public const string MaskToken = "…";

    /// <summary>Masks about <paramref name="maskRate"/> of the words in spans of mean length <paramref name="meanSpan"/>; the source keeps the rest, the target is the removed spans.</summary>
    /// <param name="text">The text to corrupt (split on whitespace).</param>
    /// <param name="rng">Decides where spans start and how long they are.</param>
    /// <param name="maskRate">Share of the words to remove (at least one word is removed).</param>
    /// <param name="meanSpan">Mean span length in words.</param>
    public static Example Corrupt(string text, Random rng, double maskRate = 0.15, double meanSpan = 3)
    {
        var words = text.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var kept = new List<string>(words.Length);
        var removed = new List<string>();
        int i = 0, budget = Math.Max(1, (int)Math.Round(words.Length * maskRate));
        while (i < words.Length)
        {
            // Start a span with probability rate/mean, so about `rate` of the words end up masked.
            if (budget > 0 && rng.NextDouble() < maskRate / meanSpan)
            {
                int span = 1;
                while (rng.NextDouble() > 1 / meanSpan && span < budget && i + span < words.Length) span++;
                kept.Add(MaskToken);
                removed.Add(MaskToken);
                removed.AddRange(words.Skip(i).Take(span));
                i += span;
                budget -= span;
            }
            else kept.Add(words[i++]);
        }
        return new Example(string.Join(' ', kept), string.Join(' ', removed));
    }

    /// <summary>Corrupted copies of the given texts (a fresh corruption each, from a fixed seed); texts with nothing masked are skipped.</summary>
    public static List<Example> Build(IEnumerable<string> texts, int seed)
    {
        var rng = new Random(seed);
        return texts.Where(t => !string.IsNullOrWhiteSpace(t)).Select(t => Corrupt(t, rng)).Where(e => e.Target.Length > 0).ToList();
    }
}
