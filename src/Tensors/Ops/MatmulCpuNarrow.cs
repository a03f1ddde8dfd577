using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>
/// Products with one narrow side (at most <see cref="MaxWidth"/> wide), which a packed GEMM runs badly: its NR-column
/// slices are mostly zero padding when N is 8, and a tall reduction runs through one tile. These are LoRA's products
/// at rank r: h·Aᵀ and dy·B (N = r), dlowᵀ·h (M = r) and dyᵀ·low (N = r, reduced over all rows). Two direct kernels:
/// <list type="bullet">
/// <item>rows × narrow (op(A) row-major, N small): each row of C accumulates A[i, p]·op(B)[p, :] over p, op(B)'s rows
/// padded to one or two vectors (copied into scratch) in L1, eight or four rows of A at a time; A streams through once
/// and no horizontal sums are needed.</item>
/// <item>outer-product accumulation (op(A) = Aᵀ, B row-major, M or N small): C[i, :] += A[k, i]·B[k, :] over k, four
/// rows × sixteen columns in registers; each 16-column strip of B streams through once per four rows (from L2 after
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
                for (int r = 0; r < rows; r++)
                {
                    float* dst = c + (long)(i + r) * N;
                    for (int j = 0; j < N; j++) dst[j] = alpha * tile[r * 16 + j] + (beta == 0f ? 0f : beta * dst[j]);
                }
            }
        });
        PackBuffers.Return(scratch);
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
        const int Strip = 16;
        int strips = (n + Strip - 1) / Strip;
        CpuParallel.For(strips, Math.Max(1, (1 << 16) / ((long)Strip * K * m)), (s0, s1) =>
        {
            float* tile = stackalloc float[4 * Strip];
            for (long st = s0; st < s1; st++)
            {
                int j = (int)st * Strip, width = Math.Min(Strip, n - j);
                for (int i = 0; i < m; i += 4)
                {
                    int rows = Math.Min(4, m - i);
                    if (width == Strip) OuterTile(a, m, i, rows, b, n, j, K, tile);
                    else NarrowStripTile(a, m, i, rows, b, n, j, width, K, tile);
                    for (int r = 0; r < rows; r++)
                        for (int q = 0; q < width; q++)
                        {
                            float* dst = transposeOut ? c + (long)(j + q) * m + i + r : c + (long)(i + r) * n + j + q;
                            *dst = alpha * tile[r * Strip + q] + (beta == 0f ? 0f : beta * *dst);
                        }
                }
            }
        });
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
