using System.Runtime.Intrinsics;
using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

/// <summary>
/// How the CPU GEMM splits a product over its workers (column chunks, row blocks, B slices packed where first needed, a
/// worker joining another's last block) changes no result: every split product equals the same product run whole on one
/// thread, bit for bit.
/// </summary>
public class GemmSchedulingTests
{
    // B's slices are packed by whichever task needs one first, and tasks take slices in different orders: the result must
    // not depend on who packed what. Four callers at once (one on the GEMM's workers, the others on Parallel.For with more
    // threads than cores) race over the slices; every result equals the first bit for bit. K 1100 spans 2, 3 or 5 KC
    // passes (KC 1024, 512, 256); cases: each micro-kernel, a term (LoRA's fused low-rank product packed into the same
    // slices), and a bfloat16 transposed B (a frozen weight, widened while packed).
    [Theory]
    [InlineData("default", false)] [InlineData("default", true)] [InlineData("avx2", true)] [InlineData("bf16", false)]
    public void PackingOrderOfBSlicesChangesNoResult(string variant, bool withTerm)
    {
        int m = 300, k = 1100, n = 1000, k2 = 8;
        bool bf16 = variant == "bf16";
        var a = Pinned(Random(m * k, 61)); var b = Pinned(Random(k * n, 62));
        var b16 = GC.AllocateArray<ushort>(k * n, pinned: true);
        BFloat16.Round(b, b16);
        var a2 = Pinned(Random(m * k2, 63)); var b2 = Pinned(Random(n * k2, 64));
        float[] Run()
        {
            var c = GC.AllocateArray<float>(m * n, pinned: true);
            var term = withTerm ? new GemmTerm(new GemmShape(1, m, n, k2, false, true, 0, 0), MatmulCpu.Address(a2), MatmulCpu.Address(b2), 0.5f) : default;
            // op(B) = Bᵀ for the bfloat16 case: B stored [N, K], as a linear's weight is.
            var shape = new GemmShape(1, m, n, k, false, bf16, 0, 0);
            if (bf16) MatmulCpu.Run(shape, a, b16, b16.LongLength, c, 1f, 0f, term);
            else if (variant == "avx2") MatmulCpu.Run<Avx2Kernel>(shape, a, b, c, 1f, 0f, term);
            else MatmulCpu.Run(shape, a, b, c, 1f, 0f, term);
            return c;
        }
        var first = Run();
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            for (int r = 0; r < 5; r++)
            {
                var again = Run();
                for (int i = 0; i < first.Length; i++)
                    Assert.True(again[i] == first[i], $"{variant}, term {withTerm}, row {i / n}, column {i % n}: {again[i]} vs {first[i]}");
            }
        });
    }

    // A product split over the GEMM's workers (column chunks, each a worker's home, row blocks taken from a counter, a
    // worker done with its chunk taking what is left of another's) equals the same product run whole on one thread, bit
    // for bit: a batch of 4 × cores copies (A and B shared through stride 0) takes the path that runs each product serially.
    // With 32-column slices (AVX-512) N 70 and 40 cut 3 and 2 slices (chunks of unequal width, or one slice each), with
    // 16-column ones (AVX2) 5 and 3; M 13 ends in an edge panel. On one core both sides run serially and the test shows
    // nothing; CI has two.
    [Theory]
    [InlineData(300, 1100, 1000, false)] [InlineData(300, 1100, 1000, true)] [InlineData(517, 300, 70, false)]
    [InlineData(200, 64, 40, false)] [InlineData(200, 64, 40, true)] [InlineData(13, 2100, 300, false)]
    public void ASplitProductEqualsTheSameProductOnOneThread(int m, int k, int n, bool avx2)
    {
        var a = Pinned(Random(m * k, 71)); var b = Pinned(Random(k * n, 72));
        int batch = 4 * Environment.ProcessorCount;
        var whole = GC.AllocateArray<float>(m * n, pinned: true);
        var serial = GC.AllocateArray<float>(batch * m * n, pinned: true);
        var one = new GemmShape(1, m, n, k, false, false, 0, 0);
        var many = new GemmShape(batch, m, n, k, false, false, 0, 0);
        if (avx2 || !Vector512.IsHardwareAccelerated)
        {
            MatmulCpu.Run<Avx2Kernel>(one, a, b, whole, 1f, 0f);
            MatmulCpu.Run<Avx2Kernel>(many, a, b, serial, 1f, 0f);
        }
        else
        {
            MatmulCpu.Run<Avx512Kernel>(one, a, b, whole, 1f, 0f);
            MatmulCpu.Run<Avx512Kernel>(many, a, b, serial, 1f, 0f);
        }
        for (int z = 0; z < batch; z++)
            for (int i = 0; i < m * n; i++)
                Assert.True(serial[z * m * n + i] == whole[i], $"copy {z}, row {i / n}, column {i % n}: {serial[z * m * n + i]} vs {whole[i]}");
    }

    // With all of K in one packed block, a worker that has no row block left joins another's: both claim that block's slices
    // from one counter. Here the calling thread sleeps at each slice it claims of its own blocks, so the GEMM's other worker
    // runs out of rows first and joins; C starts from values and beta is 1, so a slice claimed twice (computed twice) or
    // never shows in the result, which must equal the same product run whole on one thread, bit for bit. The shape is
    // this test's own: the hook ignores the GEMMs of tests running beside it.
    [Theory]
    [InlineData(false)] [InlineData(true)]
    public void SlicesOfARowBlockSharedByTwoWorkersAreEachComputedOnce(bool avx2)
    {
        if (Environment.ProcessorCount < 2) return; // one core: products run serially, nothing is shared
        // K within one packed block (KC is 256 where L2 is under 512 KB), which is when slices are shared.
        int m = 600, k = Math.Min(509, MatmulCpu.KC - 3), n = 1003;
        var a = Pinned(Random(m * k, 81)); var b = Pinned(Random(k * n, 82)); var c0 = Random(m * n, 83);
        int batch = 4 * Environment.ProcessorCount;
        var serial = GC.AllocateArray<float>(batch * m * n, pinned: true);
        for (int z = 0; z < batch; z++) c0.CopyTo(serial, z * m * n);
        var one = new GemmShape(1, m, n, k, false, false, 0, 0);
        bool wide = !avx2 && Vector512.IsHardwareAccelerated;
        void Product(GemmShape shape, float[] c)
        {
            if (wide) MatmulCpu.Run<Avx512Kernel>(shape, a, b, c, 0.5f, 1f);
            else MatmulCpu.Run<Avx2Kernel>(shape, a, b, c, 0.5f, 1f);
        }
        Product(new GemmShape(batch, m, n, k, false, false, 0, 0), serial);
        int joinedClaims = 0;
        MatmulCpu.SliceClaimed = (shape, joining) =>
        {
            if (shape != one) return;
            if (joining) Interlocked.Increment(ref joinedClaims);
            else if (GemmWorkers.Current == 0) Thread.Sleep(2);
        };
        try
        {
            for (int r = 0; r < 3; r++)
            {
                var c = GC.AllocateArray<float>(m * n, pinned: true);
                c0.CopyTo(c, 0);
                Product(one, c);
                for (int i = 0; i < m * n; i++)
                    Assert.True(c[i] == serial[i], $"run {r}, row {i / n}, column {i % n}: {c[i]} vs {serial[i]}");
            }
        }
        finally { MatmulCpu.SliceClaimed = null; }
        Assert.True(joinedClaims > 0, "no worker joined another's row block");
    }

    static float[] Pinned(float[] values)
    {
        var pinned = GC.AllocateArray<float>(values.Length, pinned: true);
        values.CopyTo(pinned, 0);
        return pinned;
    }

    // Every row in exactly one block, blocks of whole MR panels and at most 128 rows (the packed A buffer), a multiple of
    // the workers whenever there are panels enough, and no block more than one panel larger than another.
    [Fact]
    public void RowBlocksCoverEveryRowOnceEvenly()
    {
        foreach (int mr in new[] { 6, 8 })
            for (int workers = 1; workers <= 16; workers++)
                for (int m = 1; m <= 700; m++)
                {
                    int blocks = MatmulCpu.RowBlocks(m, mr, workers), panels = (m + mr - 1) / mr, next = 0;
                    int smallest = int.MaxValue, largest = 0;
                    for (int b = 0; b < blocks; b++)
                    {
                        var (start, rows) = MatmulCpu.RowBlock(b, blocks, m, mr);
                        Assert.True(start == next && rows > 0 && rows <= 128 && start % mr == 0, $"M {m} MR {mr} workers {workers} block {b}: rows [{start}, {start + rows})");
                        next = start + rows;
                        int blockPanels = (rows + mr - 1) / mr;
                        smallest = Math.Min(smallest, blockPanels); largest = Math.Max(largest, blockPanels);
                    }
                    Assert.Equal(m, next);
                    Assert.True(largest - smallest <= 1, $"M {m} MR {mr} workers {workers}: blocks of {smallest} to {largest} panels");
                    if (workers > 1 && panels >= 2 * workers) Assert.True(blocks % workers == 0, $"M {m} MR {mr} workers {workers}: {blocks} blocks");
                }
    }
}
