using System.Numerics;
using System.Runtime.InteropServices;

namespace Nanolora.Tensors;

/// <summary>
/// The CPU row loops of LayerNorm/RMSNorm forward, fused: one TensorPrimitives call per step cost five passes
/// and three stores per row; these read the row twice more and write it once.
/// </summary>
internal static class NormRows
{
    /// <summary>Σ (x − mu)², without storing x − mu.</summary>
    public static float CenteredSquares(ReadOnlySpan<float> x, float mu)
    {
        int i = 0, n = x.Length, w = Vector<float>.Count;
        float total = 0f;
        if (Vector.IsHardwareAccelerated && n >= w)
        {
            var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
            var m = new Vector<float>(mu);
            Vector<float> s0 = Vector<float>.Zero, s1 = Vector<float>.Zero;
            int v = 0;
            for (; v + 1 < xv.Length; v += 2)
            {
                var d0 = xv[v] - m; var d1 = xv[v + 1] - m;
                s0 += d0 * d0; s1 += d1 * d1;
            }
            for (; v < xv.Length; v++) { var d = xv[v] - m; s0 += d * d; }
            total = Vector.Sum(s0 + s1);
            i = xv.Length * w;
        }
        for (; i < n; i++) { float d = x[i] - mu; total += d * d; }
        return total;
    }

    /// <summary>y = (x − mu)·rr·gamma (+ beta when <paramref name="beta"/> is not empty).</summary>
    public static void Normalize(ReadOnlySpan<float> x, float mu, float rr, ReadOnlySpan<float> gamma, ReadOnlySpan<float> beta, Span<float> y)
    {
        int i = 0, n = x.Length, w = Vector<float>.Count;
        bool hasBeta = !beta.IsEmpty;
        if (Vector.IsHardwareAccelerated && n >= w)
        {
            var xv = MemoryMarshal.Cast<float, Vector<float>>(x);
            var gv = MemoryMarshal.Cast<float, Vector<float>>(gamma);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(beta);
            var yv = MemoryMarshal.Cast<float, Vector<float>>(y);
            var m = new Vector<float>(mu);
            var r = new Vector<float>(rr);
            for (int v = 0; v < xv.Length; v++)
            {
                var t = (xv[v] - m) * r * gv[v];
                yv[v] = hasBeta ? t + bv[v] : t;
            }
            i = xv.Length * w;
        }
        for (; i < n; i++)
        {
            float t = (x[i] - mu) * rr * gamma[i];
            y[i] = hasBeta ? t + beta[i] : t;
        }
    }

    /// <summary>
    /// dγ += dy·x̂ and dβ += dy (dβ skipped when empty) in one sweep over the L1-resident row, not two.
    /// </summary>
    public static void AccumulateParamGrads(ReadOnlySpan<float> dy, ReadOnlySpan<float> xHat, Span<float> dGamma, Span<float> dBeta)
    {
        int i = 0, n = dy.Length, w = Vector<float>.Count;
        bool hasBeta = !dBeta.IsEmpty;
        if (Vector.IsHardwareAccelerated && n >= w)
        {
            var dv = MemoryMarshal.Cast<float, Vector<float>>(dy);
            var xv = MemoryMarshal.Cast<float, Vector<float>>(xHat);
            var gv = MemoryMarshal.Cast<float, Vector<float>>(dGamma);
            var bv = MemoryMarshal.Cast<float, Vector<float>>(dBeta);
            for (int v = 0; v < dv.Length; v++)
            {
                gv[v] += dv[v] * xv[v];
                if (hasBeta) bv[v] += dv[v];
            }
            i = dv.Length * w;
        }
        for (; i < n; i++)
        {
            dGamma[i] += dy[i] * xHat[i];
            if (hasBeta) dBeta[i] += dy[i];
        }
    }
}
