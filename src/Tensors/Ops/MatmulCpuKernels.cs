using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

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
