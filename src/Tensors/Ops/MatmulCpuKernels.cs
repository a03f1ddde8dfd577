using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanolora.Tensors;

/// <summary>
/// One (possibly batched) product C = op(A)·op(B) over contiguous row-major buffers: op(A) is [M, K],
/// op(B) is [K, N], C is [M, N]; batch z starts at z·StrideA, z·StrideB and z·M·N (a stride of 0 shares
/// that operand across the batch).
/// </summary>
internal readonly record struct GemmShape(int Batch, int M, int N, int K, bool TransA, bool TransB, long StrideA, long StrideB)
{
    public long StrideC => (long)M * N;
}

/// <summary>
/// A second product added to a GEMM in the same pass over C: Scale·A2·op(B2), A2 row-major [M, K2] and B2 float32
/// (Shape: M and N those of the GEMM, K = K2, TransA false). Its K2 steps are packed after the GEMM's own K, so C is
/// read and written once for both (LoRA's y = x·Wᵀ + s·low·Bᵀ and dx = dy·W + dlow·A); default: none.
/// </summary>
internal readonly record struct GemmTerm(GemmShape Shape, nint A, nint B, float Scale)
{
    public bool Present => Shape.K > 0;
}

/// <summary>
/// An MR×NR register-blocked micro-kernel over packed panels: Ap holds MR rows per k step, Bp NR
/// columns per k step. Writes C = alpha·Ap·Bp + (accumulate ? beta·C : 0); C never read otherwise, so
/// uninitialized (even NaN) output buffers are fine.
/// </summary>
internal interface IMicroKernel
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    static abstract unsafe void Run(int kc, float* ap, float* bp, float* c, nint ldc, float alpha, float beta, bool accumulate);
}

