using System.Numerics;

namespace Nanolora.Transformer;

/// <summary>
/// Finds NaN and ±Inf in weights on their way to or from disk, so a diverged model is never written and a corrupt one
/// is refused at load with the tensor's name (instead of failing later as empty predictions or a blamed learning rate).
/// </summary>
public static class NonFinite
{
    /// <summary>Index of the first NaN or ±Inf, or −1. Vectorized: x − x is 0 for every finite x and NaN otherwise.</summary>
    public static int FirstIndex(ReadOnlySpan<float> data)
    {
        int i = 0;
        if (Vector.IsHardwareAccelerated && data.Length >= Vector<float>.Count)
        {
            var values = System.Runtime.InteropServices.MemoryMarshal.Cast<float, Vector<float>>(data);
            for (int v = 0; v < values.Length; v++)
            {
                var x = values[v];
                if (!Vector.EqualsAll(x - x, Vector<float>.Zero))
                {
                    for (int k = v * Vector<float>.Count; ; k++)
                        if (!float.IsFinite(data[k])) return k;
                }
            }
            i = values.Length * Vector<float>.Count;
        }
        for (; i < data.Length; i++)
            if (!float.IsFinite(data[i])) return i;
        return -1;
    }

    /// <summary>NaN, +Inf or -Inf: the same words in every culture.</summary>
    public static string Describe(float x) => float.IsNaN(x) ? "NaN" : x > 0 ? "+Inf" : "-Inf";

    /// <summary>Throws naming the file, the tensor, the index and the value when <paramref name="data"/> is not all finite.</summary>
    public static void Require(string file, string tensor, ReadOnlySpan<float> data, string doing)
    {
        int bad = FirstIndex(data);
        if (bad >= 0)
            throw new InvalidDataException($"{doing} '{file}': tensor '{tensor}' holds {Describe(data[bad])} at element {bad}; its values are not finite (a diverged or corrupted model).");
    }
}
