using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

/// <summary>bfloat16 storage: rounding against a reference, exact widening, the GEMM reading a bfloat16 B, the ledger, and refusals.</summary>
public class BFloat16Tests
{
    /// <summary>Nearest bfloat16 by distance in double, ties to the even mantissa: the definition, not the bit trick.</summary>
    static ushort ReferenceRound(float x)
    {
        if (float.IsNaN(x)) return 0x7FC0;
        uint bits = BitConverter.SingleToUInt32Bits(x);
        ushort down = (ushort)(bits >> 16);
        if ((bits & 0xFFFF) == 0) return down;
        ushort up = (ushort)(down + 1);   // the next value away from zero (may carry into the exponent, up to infinity)
        double dd = Math.Abs((double)BFloat16.Widen(down) - x), du = Math.Abs((double)BFloat16.Widen(up) - x);
        if (float.IsInfinity(BFloat16.Widen(up)))
            // Beyond the largest finite bfloat16 (ties included) IEEE rounding goes to infinity.
            return (bits & 0xFFFF) >= 0x8000 ? up : down;
        return dd < du ? down : du < dd ? up : (down & 1) == 0 ? down : up;
    }

    [Fact]
    public void RoundsToNearestEvenAndWidensExactly()
    {
        var cases = new List<float> { 0f, -0f, 1f, -1f, float.Epsilon, -float.Epsilon, float.MaxValue, float.MinValue, float.PositiveInfinity, float.NegativeInfinity,
            BitConverter.UInt32BitsToSingle(0x3F808000), BitConverter.UInt32BitsToSingle(0x3F818000), BitConverter.UInt32BitsToSingle(0x3F808001),
            BitConverter.UInt32BitsToSingle(0x3F807FFF), BitConverter.UInt32BitsToSingle(0x7F7F8000), BitConverter.UInt32BitsToSingle(0x7F7F7FFF),
            BitConverter.UInt32BitsToSingle(0x00008000), BitConverter.UInt32BitsToSingle(0x807FFFFF) };
        var rng = new Random(5);
        for (int i = 0; i < 20000; i++) cases.Add(BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32)));
        foreach (var x in cases)
        {
            if (float.IsNaN(x)) { Assert.True(float.IsNaN(BFloat16.Widen(BFloat16.Round(x)))); continue; }
            Assert.Equal(ReferenceRound(x), BFloat16.Round(x));
        }
        Assert.True(float.IsNaN(BFloat16.Widen(BFloat16.Round(float.NaN))));
        Assert.Equal(BitConverter.SingleToUInt32Bits(-0f), BitConverter.SingleToUInt32Bits(BFloat16.Widen(BFloat16.Round(-0f))));
        // Vectorized widening equals the scalar one at every length around the 16-lane step.
        for (int n = 0; n < 40; n++)
        {
            var h = Enumerable.Range(0, n).Select(i => (ushort)rng.Next(0, 65536)).ToArray();
            var wide = new float[n];
            BFloat16.Widen(h, wide);
            for (int i = 0; i < n; i++) Assert.Equal(BitConverter.SingleToUInt32Bits(BFloat16.Widen(h[i])), BitConverter.SingleToUInt32Bits(wide[i]));
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void TensorRoundTripsAndHalvesItsBytes(string device)
    {
        var d = Dev(device);
        var values = Random(1000, 7, -3f, 3f);
        using var t = Tensor.FromArray(values, [10, 100], d, MemoryCategory.Parameter);
        long before = d.Ledger.Snapshot().LiveByCategory[MemoryCategory.Parameter];
        using (var h = t.ToBFloat16())
        {
            Assert.Equal(DType.BFloat16, h.DType);
            Assert.Equal([10, 100], h.ShapeArray());
            Assert.Equal(before + 2 * 1000, d.Ledger.Snapshot().LiveByCategory[MemoryCategory.Parameter]);
            var expected = values.Select(v => BFloat16.Widen(BFloat16.Round(v))).ToArray();
            Assert.Equal(expected, h.ToArray());
            using var wide = h.ToFloat32();
            Assert.Equal(DType.Float32, wide.DType);
            Assert.Equal(expected, wide.ToArray());
            using var moved = h.To(Device.Cpu);
            Assert.Equal(DType.BFloat16, moved.DType);
            Assert.Equal(expected, moved.ToArray());
        }
        Assert.Equal(before, d.Ledger.Snapshot().LiveByCategory[MemoryCategory.Parameter]);
    }

    // The GEMM with a bfloat16 B against a double reference over the widened values: the packed path (both transposes),
    // the narrow paths (N ≤ 16), the direct path (M = 1, a decoding step), and a batch against one shared B.
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void MatmulReadsABFloat16B(string device)
    {
        var d = Dev(device);
        foreach (var (batch, m, k, n) in new[] { (1, 67, 45, 70), (1, 3000, 40, 9), (1, 1, 130, 77), (3, 29, 33, 40) })
            foreach (bool tb in new[] { false, true })
            {
                var ad = Random(batch * m * k, 11); var bd = Random(k * n, 12); var c0 = Random(batch * m * n, 13);
                var bw = bd.Select(v => BFloat16.Widen(BFloat16.Round(v))).ToArray();
                using var a = Tensor.FromArray(ad, batch == 1 ? [m, k] : [batch, m, k], d);
                using var b32 = Tensor.FromArray(bd, tb ? [n, k] : [k, n], d);
                using var b = b32.ToBFloat16();
                using var c = Tensor.FromArray(c0, batch == 1 ? [m, n] : [batch, m, n], d);
                Ops.MatmulInto(c, a, b, false, tb, alpha: 0.5f, beta: -1f);
                var expected = new double[batch * m * n];
                for (int z = 0; z < batch; z++)
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < n; j++)
                        {
                            double s = 0;
                            for (int p = 0; p < k; p++) s += (double)ad[(z * m + i) * k + p] * bw[tb ? j * k + p : p * n + j];
                            int o = (z * m + i) * n + j;
                            expected[o] = 0.5 * s - c0[o];
                        }
                Close(expected, c.ToArray(), 1e-4, 1e-4, $"{batch}×{m}×{k}×{n} tB={tb} on {device}");
            }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void EmbeddingGathersFromABFloat16Table(string device)
    {
        var d = Dev(device);
        var table = Random(37 * 21, 17, -2f, 2f);
        using var t32 = Tensor.FromArray(table, [37, 21], d);
        using var t = t32.ToBFloat16();
        int[] ids = [5, 0, 36, 5, 17, 2];
        using var y = Ops.Embedding(t, ids, [2, 3]);
        Assert.Equal([2, 3, 21], y.ShapeArray());
        var expected = ids.SelectMany(i => table.Skip(i * 21).Take(21)).Select(v => BFloat16.Widen(BFloat16.Round(v))).ToArray();
        Assert.Equal(expected, y.ToArray());
    }

    [Fact]
    public void OtherReadersRefuseItClearly()
    {
        using var t32 = Tensor.FromArray(Random(12, 3), [3, 4], Device.Cpu);
        using var t = t32.ToBFloat16();
        var e = Assert.Throws<InvalidOperationException>(() => Ops.Relu(t));
        Assert.Contains("bfloat16", e.Message);
        Assert.Contains("[3, 4]", e.Message);
        using var x = Tensor.FromArray(Random(12, 4), [3, 4], Device.Cpu);
        var m = Assert.Throws<ArgumentException>(() => Ops.Matmul(t, x, false, true));
        Assert.Contains("only the B operand", m.Message);
        var p = new Nanolora.Autograd.Parameter("w", t32.ToBFloat16(), trainable: false);
        var frozen = Assert.Throws<InvalidOperationException>(() => p.Trainable = true);
        Assert.Contains("bfloat16", frozen.Message, StringComparison.OrdinalIgnoreCase);
        p.Dispose();
    }
}
