using System.Runtime.Intrinsics;
using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class MatmulTests
{
    /// <summary>alpha·op(A)·op(B) + beta·C0 in double; shapes are the stored ones, batch dims already flattened.</summary>
    static double[] Expected(float[] a, float[] b, float[]? c0, int batch, int m, int n, int k, bool ta, bool tb,
        bool sharedA = false, bool sharedB = false, double alpha = 1, double beta = 0)
    {
        var y = new double[batch * m * n];
        for (int z = 0; z < batch; z++)
        {
            int ao = sharedA ? 0 : z * m * k, bo = sharedB ? 0 : z * k * n;
            for (int i = 0; i < m; i++)
                for (int j = 0; j < n; j++)
                {
                    double s = 0;
                    for (int p = 0; p < k; p++)
                        s += (double)a[ao + (ta ? p * m + i : i * k + p)] * b[bo + (tb ? j * k + p : p * n + j)];
                    int o = (z * m + i) * n + j;
                    y[o] = alpha * s + (c0 == null ? 0 : beta * c0[o]);
                }
        }
        return y;
    }

    static int[] Stored(int rows, int cols, bool transposed) => transposed ? [cols, rows] : [rows, cols];

    static void Check(string device, int m, int k, int n, bool ta, bool tb, double atol = 1e-5)
    {
        var d = Dev(device);
        var ad = Random(m * k, 21); var bd = Random(k * n, 22);
        using var a = Tensor.FromArray(ad, Stored(m, k, ta), d);
        using var b = Tensor.FromArray(bd, Stored(k, n, tb), d);
        using var c = Ops.Matmul(a, b, ta, tb);
        Assert.Equal([m, n], c.ShapeArray());
        Close(Expected(ad, bd, null, 1, m, n, k, ta, tb), c.ToArray(), atol, 1e-4, $"{m}x{k}x{n} tA={ta} tB={tb} on {device}");
    }

    public static IEnumerable<object[]> SmallGrid() =>
        from d in Devices()
        from s in new[] { (1, 1, 1), (7, 33, 5), (45, 65, 33), (3, 70, 5), (1, 40, 64), (64, 64, 1) }
        from ta in new[] { false, true } from tb in new[] { false, true }
        select new object[] { d[0], s.Item1, s.Item2, s.Item3, ta, tb };

    [Theory, MemberData(nameof(SmallGrid))]
    public void MatchesDoubleReference(string device, int m, int k, int n, bool ta, bool tb) => Check(device, m, k, n, ta, tb);

    public static IEnumerable<object[]> CpuLargeGrid() =>
        from s in new[] { (257, 300, 129), (130, 513, 70), (8, 256, 32), (600, 40, 700), (70, 2100, 40) }
        from ta in new[] { false, true } from tb in new[] { false, true }
        select new object[] { s.Item1, s.Item2, s.Item3, ta, tb };

    // Row and column edges of the packed panels, K beyond one KC block (256, 512 or 1024 by the L2: K 2100 passes all),
    // several row blocks and column chunks.
    [Theory, MemberData(nameof(CpuLargeGrid))]
    public void CpuPackedPathMatches(int m, int k, int n, bool ta, bool tb) => Check("cpu", m, k, n, ta, tb, 1e-4);

    // A row's result is the same whether it sits in a full MR-row panel or in the edge panel, over several KC passes and
    // with beta: the edge tiles merge with the kernel's fused multiply-add. Of M 13, rows 8–12 are the edge panel with
    // MR 8 and row 12 with MR 6; in M 24 every panel is full.
    [Theory]
    [InlineData(false)] [InlineData(true)]
    public void RowsInTheEdgePanelMatchFullPanelsBitForBit(bool avx2)
    {
        int k = 2100, n = 70;
        var ad = Random(24 * k, 51); var bd = Random(k * n, 52); var c0 = Random(24 * n, 53);
        float[] Run(int m)
        {
            var pa = GC.AllocateArray<float>(m * k, pinned: true); Array.Copy(ad, pa, m * k);
            var pb = GC.AllocateArray<float>(bd.Length, pinned: true); bd.CopyTo(pb, 0);
            var pc = GC.AllocateArray<float>(m * n, pinned: true); Array.Copy(c0, pc, m * n);
            var shape = new GemmShape(1, m, n, k, false, false, 0, 0);
            if (avx2 || !Vector512.IsHardwareAccelerated) MatmulCpu.Run<Avx2Kernel>(shape, pa, pb, pc, 0.5f, 1.5f);
            else MatmulCpu.Run<Avx512Kernel>(shape, pa, pb, pc, 0.5f, 1.5f);
            return pc;
        }
        var edge = Run(13);
        var full = Run(24);
        for (int i = 0; i < 13 * n; i++) Assert.True(edge[i] == full[i], $"row {i / n}, column {i % n}: {edge[i]} vs {full[i]}");
    }

    // The packing's vector paths against the scalar loops they replace: every row count up to 8 (missing rows zero),
    // panel widths 6 and 8, a wider destination stride (B's slices), and lengths with and without a remainder.
    [Fact]
    public unsafe void PackTransposeMatchesScalarPacking()
    {
        if (!System.Runtime.Intrinsics.X86.Avx.IsSupported) return;
        var src = Random(8 * 40, 61);
        foreach (int kc in new[] { 0, 7, 8, 17, 40 })
            foreach (int width in new[] { 6, 8 })
                foreach (int stride in new[] { width, 32 })
                    for (int rows = 0; rows <= Math.Min(8, width); rows++)
                    {
                        var got = Enumerable.Repeat(float.NaN, kc * stride + 8).ToArray();
                        int done;
                        fixed (float* s = src) fixed (float* d = got) done = PackTranspose.Panel8(s, 40, rows, kc, width, stride, d);
                        Assert.Equal(kc & ~7, done);
                        for (int p = 0; p < done; p++)
                            for (int i = 0; i < stride; i++)
                            {
                                float expected = i >= width ? float.NaN : i < rows ? src[i * 40 + p] : 0f;
                                Assert.True(expected.Equals(got[p * stride + i]), $"Panel8 kc {kc} width {width} stride {stride} rows {rows} at ({p}, {i})");
                            }
                        // Nothing past the rows it packs (the caller's scalar loop writes the remainder).
                        for (int i = done * stride; i < got.Length; i++)
                            Assert.True(float.IsNaN(got[i]), $"Panel8 kc {kc} width {width} stride {stride} rows {rows} wrote past its rows at {i}");
                        // The bfloat16 overload widens exactly as BFloat16.Widen does.
                        var bits = Array.ConvertAll(src, BFloat16.Round);
                        var wide = Enumerable.Repeat(float.NaN, kc * stride + 8).ToArray();
                        fixed (ushort* s = bits) fixed (float* d = wide) PackTranspose.Panel8(s, 40, rows, kc, width, stride, d);
                        for (int p = 0; p < done; p++)
                            for (int i = 0; i < stride; i++)
                            {
                                float expected = i >= width ? float.NaN : i < rows ? BFloat16.Widen(bits[i * 40 + p]) : 0f;
                                Assert.True(expected.Equals(wide[p * stride + i]), $"Panel8 (bfloat16) kc {kc} width {width} stride {stride} rows {rows} at ({p}, {i})");
                            }
                        // Runs: contiguous runs of `rows` floats, lda 40 apart, into rows of `width` floats.
                        var runs = Enumerable.Repeat(float.NaN, kc * width + 8).ToArray();
                        fixed (float* s = src) fixed (float* d = runs) PackTranspose.Runs(s, 40, rows, Math.Min(kc, 8), width, d);
                        for (int p = 0; p < Math.Min(kc, 8); p++)
                            for (int i = 0; i < width; i++)
                                Assert.True((i < rows ? src[p * 40 + i] : 0f).Equals(runs[p * width + i]), $"Runs rows {rows} width {width} at ({p}, {i})");
                        Assert.True(float.IsNaN(runs[Math.Min(kc, 8) * width]), "Runs wrote past its rows");
                    }
    }

    [Theory]
    [InlineData(0, 256)] [InlineData(256, 256)] [InlineData(512, 512)] [InlineData(1000, 512)] [InlineData(1024, 1024)] [InlineData(2048, 1024)]
    public void PackedDepthFollowsTheL2(int l2Kilobytes, int kc) => Assert.Equal(kc, MatmulCpu.PackedDepth(l2Kilobytes));

    // Both micro-kernels, whatever this machine's SIMD width, with alpha/beta over a NaN-free and a NaN-filled C.
    [Theory]
    [InlineData(false, false, false)] [InlineData(true, true, false)] [InlineData(false, true, true)] [InlineData(true, false, true)]
    public void CpuMicroKernelsMatch(bool ta, bool tb, bool avx2)
    {
        int m = 77, k = 301, n = 95;
        var ad = Random(m * k, 31); var bd = Random(k * n, 32); var c0 = Random(m * n, 33);
        var shape = new GemmShape(1, m, n, k, ta, tb, 0, 0);
        foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, -2f), (2f, 1f) })
        {
            var c = beta == 0 ? Enumerable.Repeat(float.NaN, m * n).ToArray() : (float[])c0.Clone();
            var pa = GC.AllocateArray<float>(ad.Length, pinned: true); ad.CopyTo(pa, 0);
            var pb = GC.AllocateArray<float>(bd.Length, pinned: true); bd.CopyTo(pb, 0);
            var pc = GC.AllocateArray<float>(c.Length, pinned: true); c.CopyTo(pc, 0);
            if (avx2 || !Vector512.IsHardwareAccelerated) MatmulCpu.Run<Avx2Kernel>(shape, pa, pb, pc, alpha, beta);
            else MatmulCpu.Run<Avx512Kernel>(shape, pa, pb, pc, alpha, beta);
            Close(Expected(ad, bd, c0, 1, m, n, k, ta, tb, alpha: alpha, beta: beta), pc, 1e-4, 1e-4, $"avx2={avx2} alpha={alpha} beta={beta}");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BatchedAllTransposes(string device)
    {
        var d = Dev(device);
        var ad = Random(3 * 7 * 9, 41); var bd = Random(3 * 9 * 5, 42);
        foreach (var (ta, tb) in new[] { (false, false), (true, false), (false, true), (true, true) })
        {
            using var a = Tensor.FromArray(ad, [3, .. Stored(7, 9, ta)], d);
            using var b = Tensor.FromArray(bd, [3, .. Stored(9, 5, tb)], d);
            using var c = Ops.Matmul(a, b, ta, tb);
            Assert.Equal([3, 7, 5], c.ShapeArray());
            Close(Expected(ad, bd, null, 3, 7, 5, 9, ta, tb), c.ToArray(), what: $"batched tA={ta} tB={tb} on {device}");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SharedRank2Operand(string device)
    {
        var d = Dev(device);
        var ad = Random(2 * 3 * 7 * 9, 51); var bd = Random(9 * 5, 52);
        foreach (var ta in new[] { false, true })
        {
            // A batched [2, 3, ...] against one B (the Linear-layer case; folded into one taller product when A is not transposed).
            using var a = Tensor.FromArray(ad, [2, 3, .. Stored(7, 9, ta)], d);
            using var b = Tensor.FromArray(bd, [5, 9], d);
            using var c = Ops.Matmul(a, b, ta, transposeB: true);
            Assert.Equal([2, 3, 7, 5], c.ShapeArray());
            Close(Expected(ad, bd, null, 6, 7, 5, 9, ta, true, sharedB: true), c.ToArray(), what: $"shared b tA={ta} on {device}");
        }
        // One A against a batch of B.
        var bb = Random(4 * 9 * 5, 53);
        using var a2 = Tensor.FromArray(ad[..(7 * 9)], [7, 9], d);
        using var b2 = Tensor.FromArray(bb, [4, 9, 5], d);
        using var c2 = Ops.Matmul(a2, b2);
        Assert.Equal([4, 7, 5], c2.ShapeArray());
        Close(Expected(ad[..(7 * 9)], bb, null, 4, 7, 5, 9, false, false, sharedA: true), c2.ToArray(), what: $"shared a on {device}");
    }

    // LoRA's rank-r products on the narrow paths (rows × narrow: N ≤ 16, A row-major; outer-product accumulation:
    // A transposed, B not, M ≤ 16 or N ≤ 16, written transposed), with odd K (vector tails), odd rows (the repeated
    // last row), column counts off the 8- and 16-wide vectors and the 16-wide strips, and alpha/beta over real and NaN-filled C.
    [Theory]
    [InlineData(3072, 256, 8, false, true)] [InlineData(301, 77, 13, false, false)] [InlineData(33, 19, 16, false, true)]
    [InlineData(8, 301, 256, true, false)] [InlineData(5, 517, 41, true, false)] [InlineData(16, 70, 9, true, false)]
    [InlineData(256, 3072, 8, true, false)] [InlineData(37, 301, 11, true, false)] [InlineData(9, 33, 1, false, false)]
    // N ≤ 8 (dot products along K on 512-bit machines: K off 16, an odd last row, N below 8) and M ≤ 8 outer products
    // (eight rows × 32 columns: m below 8, n off the 32-wide strips with a 16-wide and a narrower remainder, written transposed)
    [InlineData(301, 77, 7, false, true)] [InlineData(5, 40, 3, false, false)] [InlineData(3072, 256, 8, false, false)]
    [InlineData(3, 50, 91, true, false)] [InlineData(8, 301, 64, true, false)] [InlineData(100, 50, 5, true, false)]
    public void CpuNarrowPathsMatch(int m, int k, int n, bool ta, bool tb)
    {
        var ad = Random(m * k, 41); var bd = Random(k * n, 42); var c0 = Random(m * n, 43);
        var shape = new GemmShape(1, m, n, k, ta, tb, 0, 0);
        var pa = GC.AllocateArray<float>(ad.Length, pinned: true); ad.CopyTo(pa, 0);
        var pb = GC.AllocateArray<float>(bd.Length, pinned: true); bd.CopyTo(pb, 0);
        foreach (var (alpha, beta) in new[] { (1f, 0f), (0.5f, -2f), (2f, 1f) })
        {
            var pc = GC.AllocateArray<float>(m * n, pinned: true);
            if (beta == 0) Array.Fill(pc, float.NaN); else c0.CopyTo(pc, 0);
            bool narrow = MatmulCpuNarrow.TryRun(shape, Addr(pa), Addr(pb), Addr(pc), alpha, beta);
            Assert.Equal(n <= MatmulCpuNarrow.MaxWidth && !ta || ta && !tb && (m <= MatmulCpuNarrow.MaxWidth || n <= MatmulCpuNarrow.MaxWidth), narrow);
            if (!narrow) return;
            Close(Expected(ad, bd, c0, 1, m, n, k, ta, tb, alpha: alpha, beta: beta), pc, 1e-4, 1e-4, $"{m}x{k}x{n} tA={ta} tB={tb} alpha={alpha} beta={beta}");
        }
    }

    static nint Addr(float[] pinned) => System.Runtime.InteropServices.Marshal.UnsafeAddrOfPinnedArrayElement(pinned, 0);

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void MatmulIntoAccumulatesWithAlphaBeta(string device)
    {
        var d = Dev(device);
        var ad = Random(2 * 33 * 45, 61); var bd = Random(2 * 45 * 7, 62); var c0 = Random(2 * 33 * 7, 63);
        foreach (var (ta, tb) in new[] { (false, false), (true, true) })
        {
            using var a = Tensor.FromArray(ad, [2, .. Stored(33, 45, ta)], d);
            using var b = Tensor.FromArray(bd, [2, .. Stored(45, 7, tb)], d);
            using var c = Tensor.FromArray(c0, [2, 33, 7], d);
            Ops.MatmulInto(c, a, b, ta, tb, alpha: 0.5f, beta: -1.5f);
            Close(Expected(ad, bd, c0, 2, 33, 7, 45, ta, tb, alpha: 0.5, beta: -1.5), c.ToArray(), what: $"alpha/beta tA={ta} on {device}");
            // beta = 0 ignores C entirely, even NaN.
            c.Fill(float.NaN);
            Ops.MatmulInto(c, a, b, ta, tb, alpha: 2f);
            Close(Expected(ad, bd, null, 2, 33, 7, 45, ta, tb, alpha: 2), c.ToArray(), what: $"beta=0 over NaN tA={ta} on {device}");
        }
    }

    [Fact]
    public void CpuBatchedLargerProducts()
    {
        var d = Dev("cpu");
        foreach (var (batch, m, k, n) in new[] { (5, 40, 50, 60), (2, 130, 70, 90) })
        {
            var ad = Random(batch * m * k, 71); var bd = Random(batch * k * n, 72);
            using var a = Tensor.FromArray(ad, [batch, k, m], d);
            using var b = Tensor.FromArray(bd, [batch, k, n], d);
            using var c = Ops.Matmul(a, b, transposeA: true);
            Close(Expected(ad, bd, null, batch, m, n, k, true, false), c.ToArray(), 1e-4, 1e-4, $"[{batch}] {m}x{k}x{n}");
        }
    }

    [Fact]
    public void CpuBatchOfHeadsRunsWholeProductsPerTaskAndMatchesEachProductAlone()
    {
        // Products of 70·72·66 multiply-adds each: above the size a lone product splits across threads, and more than four
        // per worker, so the batch is spread as whole products instead (17 over 16 tasks on two cores: runs of one and two).
        var d = Dev("cpu");
        int batch = Math.Max(17, 4 * Environment.ProcessorCount + 1);
        const int m = 70, k = 66, n = 72;
        foreach (var (ta, tb) in new[] { (false, true), (false, false), (true, false) })
        {
            var ad = Random(batch * m * k, 73); var bd = Random(batch * k * n, 74);
            using var a = Tensor.FromArray(ad, ta ? [batch, k, m] : [batch, m, k], d);
            using var b = Tensor.FromArray(bd, tb ? [batch, n, k] : [batch, k, n], d);
            using var c = Ops.Matmul(a, b, ta, tb);
            var got = c.ToArray();
            Close(Expected(ad, bd, null, batch, m, n, k, ta, tb), got, 1e-4, 1e-4, $"[{batch}] {m}x{k}x{n} tA={ta} tB={tb}");
            for (int z = 0; z < batch; z += 8)
            {
                using var az = Tensor.FromArray(ad.AsSpan(z * m * k, m * k).ToArray(), ta ? [k, m] : [m, k], d);
                using var bz = Tensor.FromArray(bd.AsSpan(z * k * n, k * n).ToArray(), tb ? [n, k] : [k, n], d);
                using var cz = Ops.Matmul(az, bz, ta, tb);
                var alone = cz.ToArray();
                for (int i = 0; i < alone.Length; i++)
                    Assert.True(alone[i] == got[z * m * n + i], $"product {z} tA={ta} tB={tb} [{i}]: alone {alone[i]} vs in the batch {got[z * m * n + i]}");
            }
        }
    }

    [Fact]
    public void EmptyInnerDimensionGivesBetaTimesC()
    {
        var d = Dev("cpu");
        using var a = Tensor.Zeros([3, 0], d);
        using var b = Tensor.Zeros([0, 4], d);
        using var c = Ops.Matmul(a, b);
        Assert.All(c.ToArray(), v => Assert.Equal(0f, v));
        using var acc = Tensor.Full([3, 4], 2f, d);
        Ops.MatmulInto(acc, a, b, beta: 0.5f);
        Assert.All(acc.ToArray(), v => Assert.Equal(1f, v));
    }

    [Fact]
    public void InnerDimensionMismatchNamesShapes()
    {
        using var a = Tensor.Zeros([4, 5], Device.Cpu);
        using var b = Tensor.Zeros([6, 3], Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => Ops.Matmul(a, b));
        Assert.Contains("[4, 5]", e.Message);
        Assert.Contains("[6, 3]", e.Message);
        using var bt = Tensor.Zeros([3, 5], Device.Cpu);
        using var ok = Ops.Matmul(a, bt, transposeB: true);
        Assert.Equal([4, 3], ok.ShapeArray());
        Assert.Throws<ArgumentException>(() => Ops.Matmul(a, bt));
    }

    [Fact]
    public void BatchAndOutputShapeErrorsNameShapes()
    {
        using var a = Tensor.Zeros([2, 4, 5], Device.Cpu);
        using var b = Tensor.Zeros([3, 5, 6], Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => Ops.Matmul(a, b));
        Assert.Contains("[2, 4, 5]", e.Message);
        Assert.Contains("[3, 5, 6]", e.Message);
        using var b2 = Tensor.Zeros([2, 5, 6], Device.Cpu);
        using var wrong = Tensor.Zeros([2, 6, 4], Device.Cpu);
        e = Assert.Throws<ArgumentException>(() => Ops.MatmulInto(wrong, a, b2));
        Assert.Contains("[2, 6, 4]", e.Message);
        Assert.Contains("[2, 4, 6]", e.Message);
        using var vec = Tensor.Zeros([5], Device.Cpu);
        Assert.Throws<ArgumentException>(() => Ops.Matmul(a, vec));
    }

    [Fact]
    public void MixedDevicesNameShapesAndDevices()
    {
        using var a = Tensor.Zeros([4, 5], Device.Cpu);
        using var b = Tensor.Zeros([5, 3], Dev("ilgpu-cpu"));
        var e = Assert.Throws<ArgumentException>(() => Ops.Matmul(a, b));
        Assert.Contains("[4, 5]", e.Message);
        Assert.Contains("[5, 3]", e.Message);
        Assert.Contains("ilgpu-cpu", e.Message);
    }
}
