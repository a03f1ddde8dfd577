using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanolora.Tensors;

/// <summary>
/// The cpu backend's GEMM, laid out like BLIS/GotoBLAS: B is packed into K×NR column slices, A into
/// MR-row panels of one MC×KC block at a time (both transpose flags are absorbed by the packing, so
/// one micro-kernel serves all four cases), and an <see cref="IMicroKernel"/> keeps an MR×NR tile of C
/// in registers. On <see cref="GemmWorkers"/>, B's columns are cut into chunks, each the home of a worker that takes its row
/// blocks first: the worker packs its chunk's slices of B and reads them from its own core's cache, where sharing all of B
/// between two workers moved every slice from core to core (the split runs 1.03–1.24× as fast at 256–2048,
/// docs/PERFORMANCE.md); a worker done with its chunk takes the row blocks left in another's. Each B slice is packed by the
/// first task that needs it (<see cref="BSlices"/>), so computing starts at once instead of after a pass that packs all of
/// B. When one packed block holds all of K, a worker left without row blocks joins another's last one, slice by slice,
/// instead of waiting for it. Products with a
/// side of at most 16 (LoRA's rank-r factors) take <see cref="MatmulCpuNarrow"/>; tiny ones (M or N too small
/// to fill a tile) a direct vectorized path.
/// </summary>
internal static unsafe partial class MatmulCpu
{
    // Depth of one packed block, chosen so that the A block (≤ 128 rows × KC) fills about half of a core's L2, as BLIS
    // sizes it: 1024 with a 1 MB L2. Deeper blocks mean fewer read-modify-write passes over C; on a 2-vCPU Zen 5 host
    // (1 MB L2) KC 1024 ran 5–20 % faster than 256 with two threads (docs/PERFORMANCE.md, 2026-12-05).
    internal static readonly int KC = PackedDepth(L2Kilobytes());
    const int MaxPackedB = 1 << 22;           // floats of packed B per column pass (16 MB)
    const long SmallWork = 32 * 32 * 32;      // below this many multiply-adds packing costs more than it saves
    const long SerialWork = 1 << 18;          // below this a product runs on one thread

    /// <summary>
    /// C = alpha·op(A)·op(B) + beta·C on pinned host arrays (beta 0: C is not read); with a <paramref name="term"/>,
    /// alpha·(op(A)·op(B) + term) + beta·C in one pass over C.
    /// </summary>
    public static void Run(in GemmShape s, float[] a, float[] b, float[] c, float alpha, float beta, in GemmTerm term = default)
    {
        if (Vector512.IsHardwareAccelerated) Run<Avx512Kernel>(s, Address(a), Address(b), b.LongLength, false, Address(c), alpha, beta, term);
        else Run<Avx2Kernel>(s, Address(a), Address(b), b.LongLength, false, Address(c), alpha, beta, term);
    }

    /// <summary>The same with op(B) stored in bfloat16 (a frozen weight): widened while B is packed, or into scratch on the unpacked paths.</summary>
    public static void Run(in GemmShape s, float[] a, ushort[] b16, long bLength, float[] c, float alpha, float beta, in GemmTerm term = default)
    {
        nint pb = (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(b16));
        if (Vector512.IsHardwareAccelerated) Run<Avx512Kernel>(s, Address(a), pb, bLength, true, Address(c), alpha, beta, term);
        else Run<Avx2Kernel>(s, Address(a), pb, bLength, true, Address(c), alpha, beta, term);
    }

    /// <summary>The same with a chosen micro-kernel (tests run both on AVX-512 machines).</summary>
    internal static void Run<TK>(GemmShape s, float[] a, float[] b, float[] c, float alpha, float beta, in GemmTerm term = default) where TK : struct, IMicroKernel =>
        Run<TK>(s, Address(a), Address(b), b.LongLength, false, Address(c), alpha, beta, term);

