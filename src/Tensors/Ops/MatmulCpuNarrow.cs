using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanolora.Tensors;

/// <summary>
/// Products with one narrow side (at most <see cref="MaxWidth"/> wide), which a packed GEMM runs badly: its NR-column
/// slices are mostly zero padding when N is 8, and a tall reduction runs through one tile. These are LoRA's products
/// at rank r: h·Aᵀ and dy·B (N = r), dlowᵀ·h (M = r) and dyᵀ·low (N = r, reduced over all rows). Two direct kernels:
/// <list type="bullet">
/// <item>rows × narrow (op(A) row-major, N small): each row of C accumulates A[i, p]·op(B)[p, :] over p, op(B)'s rows
/// padded to one or two vectors (copied into scratch) in L1, eight or four rows of A at a time; A streams through once
/// and no horizontal sums are needed. With 512-bit vectors and N ≤ 8, dot products along K instead (<see cref="RowsDotNarrow"/>).</item>
/// <item>outer-product accumulation (op(A) = Aᵀ, B row-major, M or N small): C[i, :] += A[k, i]·B[k, :] over k, four
/// rows × sixteen columns in registers (eight × 32 with 512-bit vectors and M ≤ 8); each 16-column strip of B streams through once per four rows (from L2 after
/// the first). For N small the roles swap and the result is written transposed.</item>
/// </list>
/// Each output element is summed by one thread in a fixed order, so results do not depend on the thread count.
/// </summary>
internal static unsafe class MatmulCpuNarrow
{
    public const int MaxWidth = 16;
    const int MinDepth = 16;   // below this the products are tiny and the general paths are fine

    /// <summary>Whether a narrow path takes s.</summary>
    public static bool Applies(in GemmShape s) =>
        s.Batch == 1 && s.K >= MinDepth && (!s.TransA && s.N <= MaxWidth || s.TransA && !s.TransB && (s.M <= MaxWidth || s.N <= MaxWidth));

    /// <summary>Runs s on a narrow path and returns true, or returns false when no narrow path applies.</summary>
    public static bool TryRun(in GemmShape s, nint a, nint b, nint c, float alpha, float beta)
    {
        if (!Applies(s)) return false;
        Run(s, a, b, c, alpha, beta);
        return true;
    }

    /// <summary>Runs s, which <see cref="Applies"/> to.</summary>
    public static void Run(in GemmShape s, nint a, nint b, nint c, float alpha, float beta)
    {
        if (!s.TransA) RowsTimesNarrow(s, (float*)a, (float*)b, (float*)c, alpha, beta);
        // C[M, N] = Aᵀ·B with A [K, M], B [K, N].
        else if (s.M <= MaxWidth) OuterAccumulate((float*)a, s.M, (float*)b, s.N, s.K, (float*)c, alpha, beta, transposeOut: false);
        // Cᵀ[N, M] = Bᵀ·A: the narrow side becomes the rows, written back transposed.
        else OuterAccumulate((float*)b, s.N, (float*)a, s.M, s.K, (float*)c, alpha, beta, transposeOut: true);
    }

    /// <summary>
    /// C[M, N] = alpha·A[M, K]·op(B) + beta·C with N ≤ MaxWidth: each row of C is Σ_p A[i, p]·op(B)[p, :], with op(B)'s rows
    /// (zero-padded to 8 or 16 wide) in L1 and eight accumulators in flight, so one load of op(B)[p, :] feeds several rows.
    /// </summary>
    static void RowsTimesNarrow(GemmShape s, float* a, float* b, float* c, float alpha, float beta)
    {
        int M = s.M, N = s.N, K = s.K;
        if (Vector512.IsHardwareAccelerated && N <= 8) { RowsDotNarrow(s, a, b, c, alpha, beta); return; }
        bool wide = N > 8;
        int width = wide ? 16 : 8, rowsPerGroup = wide ? 4 : 8;
        // op(B) as K rows of `width` floats: B's rows, or B [N, K] read down its columns; the padding columns are zero.
        var scratch = PackBuffers.Rent((long)K * width);
        float* bs = PackBuffers.Aligned(scratch);
        for (int p = 0; p < K; p++)
        {
            float* row = bs + (long)p * width;
            for (int j = 0; j < N; j++) row[j] = s.TransB ? b[(long)j * K + p] : b[(long)p * N + j];
            for (int j = N; j < width; j++) row[j] = 0f;
        }
        int groups = (M + rowsPerGroup - 1) / rowsPerGroup;
        CpuParallel.For(groups, Math.Max(1, (1 << 15) / ((long)rowsPerGroup * K)), (g0, g1) =>
        {
            float* tile = stackalloc float[8 * 16];
            for (long g = g0; g < g1; g++)
            {
                int i = (int)g * rowsPerGroup, rows = Math.Min(rowsPerGroup, M - i);
                if (wide) FourRowsSixteenWide(a, i, rows, K, bs, tile);
                else EightRowsEightWide(a, i, rows, K, bs, tile);
                Write(tile, 16, i, rows, 0, N, M, N, c, alpha, beta, transposeOut: false);
            }
        });
        PackBuffers.Return(scratch);
    }

