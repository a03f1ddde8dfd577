using System.Runtime.Intrinsics;
using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

/// <summary>Ops.MatmulSumInto: c = a1·op(b1) + s·a2·op(b2) + beta·c, the fused product of a LoRA layer's forward and dx.</summary>
public class MatmulSumTests
{
    /// <summary>The sum in double; b1 [K1, N] or [N, K1] when tb1, b2 likewise with K2.</summary>
    static double[] Expected(float[] a1, float[] b1, bool tb1, int k1, float[] a2, float[] b2, bool tb2, int k2, int m, int n,
        double scale, float[]? c0, double beta)
    {
        var y = new double[m * n];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double first = 0, second = 0;
                for (int p = 0; p < k1; p++) first += (double)a1[i * k1 + p] * b1[tb1 ? j * k1 + p : p * n + j];
                for (int p = 0; p < k2; p++) second += (double)a2[i * k2 + p] * b2[tb2 ? j * k2 + p : p * n + j];
                y[i * n + j] = first + scale * second + (c0 == null ? 0 : beta * c0[i * n + j]);
            }
        return y;
    }

    static int[] Stored(int k, int n, bool transposed) => transposed ? [n, k] : [k, n];

    public static IEnumerable<object[]> Grid() =>
        from d in Devices()
        // A LoRA-like shape, one whose M is too small for the packed path (the two products run one after the other),
        // and one with several row blocks, column chunks and edge panels.
        from s in new[] { (37, 45, 70, 5), (2, 40, 33, 8), (130, 75, 129, 16) }
        from tb1 in new[] { false, true } from tb2 in new[] { false, true }
        select new object[] { d[0], s.Item1, s.Item2, s.Item3, s.Item4, tb1, tb2 };

    [Theory, MemberData(nameof(Grid))]
    public void MatchesTheTwoProductsInDouble(string device, int m, int n, int k1, int k2, bool tb1, bool tb2)
    {
        var d = Dev(device);
        var a1d = Random(m * k1, 61); var b1d = Random(k1 * n, 62); var a2d = Random(m * k2, 63); var b2d = Random(k2 * n, 64);
        var c0 = Random(m * n, 65);
        using var a1 = Tensor.FromArray(a1d, [m, k1], d);
        using var b1 = Tensor.FromArray(b1d, Stored(k1, n, tb1), d);
        using var a2 = Tensor.FromArray(a2d, [m, k2], d);
        using var b2 = Tensor.FromArray(b2d, Stored(k2, n, tb2), d);
        foreach (var (scale, beta) in new[] { (1f, 0f), (2.5f, 1f), (-0.5f, 0.75f) })
        {
            // beta 0 must not read c: start from NaN there.
            using var c = Tensor.FromArray(beta == 0 ? Enumerable.Repeat(float.NaN, m * n).ToArray() : c0, [m, n], d);
            Ops.MatmulSumInto(c, a1, b1, tb1, a2, b2, tb2, scale, beta);
            Close(Expected(a1d, b1d, tb1, k1, a2d, b2d, tb2, k2, m, n, scale, c0, beta), c.ToArray(), 1e-4, 1e-4,
                $"{m}x{n} K1 {k1} K2 {k2} tb1={tb1} tb2={tb2} scale={scale} beta={beta} on {device}");
        }
    }

    // The term's steps straddle a KC block boundary (its A2 columns split over two packed panels), with either
    // micro-kernel whatever this machine's SIMD width, and a 16-bit b1 widened while packed.
    [Theory]
    [InlineData(false, false)] [InlineData(true, false)] [InlineData(false, true)] [InlineData(true, true)]
    public void TheTermMayStraddleAPackedBlock(bool avx2, bool bf16)
    {
        int m = 29, n = 40, k1 = MatmulCpu.KC - 3, k2 = 8;
        var a1d = Random(m * k1, 71); var b1d = Random(n * k1, 72); var a2d = Random(m * k2, 73); var b2d = Random(n * k2, 74);
        var b1Used = bf16 ? b1d.Select(v => BFloat16.Widen(BFloat16.Round(v))).ToArray() : b1d;
        var expected = Expected(a1d, b1Used, true, k1, a2d, b2d, true, k2, m, n, 1.5, null, 0);
        if (!avx2 && !bf16)
        {
            // The public path on this machine's kernel, and the kernel chosen explicitly below.
            using var a1 = Tensor.FromArray(a1d, [m, k1]); using var b1 = Tensor.FromArray(b1d, [n, k1]);
            using var a2 = Tensor.FromArray(a2d, [m, k2]); using var b2 = Tensor.FromArray(b2d, [n, k2]);
            using var c = Tensor.Empty([m, n]);
            Ops.MatmulSumInto(c, a1, b1, true, a2, b2, true, 1.5f);
            Close(expected, c.ToArray(), 1e-4, 1e-4, "Ops path");
        }
        if (bf16)
        {
            using var a1 = Tensor.FromArray(a1d, [m, k1]); using var b32 = Tensor.FromArray(b1d, [n, k1]); using var b1 = b32.ToBFloat16();
            using var a2 = Tensor.FromArray(a2d, [m, k2]); using var b2 = Tensor.FromArray(b2d, [n, k2]);
            using var c = Tensor.Empty([m, n]);
            Ops.MatmulSumInto(c, a1, b1, true, a2, b2, true, 1.5f);
            Close(expected, c.ToArray(), 1e-4, 1e-4, "bfloat16 b1");
            return;
        }
        var pa1 = Pinned(a1d); var pb1 = Pinned(b1d); var pa2 = Pinned(a2d); var pb2 = Pinned(b2d);
        var pc = Pinned(Enumerable.Repeat(float.NaN, m * n).ToArray());
        var first = new GemmShape(1, m, n, k1, false, true, 0, 0);
        var term = new GemmTerm(new GemmShape(1, m, n, k2, false, true, 0, 0), MatmulCpu.Address(pa2), MatmulCpu.Address(pb2), 1.5f);
        if (avx2 || !Vector512.IsHardwareAccelerated) MatmulCpu.Run<Avx2Kernel>(first, pa1, pb1, pc, 1f, 0f, term);
        else MatmulCpu.Run<Avx512Kernel>(first, pa1, pb1, pc, 1f, 0f, term);
        Close(expected, pc, 1e-4, 1e-4, $"avx2={avx2}");
        GC.KeepAlive(pa2); GC.KeepAlive(pb2);
    }

    // The first product ends part-way through the second packed block (K1 = KC + 10), with beta over a real c: the
    // term's steps share that block with K1's last ones, and the blocks after the first accumulate.
    [Fact]
    public void TheTermSharesABlockWithTheFirstProductsLastSteps()
    {
        int m = 21, n = 35, k1 = MatmulCpu.KC + 10, k2 = 6;
        var a1d = Random(m * k1, 81); var b1d = Random(k1 * n, 82); var a2d = Random(m * k2, 83); var b2d = Random(k2 * n, 84);
        var c0 = Random(m * n, 85);
        using var a1 = Tensor.FromArray(a1d, [m, k1]); using var b1 = Tensor.FromArray(b1d, [k1, n]);
        using var a2 = Tensor.FromArray(a2d, [m, k2]); using var b2 = Tensor.FromArray(b2d, [k2, n]);
        using var c = Tensor.FromArray(c0, [m, n]);
        Ops.MatmulSumInto(c, a1, b1, false, a2, b2, false, -1.25f, 0.5f);
        Close(Expected(a1d, b1d, false, k1, a2d, b2d, false, k2, m, n, -1.25, c0, 0.5), c.ToArray(), 1e-4, 1e-4, "K1 = KC + 10");
    }

    static float[] Pinned(float[] values)
    {
        var pinned = GC.AllocateArray<float>(values.Length, pinned: true);
        values.CopyTo(pinned, 0);
        return pinned;
    }

    [Fact]
    public void MismatchedShapesNameBothProducts()
    {
        using var a1 = Tensor.Zeros([4, 6]); using var b1 = Tensor.Zeros([6, 5]);
        using var a2 = Tensor.Zeros([4, 2]); using var b2 = Tensor.Zeros([2, 7]);
        using var c = Tensor.Zeros([4, 5]);
        var e = Assert.Throws<ArgumentException>(() => Ops.MatmulSumInto(c, a1, b1, false, a2, b2, false));
        Assert.Contains("a1·b1 gives [4, 5] and a2·b2 [4, 7]", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.MatmulSumInto(c, a1, b1, false, c, b2, false));
    }
}
