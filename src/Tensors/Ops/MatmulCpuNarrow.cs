using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>
/// Products with one narrow side (at most <see cref="MaxWidth"/> wide), which a packed GEMM runs badly: its NR-column
/// slices are mostly zero padding when N is 8, and a tall reduction runs through one tile. These are LoRA's products
/// at rank r: h·Aᵀ and dy·B (N = r), dlowᵀ·h (M = r) and dyᵀ·low (N = r, reduced over all rows). Two direct kernels:
/// <list type="bullet">
/// <item>rows × narrow (op(A) row-major, N small): each output is a dot product over K, two rows × four columns at a time
/// with the K axis in vectors; A streams through once, op(B) (N×K, transposed into scratch when needed) stays in L1.</item>
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

    /// <summary>C[M, N] = alpha·A[M, K]·op(B) + beta·C with N ≤ MaxWidth, as dot products of A's rows with op(B)'s columns.</summary>
    static void RowsTimesNarrow(GemmShape s, float* a, float* b, float* c, float alpha, float beta)
    {
        int M = s.M, N = s.N, K = s.K;
        // op(B)'s columns as contiguous rows: B itself when transposed ([N, K]), else a transposed copy.
        float[]? scratch = null;
        float* bt = b;
        if (!s.TransB)
        {
            scratch = PackBuffers.Rent((long)N * K);
            bt = PackBuffers.Aligned(scratch);
            for (int p = 0; p < K; p++)
                for (int j = 0; j < N; j++) bt[(long)j * K + p] = b[(long)p * N + j];
        }
        int pairs = (M + 1) / 2;
        CpuParallel.For(pairs, Math.Max(1, (1 << 16) / ((long)N * K)), (p0, p1) =>
        {
            for (long pair = p0; pair < p1; pair++)
            {
                int i = (int)pair * 2;
                bool two = i + 1 < M;
                float* a0 = a + (long)i * K, a1 = two ? a0 + K : a0;
                for (int j = 0; j < N; j += 4)
                    DotTile(a0, a1, bt, j, Math.Min(4, N - j), K, c + (long)i * N + j, two ? c + (long)(i + 1) * N + j : null, alpha, beta);
            }
        });
        if (scratch != null) PackBuffers.Return(scratch);
    }

    /// <summary>Two rows (a1 may repeat a0; then c1 is null) × up to four columns of Bt, summed over K.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void DotTile(float* a0, float* a1, float* bt, int j, int cols, int K, float* c0, float* c1, float alpha, float beta)
    {
        // Missing columns repeat the last one; their sums are computed and dropped.
        float* b0 = bt + (long)j * K, b1 = bt + (long)(j + Math.Min(1, cols - 1)) * K;
        float* b2 = bt + (long)(j + Math.Min(2, cols - 1)) * K, b3 = bt + (long)(j + Math.Min(3, cols - 1)) * K;
        Vector256<float> s00 = default, s01 = default, s02 = default, s03 = default, s10 = default, s11 = default, s12 = default, s13 = default;
        int p = 0;
        for (; p <= K - 8; p += 8)
        {
            var x0 = Vector256.Load(a0 + p); var x1 = Vector256.Load(a1 + p);
            var w = Vector256.Load(b0 + p); s00 = Vector256.FusedMultiplyAdd(x0, w, s00); s10 = Vector256.FusedMultiplyAdd(x1, w, s10);
            w = Vector256.Load(b1 + p); s01 = Vector256.FusedMultiplyAdd(x0, w, s01); s11 = Vector256.FusedMultiplyAdd(x1, w, s11);
            w = Vector256.Load(b2 + p); s02 = Vector256.FusedMultiplyAdd(x0, w, s02); s12 = Vector256.FusedMultiplyAdd(x1, w, s12);
            w = Vector256.Load(b3 + p); s03 = Vector256.FusedMultiplyAdd(x0, w, s03); s13 = Vector256.FusedMultiplyAdd(x1, w, s13);
        }
        Span<float> sums = stackalloc float[8];
        sums[0] = Vector256.Sum(s00); sums[1] = Vector256.Sum(s01); sums[2] = Vector256.Sum(s02); sums[3] = Vector256.Sum(s03);
        sums[4] = Vector256.Sum(s10); sums[5] = Vector256.Sum(s11); sums[6] = Vector256.Sum(s12); sums[7] = Vector256.Sum(s13);
        for (; p < K; p++)
        {
            sums[0] += a0[p] * b0[p]; sums[1] += a0[p] * b1[p]; sums[2] += a0[p] * b2[p]; sums[3] += a0[p] * b3[p];
            sums[4] += a1[p] * b0[p]; sums[5] += a1[p] * b1[p]; sums[6] += a1[p] * b2[p]; sums[7] += a1[p] * b3[p];
        }
        for (int q = 0; q < cols; q++)
        {
            c0[q] = alpha * sums[q] + (beta == 0f ? 0f : beta * c0[q]);
            if (c1 != null) c1[q] = alpha * sums[4 + q] + (beta == 0f ? 0f : beta * c1[q]);
        }
    }

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
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void OuterTile(float* a, int m, int i, int rows, float* b, int n, int j, int K, float* tile)
    {
        int i1 = i + Math.Min(1, rows - 1), i2 = i + Math.Min(2, rows - 1), i3 = i + Math.Min(3, rows - 1);
        Vector256<float> t00 = default, t01 = default, t10 = default, t11 = default, t20 = default, t21 = default, t30 = default, t31 = default;
        float* ak = a, bk = b + j;
        for (int k = 0; k < K; k++, ak += m, bk += n)
        {
            var w0 = Vector256.Load(bk); var w1 = Vector256.Load(bk + 8);
            var x = Vector256.Create(ak[i]); t00 = Vector256.FusedMultiplyAdd(x, w0, t00); t01 = Vector256.FusedMultiplyAdd(x, w1, t01);
            x = Vector256.Create(ak[i1]); t10 = Vector256.FusedMultiplyAdd(x, w0, t10); t11 = Vector256.FusedMultiplyAdd(x, w1, t11);
            x = Vector256.Create(ak[i2]); t20 = Vector256.FusedMultiplyAdd(x, w0, t20); t21 = Vector256.FusedMultiplyAdd(x, w1, t21);
            x = Vector256.Create(ak[i3]); t30 = Vector256.FusedMultiplyAdd(x, w0, t30); t31 = Vector256.FusedMultiplyAdd(x, w1, t31);
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