    /// <summary>
    /// RowsTimesNarrow for N ≤ 8 with 512-bit vectors: C[i, j] = Σ_p A[i, p]·op(B)[p, j] as dot products along p, sixteen
    /// p at a time, two rows of A against op(B)ᵀ's eight rows (zero rows past N) in L1. Every multiply-add fills all sixteen
    /// lanes, where broadcasting A[i, p] against an 8-wide row of op(B) filled half of a 256-bit one: half the instructions.
    /// </summary>
    static void RowsDotNarrow(GemmShape s, float* a, float* b, float* c, float alpha, float beta)
    {
        int M = s.M, N = s.N, K = s.K;
        var scratch = PackBuffers.Rent(8L * K);
        float* bt = PackBuffers.Aligned(scratch);
        for (int j = 0; j < 8; j++)
        {
            float* row = bt + (long)j * K;
            if (j >= N) new Span<float>(row, K).Clear();
            else if (s.TransB) new ReadOnlySpan<float>(b + (long)j * K, K).CopyTo(new Span<float>(row, K));
            else for (int p = 0; p < K; p++) row[p] = b[(long)p * N + j];
        }
        int pairs = (M + 1) / 2;
        CpuParallel.For(pairs, Math.Max(1, (1 << 15) / (2L * K)), (g0, g1) =>
        {
            float* sums = stackalloc float[16];
            for (long g = g0; g < g1; g++)
            {
                int i = (int)g * 2, rows = Math.Min(2, M - i);
                float* a0 = a + (long)i * K, a1 = a + (long)(i + rows - 1) * K;
                int k16 = K & ~15;
                TwoRowsDotEight(a0, a1, k16, bt, K, sums);
                for (int p = k16; p < K; p++)
                    for (int j = 0; j < 8; j++)
                    {
                        sums[j] = MathF.FusedMultiplyAdd(a0[p], bt[(long)j * K + p], sums[j]);
                        sums[8 + j] = MathF.FusedMultiplyAdd(a1[p], bt[(long)j * K + p], sums[8 + j]);
                    }
                Write(sums, 8, i, rows, 0, N, M, N, c, alpha, beta, transposeOut: false);
            }
        });
        PackBuffers.Return(scratch);
    }

    /// <summary>
    /// sums[r·8 + j] = Σ_{p &lt; k16} a_r[p]·bt[j·K + p] for rows a0, a1 and j &lt; 8 (k16 a multiple of 16): sixteen accumulators,
    /// then one reduction. The caller adds the tail: a scalar loop in here made the JIT spill half the accumulators every step.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void TwoRowsDotEight(float* a0, float* a1, int k16, float* bt, int K, float* sums)
    {
        Vector512<float> p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
        Vector512<float> q0 = default, q1 = default, q2 = default, q3 = default, q4 = default, q5 = default, q6 = default, q7 = default;
        float* b0 = bt, b1 = bt + K, b2 = bt + 2L * K, b3 = bt + 3L * K, b4 = bt + 4L * K, b5 = bt + 5L * K, b6 = bt + 6L * K, b7 = bt + 7L * K;
        for (int p = 0; p < k16; p += 16)
        {
            var x = Vector512.Load(a0 + p); var y = Vector512.Load(a1 + p);
            var w = Vector512.Load(b0 + p); p0 = Vector512.FusedMultiplyAdd(x, w, p0); q0 = Vector512.FusedMultiplyAdd(y, w, q0);
            w = Vector512.Load(b1 + p); p1 = Vector512.FusedMultiplyAdd(x, w, p1); q1 = Vector512.FusedMultiplyAdd(y, w, q1);
            w = Vector512.Load(b2 + p); p2 = Vector512.FusedMultiplyAdd(x, w, p2); q2 = Vector512.FusedMultiplyAdd(y, w, q2);
            w = Vector512.Load(b3 + p); p3 = Vector512.FusedMultiplyAdd(x, w, p3); q3 = Vector512.FusedMultiplyAdd(y, w, q3);
            w = Vector512.Load(b4 + p); p4 = Vector512.FusedMultiplyAdd(x, w, p4); q4 = Vector512.FusedMultiplyAdd(y, w, q4);
            w = Vector512.Load(b5 + p); p5 = Vector512.FusedMultiplyAdd(x, w, p5); q5 = Vector512.FusedMultiplyAdd(y, w, q5);
            w = Vector512.Load(b6 + p); p6 = Vector512.FusedMultiplyAdd(x, w, p6); q6 = Vector512.FusedMultiplyAdd(y, w, q6);
            w = Vector512.Load(b7 + p); p7 = Vector512.FusedMultiplyAdd(x, w, p7); q7 = Vector512.FusedMultiplyAdd(y, w, q7);
        }
        Sum8(p0, p1, p2, p3, p4, p5, p6, p7).Store(sums);
        Sum8(q0, q1, q2, q3, q4, q5, q6, q7).Store(sums + 8);
    }