/// <summary>8×32 with 16 zmm accumulators: 2 B loads and 8 broadcasts feed 16 FMAs per k step.</summary>
internal readonly struct Avx512Kernel : IMicroKernel
{
    public static int MR => 8;
    public static int NR => 32;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Run(int kc, float* ap, float* bp, float* c, nint ldc, float alpha, float beta, bool accumulate)
    {
        Vector512<float> a;
        Vector512<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector512.Load(bp + 0); var b1 = Vector512.Load(bp + 16);
            a = Vector512.Create(ap[0]); c00 = Vector512.FusedMultiplyAdd(a, b0, c00); c01 = Vector512.FusedMultiplyAdd(a, b1, c01);
            a = Vector512.Create(ap[1]); c10 = Vector512.FusedMultiplyAdd(a, b0, c10); c11 = Vector512.FusedMultiplyAdd(a, b1, c11);
            a = Vector512.Create(ap[2]); c20 = Vector512.FusedMultiplyAdd(a, b0, c20); c21 = Vector512.FusedMultiplyAdd(a, b1, c21);
            a = Vector512.Create(ap[3]); c30 = Vector512.FusedMultiplyAdd(a, b0, c30); c31 = Vector512.FusedMultiplyAdd(a, b1, c31);
            a = Vector512.Create(ap[4]); c40 = Vector512.FusedMultiplyAdd(a, b0, c40); c41 = Vector512.FusedMultiplyAdd(a, b1, c41);
            a = Vector512.Create(ap[5]); c50 = Vector512.FusedMultiplyAdd(a, b0, c50); c51 = Vector512.FusedMultiplyAdd(a, b1, c51);
            a = Vector512.Create(ap[6]); c60 = Vector512.FusedMultiplyAdd(a, b0, c60); c61 = Vector512.FusedMultiplyAdd(a, b1, c61);
            a = Vector512.Create(ap[7]); c70 = Vector512.FusedMultiplyAdd(a, b0, c70); c71 = Vector512.FusedMultiplyAdd(a, b1, c71);
            ap += 8; bp += NR;
        }
        Store(c + 0 * ldc + 0, c00, alpha, beta, accumulate); Store(c + 0 * ldc + 16, c01, alpha, beta, accumulate);
        Store(c + 1 * ldc + 0, c10, alpha, beta, accumulate); Store(c + 1 * ldc + 16, c11, alpha, beta, accumulate);
        Store(c + 2 * ldc + 0, c20, alpha, beta, accumulate); Store(c + 2 * ldc + 16, c21, alpha, beta, accumulate);
        Store(c + 3 * ldc + 0, c30, alpha, beta, accumulate); Store(c + 3 * ldc + 16, c31, alpha, beta, accumulate);
        Store(c + 4 * ldc + 0, c40, alpha, beta, accumulate); Store(c + 4 * ldc + 16, c41, alpha, beta, accumulate);
        Store(c + 5 * ldc + 0, c50, alpha, beta, accumulate); Store(c + 5 * ldc + 16, c51, alpha, beta, accumulate);
        Store(c + 6 * ldc + 0, c60, alpha, beta, accumulate); Store(c + 6 * ldc + 16, c61, alpha, beta, accumulate);
        Store(c + 7 * ldc + 0, c70, alpha, beta, accumulate); Store(c + 7 * ldc + 16, c71, alpha, beta, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store(float* c, Vector512<float> acc, float alpha, float beta, bool accumulate)
    {
        var v = acc * alpha;
        if (accumulate) v = Vector512.FusedMultiplyAdd(Vector512.Load(c), Vector512.Create(beta), v);
        v.Store(c);
    }
}

/// <summary>6×16 with 12 ymm accumulators (the classic AVX2 shape), for machines without AVX-512.</summary>
internal readonly struct Avx2Kernel : IMicroKernel
{
    public static int MR => 6;
    public static int NR => 16;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Run(int kc, float* ap, float* bp, float* c, nint ldc, float alpha, float beta, bool accumulate)
    {
        Vector256<float> a;
        Vector256<float> c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        for (int p = 0; p < kc; p++)
        {
            var b0 = Vector256.Load(bp + 0); var b1 = Vector256.Load(bp + 8);
            a = Vector256.Create(ap[0]); c00 = Vector256.FusedMultiplyAdd(a, b0, c00); c01 = Vector256.FusedMultiplyAdd(a, b1, c01);
            a = Vector256.Create(ap[1]); c10 = Vector256.FusedMultiplyAdd(a, b0, c10); c11 = Vector256.FusedMultiplyAdd(a, b1, c11);
            a = Vector256.Create(ap[2]); c20 = Vector256.FusedMultiplyAdd(a, b0, c20); c21 = Vector256.FusedMultiplyAdd(a, b1, c21);
            a = Vector256.Create(ap[3]); c30 = Vector256.FusedMultiplyAdd(a, b0, c30); c31 = Vector256.FusedMultiplyAdd(a, b1, c31);
            a = Vector256.Create(ap[4]); c40 = Vector256.FusedMultiplyAdd(a, b0, c40); c41 = Vector256.FusedMultiplyAdd(a, b1, c41);
            a = Vector256.Create(ap[5]); c50 = Vector256.FusedMultiplyAdd(a, b0, c50); c51 = Vector256.FusedMultiplyAdd(a, b1, c51);
            ap += 6; bp += NR;
        }
        Store(c + 0 * ldc + 0, c00, alpha, beta, accumulate); Store(c + 0 * ldc + 8, c01, alpha, beta, accumulate);
        Store(c + 1 * ldc + 0, c10, alpha, beta, accumulate); Store(c + 1 * ldc + 8, c11, alpha, beta, accumulate);
        Store(c + 2 * ldc + 0, c20, alpha, beta, accumulate); Store(c + 2 * ldc + 8, c21, alpha, beta, accumulate);
        Store(c + 3 * ldc + 0, c30, alpha, beta, accumulate); Store(c + 3 * ldc + 8, c31, alpha, beta, accumulate);
        Store(c + 4 * ldc + 0, c40, alpha, beta, accumulate); Store(c + 4 * ldc + 8, c41, alpha, beta, accumulate);
        Store(c + 5 * ldc + 0, c50, alpha, beta, accumulate); Store(c + 5 * ldc + 8, c51, alpha, beta, accumulate);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static unsafe void Store(float* c, Vector256<float> acc, float alpha, float beta, bool accumulate)
    {
        var v = acc * alpha;
        if (accumulate) v = Vector256.FusedMultiplyAdd(Vector256.Load(c), Vector256.Create(beta), v);
        v.Store(c);
    }
}

/// <summary>
/// The packing loops' vector paths: an 8×8 register transpose turns up to eight rows of length kc (rows of A, or the
/// columns of a transposed B) into k-major rows of a packed panel; a masked copy moves short contiguous runs (rows of a
/// transposed A). The scalar loops they replace stored one float at a time with a stride and cost 7–13 % of a training
/// step (perf, `train-step`, 2026-12-05).
/// </summary>
internal static unsafe class PackTranspose
{
    /// <summary>
    /// For p in [0, kc − kc % 8): dst[p·dstStride + i] = src[i·lda + p] for lanes i &lt; width, with rows at or beyond
    /// <paramref name="rows"/> read as zero. Returns the count of p done; the caller finishes the rest.
    /// </summary>
    public static int Panel8(float* src, nint lda, int rows, int kc, int width, nint dstStride, float* dst) =>
        Panel8<FloatRows>((byte*)src, lda * sizeof(float), sizeof(float), rows, kc, width, dstStride, dst);

    /// <summary>The same from bfloat16 bits (a frozen 16-bit weight), widened exactly (bits « 16) as they are loaded; needs AVX2.</summary>
    public static int Panel8(ushort* src, nint lda, int rows, int kc, int width, nint dstStride, float* dst) =>
        Panel8<BFloat16Rows>((byte*)src, lda * sizeof(ushort), sizeof(ushort), rows, kc, width, dstStride, dst);

    interface IRowLoad { static abstract Vector256<float> Load(byte* p); }
    readonly struct FloatRows : IRowLoad { public static Vector256<float> Load(byte* p) => Avx.LoadVector256((float*)p); }
    readonly struct BFloat16Rows : IRowLoad
    {
        public static Vector256<float> Load(byte* p) => Avx2.ShiftLeftLogical(Avx2.ConvertToVector256Int32((ushort*)p), 16).AsSingle();
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static int Panel8<TRows>(byte* src, nint ldaBytes, int elementBytes, int rows, int kc, int width, nint dstStride, float* dst)
        where TRows : struct, IRowLoad
    {
        int full = kc & ~7;
        var mask = Lanes(width);
        for (int p = 0; p < full; p += 8)
        {
            byte* s = src + (nint)p * elementBytes;
            Transpose(rows > 0 ? TRows.Load(s) : default, rows > 1 ? TRows.Load(s + ldaBytes) : default,
                rows > 2 ? TRows.Load(s + 2 * ldaBytes) : default, rows > 3 ? TRows.Load(s + 3 * ldaBytes) : default,
                rows > 4 ? TRows.Load(s + 4 * ldaBytes) : default, rows > 5 ? TRows.Load(s + 5 * ldaBytes) : default,
                rows > 6 ? TRows.Load(s + 6 * ldaBytes) : default, rows > 7 ? TRows.Load(s + 7 * ldaBytes) : default,
                dst + p * dstStride, dstStride, mask, width);
        }
        return full;
    }

    /// <summary>Row i of the input is column i of the output: output row j (r0[j] … r7[j]) goes to d + j·stride.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Transpose(Vector256<float> r0, Vector256<float> r1, Vector256<float> r2, Vector256<float> r3,
        Vector256<float> r4, Vector256<float> r5, Vector256<float> r6, Vector256<float> r7, float* d, nint stride, Vector256<float> mask, int width)
    {
        var t0 = Avx.UnpackLow(r0, r1); var t1 = Avx.UnpackHigh(r0, r1);
        var t2 = Avx.UnpackLow(r2, r3); var t3 = Avx.UnpackHigh(r2, r3);
        var t4 = Avx.UnpackLow(r4, r5); var t5 = Avx.UnpackHigh(r4, r5);
        var t6 = Avx.UnpackLow(r6, r7); var t7 = Avx.UnpackHigh(r6, r7);
        var s0 = Avx.Shuffle(t0, t2, 0x44); var s1 = Avx.Shuffle(t0, t2, 0xEE);
        var s2 = Avx.Shuffle(t1, t3, 0x44); var s3 = Avx.Shuffle(t1, t3, 0xEE);
        var s4 = Avx.Shuffle(t4, t6, 0x44); var s5 = Avx.Shuffle(t4, t6, 0xEE);
        var s6 = Avx.Shuffle(t5, t7, 0x44); var s7 = Avx.Shuffle(t5, t7, 0xEE);
        Store(d, Avx.Permute2x128(s0, s4, 0x20), mask, width);
        Store(d + stride, Avx.Permute2x128(s1, s5, 0x20), mask, width);
        Store(d + 2 * stride, Avx.Permute2x128(s2, s6, 0x20), mask, width);
        Store(d + 3 * stride, Avx.Permute2x128(s3, s7, 0x20), mask, width);
        Store(d + 4 * stride, Avx.Permute2x128(s0, s4, 0x31), mask, width);
        Store(d + 5 * stride, Avx.Permute2x128(s1, s5, 0x31), mask, width);
        Store(d + 6 * stride, Avx.Permute2x128(s2, s6, 0x31), mask, width);
        Store(d + 7 * stride, Avx.Permute2x128(s3, s7, 0x31), mask, width);
    }

    /// <summary>For p in [0, count): dst[p·width + i] = src[p·lda + i] for i &lt; rows, zero for rows ≤ i &lt; width (≤ 8).</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Runs(float* src, nint lda, int rows, int count, int width, float* dst)
    {
        var load = Lanes(rows);
        var store = Lanes(width);
        for (int p = 0; p < count; p++)
            Store(dst + p * width, Avx.MaskLoad(src + p * lda, load), store, width);
    }

    static Vector256<float> Lanes(int n) =>
        n >= 8 ? Vector256<float>.AllBitsSet : Vector256.LessThan(Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7), Vector256.Create(n)).AsSingle();

    // A plain store for eight lanes, a masked one (lanes ≥ width untouched) below that.
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void Store(float* d, Vector256<float> v, Vector256<float> mask, int width)
    {
        if (width == 8) Avx.Store(d, v);
        else Avx.MaskStore(d, mask, v);
    }
}