    static void Run<TK>(GemmShape s, nint pa, nint pb, long bLength, bool bf16B, nint pc, float alpha, float beta, in GemmTerm term) where TK : struct, IMicroKernel
    {
        if (s.Batch == 0 || s.M == 0 || s.N == 0) return;
        long work = (long)s.M * s.N * s.K;
        bool narrow = work >= SmallWork && MatmulCpuNarrow.Applies(s);
        bool direct = !narrow && (s.K == 0 || s.M < TK.MR / 2 || s.N < 8 || work < SmallWork);
        if (term.Present && (narrow || direct || s.Batch != 1 || s.TransA))
        {
            // Shapes the packed path does not take: the two products one after the other.
            Run<TK>(s, pa, pb, bLength, bf16B, pc, alpha, beta, default);
            Run<TK>(term.Shape, term.A, term.B, term.Shape.N * (long)term.Shape.K, false, pc, alpha * term.Scale, 1f, default);
            return;
        }
        float[]? widened = null;
        if (bf16B && (narrow || direct))
        {
            // Only packing widens on the fly; the unpacked paths read a float32 copy.
            widened = PackBuffers.Rent(bLength);
            BFloat16.Widen(new ReadOnlySpan<ushort>((void*)pb, checked((int)bLength)), new Span<float>(PackBuffers.Aligned(widened), checked((int)bLength)));
            pb = (nint)PackBuffers.Aligned(widened);
            bf16B = false;
        }
        if (narrow) MatmulCpuNarrow.Run(s, pa, pb, pc, alpha, beta);
        else if (direct) Direct(s, pa, pb, pc, alpha, beta);
        else if (term.Present) Product<TK>(s, pa, pb, pc, bf16B, alpha, beta, work + (long)s.M * s.N * term.Shape.K >= SerialWork, term);
        else if (s.Batch > 1 && (work < SerialWork || s.Batch >= 4 * Environment.ProcessorCount))
        {
            // Many small products (attention heads), or at least four per worker: whole products on the GEMM's workers, a
            // run of them per task. Splitting each 64×64×64 head across both threads (it is not below SerialWork) handed
            // work off 512 times a call and ran attention's products at a quarter of this speed.
            var shape = s;
            int workers = Environment.ProcessorCount, tasks = Math.Min(s.Batch, 8 * workers);
            GemmWorkers.For(tasks, t =>
            {
                for (int z = (int)((long)t * shape.Batch / tasks), z1 = (int)((long)(t + 1) * shape.Batch / tasks); z < z1; z++)
                    Product<TK>(shape, pa + Bytes(z * shape.StrideA), pb + Elements(z * shape.StrideB, bf16B), pc + Bytes(z * shape.StrideC), bf16B, alpha, beta, false, default);
            });
        }
        else
            for (int z = 0; z < s.Batch; z++)
                Product<TK>(s, pa + Bytes(z * s.StrideA), pb + Elements(z * s.StrideB, bf16B), pc + Bytes(z * s.StrideC), bf16B, alpha, beta, work >= SerialWork, default);
        if (widened != null) PackBuffers.Return(widened);
    }