    /// <summary>[Σ v0, …, Σ v7]: each vector's sixteen lanes summed in a fixed order (halves, then pairwise horizontal adds).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Sum8(Vector512<float> v0, Vector512<float> v1, Vector512<float> v2, Vector512<float> v3,
        Vector512<float> v4, Vector512<float> v5, Vector512<float> v6, Vector512<float> v7)
    {
        // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3, a4+a5, a6+a7, b4+b5, b6+b7]; two rounds leave each vector's two
        // 128-bit halves' sums side by side, and the last add joins the halves.
        var h01 = Avx.HorizontalAdd(v0.GetLower() + v0.GetUpper(), v1.GetLower() + v1.GetUpper());
        var h23 = Avx.HorizontalAdd(v2.GetLower() + v2.GetUpper(), v3.GetLower() + v3.GetUpper());
        var h45 = Avx.HorizontalAdd(v4.GetLower() + v4.GetUpper(), v5.GetLower() + v5.GetUpper());
        var h67 = Avx.HorizontalAdd(v6.GetLower() + v6.GetUpper(), v7.GetLower() + v7.GetUpper());
        var q0 = Avx.HorizontalAdd(h01, h23);
        var q1 = Avx.HorizontalAdd(h45, h67);
        return Avx.Permute2x128(q0, q1, 0x20) + Avx.Permute2x128(q0, q1, 0x31);
    }

    /// <summary>Row r of A (rows ≤ 8 from i; missing rows repeat the last, their sums dropped).</summary>
    static float* Row(float* a, int i, int r, int rows, int K) => a + (long)(i + Math.Min(r, rows - 1)) * K;

    /// <summary>Rows i..i+rows of A times op(B) padded to 8 columns, into tile rows of 16.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void EightRowsEightWide(float* a, int i, int rows, int K, float* bs, float* tile)
    {
        float* a0 = Row(a, i, 0, rows, K), a1 = Row(a, i, 1, rows, K), a2 = Row(a, i, 2, rows, K), a3 = Row(a, i, 3, rows, K);
        float* a4 = Row(a, i, 4, rows, K), a5 = Row(a, i, 5, rows, K), a6 = Row(a, i, 6, rows, K), a7 = Row(a, i, 7, rows, K);
        Vector256<float> t0 = default, t1 = default, t2 = default, t3 = default, t4 = default, t5 = default, t6 = default, t7 = default;
        for (int p = 0; p < K; p++)
        {
            var w = Vector256.Load(bs + (long)p * 8);
            t0 = Vector256.FusedMultiplyAdd(Vector256.Create(a0[p]), w, t0); t1 = Vector256.FusedMultiplyAdd(Vector256.Create(a1[p]), w, t1);
            t2 = Vector256.FusedMultiplyAdd(Vector256.Create(a2[p]), w, t2); t3 = Vector256.FusedMultiplyAdd(Vector256.Create(a3[p]), w, t3);
            t4 = Vector256.FusedMultiplyAdd(Vector256.Create(a4[p]), w, t4); t5 = Vector256.FusedMultiplyAdd(Vector256.Create(a5[p]), w, t5);
            t6 = Vector256.FusedMultiplyAdd(Vector256.Create(a6[p]), w, t6); t7 = Vector256.FusedMultiplyAdd(Vector256.Create(a7[p]), w, t7);
        }
        t0.Store(tile); t1.Store(tile + 16); t2.Store(tile + 32); t3.Store(tile + 48);
        t4.Store(tile + 64); t5.Store(tile + 80); t6.Store(tile + 96); t7.Store(tile + 112);
    }

    /// <summary>Rows i..i+rows (≤ 4) of A times op(B) padded to 16 columns, into tile rows of 16.</summary>
    static void FourRowsSixteenWide(float* a, int i, int rows, int K, float* bs, float* tile) =>
        FourScalarsBySixteen(Row(a, i, 0, rows, K), Row(a, i, 1, rows, K), Row(a, i, 2, rows, K), Row(a, i, 3, rows, K), 1, bs, 16, K, tile);

    /// <summary>
    /// T[i, j] = Σ_k A[k, i]·B[k, j] for A [K, m] (m ≤ MaxWidth) and B [K, n]; C = alpha·T + beta·C, or, with
    /// <paramref name="transposeOut"/>, C = alpha·Tᵀ + beta·C (C is [n, m] then).
    /// </summary>
    static void OuterAccumulate(float* a, int m, float* b, int n, int K, float* c, float alpha, float beta, bool transposeOut)
    {
        // With 512-bit vectors and m ≤ 8 (rank 8 and below), eight rows × 32 columns a strip: B streams through once.
        int strip = Vector512.IsHardwareAccelerated && m <= 8 ? 32 : 16;
        int strips = (n + strip - 1) / strip;
        CpuParallel.For(strips, Math.Max(1, (1 << 16) / ((long)strip * K * m)), (s0, s1) =>
        {
            float* tile = stackalloc float[8 * 32];
            for (long st = s0; st < s1; st++)
            {
                int j0 = (int)st * strip, end = Math.Min(n, j0 + strip);
                if (end - j0 == 32)
                {
                    EightRowsByThirtyTwo(a, m, b, n, j0, K, tile);
                    Write(tile, 32, 0, m, j0, 32, m, n, c, alpha, beta, transposeOut);
                    continue;
                }
                for (int j = j0; j < end; j += 16)
                {
                    int width = Math.Min(16, end - j);
                    for (int i = 0; i < m; i += 4)
                    {
                        int rows = Math.Min(4, m - i);
                        if (width == 16) OuterTile(a, m, i, rows, b, n, j, K, tile);
                        else NarrowStripTile(a, m, i, rows, b, n, j, width, K, tile);
                        Write(tile, 16, i, rows, j, width, m, n, c, alpha, beta, transposeOut);
                    }
                }
            }
        });
    }

    /// <summary>
    /// T's rows i..i+rows × columns j..j+width from tile (row stride <paramref name="stride"/>) into C [m, n] (or [n, m]
    /// with <paramref name="transposeOut"/>), alpha·T + beta·C; beta 0 ignores C. Inlined: the rows × narrow paths call it
    /// per row pair, and as a call it made low = h·Aᵀ 2.5× slower (`lowrank-gemm cpu`: 0.09 → 0.23 ms).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Write(float* tile, int stride, int i, int rows, int j, int width, int m, int n, float* c, float alpha, float beta, bool transposeOut)
    {
        for (int r = 0; r < rows; r++)
            for (int q = 0; q < width; q++)
            {
                float* dst = transposeOut ? c + (long)(j + q) * m + i + r : c + (long)(i + r) * n + j + q;
                *dst = alpha * tile[r * stride + q] + (beta == 0f ? 0f : beta * *dst);
            }
    }

    /// <summary>
    /// tile[r, 0..32) = Σ_k A[k, r]·B[k, j..j+32) for r &lt; 8 (A [K, m], m ≤ 8; rows past m repeat the last, unused):
    /// two B loads and eight broadcasts feed sixteen 512-bit multiply-adds per k, as in the GEMM's micro-kernel.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void EightRowsByThirtyTwo(float* a, int m, float* b, int n, int j, int K, float* tile)
    {
        float* s0 = a, s1 = a + Math.Min(1, m - 1), s2 = a + Math.Min(2, m - 1), s3 = a + Math.Min(3, m - 1);
        float* s4 = a + Math.Min(4, m - 1), s5 = a + Math.Min(5, m - 1), s6 = a + Math.Min(6, m - 1), s7 = a + Math.Min(7, m - 1);
        float* w = b + j;
        Vector512<float> x;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default;
        Vector512<float> c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (long k = 0, at = 0, wAt = 0; k < K; k++, at += m, wAt += n)
        {
            var w0 = Vector512.Load(w + wAt); var w1 = Vector512.Load(w + wAt + 16);
            x = Vector512.Create(s0[at]); c00 = Vector512.FusedMultiplyAdd(x, w0, c00); c01 = Vector512.FusedMultiplyAdd(x, w1, c01);
            x = Vector512.Create(s1[at]); c10 = Vector512.FusedMultiplyAdd(x, w0, c10); c11 = Vector512.FusedMultiplyAdd(x, w1, c11);
            x = Vector512.Create(s2[at]); c20 = Vector512.FusedMultiplyAdd(x, w0, c20); c21 = Vector512.FusedMultiplyAdd(x, w1, c21);
            x = Vector512.Create(s3[at]); c30 = Vector512.FusedMultiplyAdd(x, w0, c30); c31 = Vector512.FusedMultiplyAdd(x, w1, c31);
            x = Vector512.Create(s4[at]); c40 = Vector512.FusedMultiplyAdd(x, w0, c40); c41 = Vector512.FusedMultiplyAdd(x, w1, c41);
            x = Vector512.Create(s5[at]); c50 = Vector512.FusedMultiplyAdd(x, w0, c50); c51 = Vector512.FusedMultiplyAdd(x, w1, c51);
            x = Vector512.Create(s6[at]); c60 = Vector512.FusedMultiplyAdd(x, w0, c60); c61 = Vector512.FusedMultiplyAdd(x, w1, c61);
            x = Vector512.Create(s7[at]); c70 = Vector512.FusedMultiplyAdd(x, w0, c70); c71 = Vector512.FusedMultiplyAdd(x, w1, c71);
        }
        c00.Store(tile); c01.Store(tile + 16); c10.Store(tile + 32); c11.Store(tile + 48);
        c20.Store(tile + 64); c21.Store(tile + 80); c30.Store(tile + 96); c31.Store(tile + 112);
        c40.Store(tile + 128); c41.Store(tile + 144); c50.Store(tile + 160); c51.Store(tile + 176);
        c60.Store(tile + 192); c61.Store(tile + 208); c70.Store(tile + 224); c71.Store(tile + 240);
    }

    /// <summary>Rows i..i+rows of T (rows ≤ 4; missing rows repeat the last) × 16 columns from j, into tile [4, 16].</summary>
    static void OuterTile(float* a, int m, int i, int rows, float* b, int n, int j, int K, float* tile) =>
        FourScalarsBySixteen(a + i, a + i + Math.Min(1, rows - 1), a + i + Math.Min(2, rows - 1), a + i + Math.Min(3, rows - 1), m, b + j, n, K, tile);

    /// <summary>
    /// tile[q, 0..16) = Σ_k s_q[k·scalarStride]·w[k·wStride + 0..16) for q = 0..3: four scalar streams against one 16-wide
    /// one, eight accumulators (both narrow paths' inner loop: rows of A against op(B)'s rows, or Aᵀ's columns against B's).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void FourScalarsBySixteen(float* s0, float* s1, float* s2, float* s3, long scalarStride, float* w, long wStride, int K, float* tile)
    {
        Vector256<float> t00 = default, t01 = default, t10 = default, t11 = default, t20 = default, t21 = default, t30 = default, t31 = default;
        for (int k = 0; k < K; k++, s0 += scalarStride, s1 += scalarStride, s2 += scalarStride, s3 += scalarStride, w += wStride)
        {
            var w0 = Vector256.Load(w); var w1 = Vector256.Load(w + 8);
            var x = Vector256.Create(*s0); t00 = Vector256.FusedMultiplyAdd(x, w0, t00); t01 = Vector256.FusedMultiplyAdd(x, w1, t01);
            x = Vector256.Create(*s1); t10 = Vector256.FusedMultiplyAdd(x, w0, t10); t11 = Vector256.FusedMultiplyAdd(x, w1, t11);
            x = Vector256.Create(*s2); t20 = Vector256.FusedMultiplyAdd(x, w0, t20); t21 = Vector256.FusedMultiplyAdd(x, w1, t21);
            x = Vector256.Create(*s3); t30 = Vector256.FusedMultiplyAdd(x, w0, t30); t31 = Vector256.FusedMultiplyAdd(x, w1, t31);
        }
        t00.Store(tile); t01.Store(tile + 8); t10.Store(tile + 16); t11.Store(tile + 24);
        t20.Store(tile + 32); t21.Store(tile + 40); t30.Store(tile + 48); t31.Store(tile + 56);
    }

    /// <summary>The last strip when fewer than 16 columns are left: scalar, in the same k order.</summary>
    static void NarrowStripTile(float* a, int m, int i, int rows, float* b, int n, int j, int width, int K, float* tile)
    {
        for (int r = 0; r < rows; r++)
            for (int q = 0; q < width; q++)
            {
                float sum = 0f;
                for (int k = 0; k < K; k++) sum = MathF.FusedMultiplyAdd(a[(long)k * m + i + r], b[(long)k * n + j + q], sum);
                tile[r * 16 + q] = sum;
            }
    }
}
