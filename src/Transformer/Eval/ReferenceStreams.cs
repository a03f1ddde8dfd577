namespace Nanolora.Transformer;

/// <summary>
/// sacrebleu's layout for several references: a list of streams, stream k holding the k-th reference of every
/// segment, where a missing reference (null) lets segments have different numbers of references.
/// </summary>
internal static class ReferenceStreams
{
    /// <summary>The references of segment <paramref name="i"/>, nulls dropped; checks the streams' lengths once, at segment 0.</summary>
    public static List<string> ForSegment(IReadOnlyList<IReadOnlyList<string?>> streams, int segments, int i)
    {
        ArgumentNullException.ThrowIfNull(streams);
        if (i == 0)
        {
            if (streams.Count == 0) throw new ArgumentException("no reference streams given");
            foreach (var s in streams)
                if (s.Count != segments) throw new ArgumentException($"{segments} hypotheses but a reference stream of {s.Count}: each stream needs one entry per hypothesis.");
        }
        var refs = new List<string>(streams.Count);
        foreach (var s in streams) if (s[i] is string r) refs.Add(r);
        if (refs.Count == 0) throw new ArgumentException($"segment {i} has no reference");
        return refs;
    }
}