    internal static nint Address(float[] pinned) => (nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned));
    static nint Bytes(long elements) => (nint)(elements * sizeof(float));
    static nint Elements(long elements, bool bf16) => (nint)(elements * (bf16 ? sizeof(ushort) : sizeof(float)));

    /// <summary>One [M, K]·[K, N] product with packing; tasks are row blocks × column chunks.</summary>
    // The hot paths are compiled fully optimized from their first call, so a process's first GEMMs never pack or loop
    // in tier-0 code (whether tiering caused the slow first round seen once in run-all was not established).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Product<TK>(GemmShape s, nint a, nint b, nint c, bool bf16B, float alpha, float beta, bool parallel, GemmTerm term) where TK : struct, IMicroKernel
    {
        // A term's K2 steps follow the product's K in every packed B slice and A panel: the reduction runs over K + K2.
        int mr = TK.MR, nr = TK.NR, M = s.M, N = s.N, K = s.K + term.Shape.K;
        int workers = parallel ? Environment.ProcessorCount : 1;
        int nc = Math.Min(RoundUp(N, nr), Math.Max(nr, MaxPackedB / K / nr * nr));
        int rowBlocks = RowBlocks(M, mr, workers);
        for (int jc = 0; jc < N; jc += nc)
        {
            int ncur = Math.Min(nc, N - jc), slices = (ncur + nr - 1) / nr;
            // Enough chunks, with the row blocks, for about two tasks a worker (a short product on a many-core machine).
            int chunks = parallel ? Math.Min(slices, Math.Max(ColumnChunks(workers), (2 * workers + rowBlocks - 1) / rowBlocks)) : 1;
            long packedFloats = (long)slices * nr * K;
            // A serial product (one of a batch's, on a worker) packs into its thread's own buffer: a pooled one last
            // written on the other core arrives line by line from that core's cache.
            bool own = !parallel && packedFloats <= SerialPackedB;
            var packedB = own ? (t_packedB ??= GC.AllocateUninitializedArray<float>(SerialPackedB + 16, pinned: true)) : PackBuffers.Rent(packedFloats);
            float* bp = PackBuffers.Aligned(packedB);
            var slicesOfB = BSlices.ForPass(s, b, bf16B, term, jc, nr, bp, slices);
            // With all of K in one packed block each C tile is written once, by whoever claims its slice: the slices of a row
            // block are then claimed from a counter of their own, which a worker with nothing else left can join.
            bool shareSlices = parallel && workers > 1 && rowBlocks * chunks > 1 && K <= KC;
            int[]? sliceCounters = shareSlices ? new int[chunks * rowBlocks * CounterStride] : null;
            int SlicesIn(int chunk) => (int)((long)(chunk + 1) * slices / chunks) - (int)((long)chunk * slices / chunks);
            // Row block rb × column chunk `chunk`: the chunk's slices of B, all of K.
            void Task(int rb, int chunk, bool joining = false)
            {
                var (ic, mcur) = RowBlock(rb, rowBlocks, M, mr);
                int sl0 = (int)((long)chunk * slices / chunks), sl1 = (int)((long)(chunk + 1) * slices / chunks);
                // Workers in one chunk start at different slices of it, so that they pack different ones.
                int first = sl1 > sl0 ? rb % workers * (sl1 - sl0) / workers : 0;
                if (sl0 < sl1) Block<TK>(s, (float*)a, slicesOfB, (float*)c, ic, mcur, jc, ncur, sl0, sl1, first, alpha, beta, term,
                    sliceCounters, (chunk * rowBlocks + rb) * CounterStride, joining);
            }
            // A worker with no row block left joins the one with the most slices still unclaimed, when at least two are
            // (packing its A block costs about half a slice): the other worker's last block is then shared instead of waited
            // for, which is most of what a 1024³ product lost at its end, and all of it when that worker lost its core.
            void Help()
            {
                while (true)
                {
                    int best = -1, most = 1;
                    for (int chunk = 0; chunk < chunks; chunk++)
                        for (int rb = 0; rb < rowBlocks; rb++)
                        {
                            int left = SlicesIn(chunk) - Volatile.Read(ref sliceCounters![(chunk * rowBlocks + rb) * CounterStride]);
                            if (left > most) (best, most) = (chunk * rowBlocks + rb, left);
                        }
                    if (best < 0) return;
                    Task(best % rowBlocks, best / rowBlocks, joining: true);
                }
            }
            // GemmWorkers.For returns (or throws) only when every task has finished with the pass.
            try
            {
                if (!parallel || workers == 1 || rowBlocks * chunks == 1)
                    for (int rb = 0; rb < rowBlocks; rb++) Task(rb, 0);
                else
                {
                    // Each worker takes the row blocks of its own chunk first, then whatever is left of the others'.
                    var nextRow = new int[chunks];
                    GemmWorkers.For(workers, _ =>
                    {
                        int home = GemmWorkers.Current % chunks;
                        for (int k = 0; k < chunks; k++)
                        {
                            int chunk = (home + k) % chunks, rb;
                            while ((rb = Interlocked.Increment(ref nextRow[chunk]) - 1) < rowBlocks) Task(rb, chunk);
                        }
                        if (sliceCounters != null) Help();
                    });
                }
            }
            finally { slicesOfB.EndPass(); }
            if (!own) PackBuffers.Return(packedB);
        }
    }

    /// <summary>Called as a task claims a slice, with whether it joined another worker's row block: tests use it to hold a worker up.</summary>
    internal static Action<GemmShape, bool>? SliceClaimed;
    const int CounterStride = 16;        // ints: each row block's slice counter on a cache line of its own
    const int SerialPackedB = 1 << 16;   // floats (256 KB): a serial product's packed B up to this stays in its thread's buffer
    [ThreadStatic] static float[]? t_packedA, t_packedB;

    /// <summary>Rows [ic, ic+mcur) × slices [sl0, sl1) of one column pass, over all of K in KC steps.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Block<TK>(in GemmShape s, float* a, BSlices slicesOfB, float* c, int ic, int mcur, int jc, int ncur, int sl0, int sl1, int first,
        float alpha, float beta, in GemmTerm term, int[]? sliceCounters, int counter, bool joining) where TK : struct, IMicroKernel
    {
        float* bp = slicesOfB.Packed;
        int count = sl1 - sl0;
        // Slices another worker is packing, done after the ready ones (a long list, e.g. a rank-8 product into a 150k-word
        // vocabulary, goes on the heap rather than a worker's stack).
        Span<int> waiting = count <= 1024 ? stackalloc int[count] : new int[count];
        int mr = TK.MR, nr = TK.NR, N = s.N, K = s.K + term.Shape.K;
        t_packedA ??= GC.AllocateUninitializedArray<float>(128 * KC + 16, pinned: true);
        float* ap = PackBuffers.Aligned(t_packedA);
        float* edge = stackalloc float[mr * nr];
        for (int pc = 0; pc < K; pc += KC)
        {
            int kc = Math.Min(KC, K - pc);
            // Steps before s.K come from A, the rest from the term's A2, each into its columns of the same panels.
            int kcA = Math.Clamp(s.K - pc, 0, kc);
            if (kcA > 0) PackA(s, a, ic, mcur, pc, kcA, mr, ap, kc);
            if (kcA < kc) PackA(term.Shape, (float*)term.A, ic, mcur, pc + kcA - s.K, kc - kcA, mr, ap + kcA * mr, kc);
            bool accumulate = pc > 0 || beta != 0f;
            float blockBeta = pc > 0 ? 1f : beta;
            // Slices another worker is still packing wait until the ready ones are done (the order of slices changes
            // no result: each C tile sums over K in one order).
            // With shared counters (all of K in this one block) other workers may claim some of these slices too.
            System.Diagnostics.Debug.Assert(sliceCounters == null || kc == K, "slices are shared only when one block holds all of K");
            int waits = 0, waited = 0, claimed = 0;
            while (true)
            {
                int sl, n = claimed < count ? (sliceCounters != null ? Interlocked.Increment(ref sliceCounters[counter]) - 1 : claimed) : count;
                claimed = n + 1;
                if (n < count)
                {
                    SliceClaimed?.Invoke(s, joining);
                    sl = sl0 + (first + n) % count;
                    if (!slicesOfB.TryReady(sl)) { waiting[waits++] = sl; continue; }
                }
                else if (waited < waits) slicesOfB.WaitReady(sl = waiting[waited++]);
                else break;
                float* bslice = bp + (long)sl * nr * K + (long)pc * nr;
                int j = jc + sl * nr, cols = Math.Min(nr, jc + ncur - j);
                for (int ir = 0; ir < mcur; ir += mr)
                {
                    int rows = Math.Min(mr, mcur - ir);
                    float* ctile = c + (long)(ic + ir) * N + j;
                    if (rows == mr && cols == nr)
                    {
                        TK.Run(kc, ap + ir * kc, bslice, ctile, N, alpha, blockBeta, accumulate);
                        continue;
                    }
                    // Edge tile: full tile into scratch, then merge the valid part with the same fused multiply-add as the
                    // kernel's store, so a row's result does not depend on whether it falls in an edge panel.
                    TK.Run(kc, ap + ir * kc, bslice, edge, nr, alpha, 0f, false);
                    for (int r = 0; r < rows; r++)
                        for (int q = 0; q < cols; q++)
                            ctile[(long)r * N + q] = accumulate ? MathF.FusedMultiplyAdd(ctile[(long)r * N + q], blockBeta, edge[r * nr + q]) : edge[r * nr + q];
                }
            }
        }
    }

    /// <summary>
    /// Unpacked path for tiny and skinny products (M = 1 decoding steps, N = 1 columns): row-times-matrix
    /// as vectorized axpys over C's row when op(B) rows are contiguous, else as dot products.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Direct(GemmShape s, nint a, nint b, nint c, float alpha, float beta)
    {
        const int ColBlock = 512;
        int M = s.M, N = s.N, K = s.K, colBlocks = (N + ColBlock - 1) / ColBlock;
        long tasks = (long)s.Batch * M * colBlocks;
        long workPerTask = Math.Max(1L, (long)Math.Min(N, ColBlock) * K);
        CpuParallel.For(tasks, Math.Max(1L, (1 << 16) / workPerTask), (t0, t1) =>
        {
            float[]? gathered = null;
            for (long t = t0; t < t1; t++)
            {
                int blk = (int)(t % colBlocks), i = (int)(t / colBlocks % M), z = (int)(t / colBlocks / M);
                int j0 = blk * ColBlock, cols = Math.Min(ColBlock, N - j0);
                float* A = (float*)a + z * s.StrideA, B = (float*)b + z * s.StrideB;
                var crow = new Span<float>((float*)c + z * s.StrideC + (long)i * N + j0, cols);
                if (beta == 0f) crow.Clear();
                else if (beta != 1f) TensorPrimitives.Multiply(crow, beta, crow);
                if (!s.TransB)
                {
                    for (int p = 0; p < K; p++)
                    {
                        float ai = alpha * (s.TransA ? A[(long)p * M + i] : A[(long)i * K + p]);
                        TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(B + (long)p * N + j0, cols), ai, crow, crow);
                    }
                    continue;
                }
                ReadOnlySpan<float> arow;
                if (!s.TransA) arow = new ReadOnlySpan<float>(A + (long)i * K, K);
                else
                {
                    gathered ??= new float[K];
                    for (int p = 0; p < K; p++) gathered[p] = A[(long)p * M + i];
                    arow = gathered;
                }
                for (int q = 0; q < cols; q++)
                    crow[q] += alpha * TensorPrimitives.Dot(arow, new ReadOnlySpan<float>(B + (long)(j0 + q) * K, K));
            }
        });
    }

    static int RoundUp(int x, int m) => (x + m - 1) / m * m;

    /// <summary>
    /// How many row blocks an [M, ·] product is cut into: blocks of at most 128 rows (the packed A buffer's size), at least
    /// two per worker and a multiple of the workers when M allows, so that no thread is left a block more than the other.
    /// </summary>
    internal static int RowBlocks(int M, int mr, int workers)
    {
        int panels = (M + mr - 1) / mr, maxPanels = 128 / mr;
        int blocks = (panels + maxPanels - 1) / maxPanels;
        return workers > 1 ? Math.Min(panels, RoundUp(Math.Max(blocks, 2 * workers), workers)) : blocks;
    }

    /// <summary>
    /// Rows [ic, ic + mcur) of row block <paramref name="block"/>: whole MR panels, split as evenly as they divide (17
    /// blocks of 126 rows at M 2048, MR 6, had left one thread 9 and the other 8).
    /// </summary>
    internal static (int Start, int Rows) RowBlock(int block, int blocks, int M, int mr)
    {
        int panels = (M + mr - 1) / mr;
        int start = (int)((long)block * panels / blocks) * mr;
        return (start, Math.Min(M, (int)((long)(block + 1) * panels / blocks) * mr) - start);
    }

    /// <summary>
    /// How many column chunks a parallel product's B is cut into, each the home of ⌈workers / chunks⌉ workers: every chunk
    /// packs all of A again (one more pass over A per chunk), and the workers of one chunk share its packed B, whose slices
    /// then travel between their cores. With 2 workers, one chunk each (A packed twice, nothing shared) ran 1.03–1.24× as fast
    /// as both sharing all of B (docs/PERFORMANCE.md, 2026-12-06); ⌈√workers⌉ keeps both costs in step on larger
    /// machines (not measured: this project's hosts have 2 cores).
    /// </summary>
    internal static int ColumnChunks(int workers) => Math.Max(1, (int)Math.Ceiling(Math.Sqrt(workers)));

    internal static int PackedDepth(int l2Kilobytes) => l2Kilobytes >= 1024 ? 1024 : l2Kilobytes >= 512 ? 512 : 256;

    /// <summary>The L2 size per core from CPUID leaf 0x80000006 (ECX bits 31–16, in KB; AMD and Intel both fill it), 0 if unknown.</summary>
    static int L2Kilobytes()
    {
        if (!X86Base.IsSupported) return 0;
        if ((uint)X86Base.CpuId(unchecked((int)0x80000000), 0).Eax < 0x80000006) return 0;
        return (int)((uint)X86Base.CpuId(unchecked((int)0x80000006), 0).Ecx >> 16);
    }
}
