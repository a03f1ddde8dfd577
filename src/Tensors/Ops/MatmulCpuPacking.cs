using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanolora.Tensors;

// The cpu GEMM's packing: A into MR-row panels, B into K×NR slices (each packed by the first task that needs it).
internal static unsafe partial class MatmulCpu
{
    /// <summary>op(A)[ic.., pc..pc+kc) into MR-row panels (panel of row ir at ir·panelDepth), zero-padded to MR rows.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void PackA(in GemmShape s, float* a, int ic, int mcur, int pc, int kc, int mr, float* dst, int panelDepth)
    {
        for (int ir = 0; ir < mcur; ir += mr)
        {
            float* d = dst + ir * panelDepth;
            int rows = Math.Min(mr, mcur - ir);
            if (!s.TransA)
            {
                // Rows of A become columns of the panel: 8×8 transposes in registers, then the scalar remainder.
                int p0 = Avx.IsSupported && mr <= 8 ? PackTranspose.Panel8(a + (long)(ic + ir) * s.K + pc, s.K, rows, kc, mr, mr, d) : 0;
                for (int i = 0; i < rows; i++)
                {
                    float* src = a + (long)(ic + ir + i) * s.K + pc;
                    for (int p = p0; p < kc; p++) d[p * mr + i] = src[p];
                }
                for (int i = rows; i < mr; i++)
                    for (int p = p0; p < kc; p++) d[p * mr + i] = 0f;
            }
            else if (Avx.IsSupported && mr <= 8) PackTranspose.Runs(a + (long)pc * s.M + ic + ir, s.M, rows, kc, mr, d);
            else
            {
                for (int p = 0; p < kc; p++)
                {
                    float* src = a + (long)(pc + p) * s.M + ic + ir;
                    float* row = d + p * mr;
                    for (int i = 0; i < rows; i++) row[i] = src[i];
                    for (int i = rows; i < mr; i++) row[i] = 0f;
                }
            }
        }
    }

    /// <summary>
    /// Columns [j, j+cols) of op(B), all of K, as one K×NR slice, zero-padded to NR columns; B in float32, or in bfloat16
    /// bits (a frozen weight, <typeparamref name="T"/> ushort) widened exactly as they are packed. The element type is a
    /// constant to the JIT, so each instantiation keeps only its own branch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void PackB<T>(in GemmShape s, T* b, int j, int cols, int nr, float* dst) where T : unmanaged
    {
        System.Diagnostics.Debug.Assert(typeof(T) == typeof(float) || typeof(T) == typeof(ushort), "B is float32 or bfloat16 bits");
        if (!s.TransB)
        {
            if (typeof(T) == typeof(float) && cols == nr && (nr == 32 || nr == 16))
            {
                // Whole rows of a slice (the two kernels' NR) as 256-bit copies in the loop itself: a memmove call per 64- or
                // 128-byte row cost more than the copy (3–5 % of a 1024³ product's samples, perf).
                float* src = (float*)b + j;
                long ld = s.N;
                if (nr == 32)
                    for (int p = 0; p < s.K; p++, src += ld, dst += 32)
                    {
                        Vector256.Load(src).Store(dst); Vector256.Load(src + 8).Store(dst + 8);
                        Vector256.Load(src + 16).Store(dst + 16); Vector256.Load(src + 24).Store(dst + 24);
                    }
                else
                    for (int p = 0; p < s.K; p++, src += ld, dst += 16)
                    {
                        Vector256.Load(src).Store(dst); Vector256.Load(src + 8).Store(dst + 8);
                    }
                return;
            }
            for (int p = 0; p < s.K; p++)
            {
                T* src = b + (long)p * s.N + j;
                float* d = dst + (long)p * nr;
                if (cols == nr)
                {
                    if (typeof(T) == typeof(float)) Unsafe.CopyBlockUnaligned(d, src, (uint)(nr * sizeof(float)));
                    else BFloat16.Widen(new ReadOnlySpan<ushort>(src, nr), new Span<float>(d, nr));
                }
                else
                {
                    for (int q = 0; q < cols; q++) d[q] = Widen(src + q);
                    for (int q = cols; q < nr; q++) d[q] = 0f;
                }
            }
        }
        else
        {
            // Columns of op(B) are rows of B: transposed eight at a time (columns up to the next multiple of 8 zeroed).
            int p0 = 0;
            if (typeof(T) == typeof(float) ? Avx.IsSupported : Avx2.IsSupported)
                for (int q0 = 0; q0 < cols; q0 += 8)
                {
                    T* rows = b + (long)(j + q0) * s.K;
                    int count = Math.Min(8, cols - q0);
                    p0 = typeof(T) == typeof(float)
                        ? PackTranspose.Panel8((float*)rows, s.K, count, s.K, 8, nr, dst + q0)
                        : PackTranspose.Panel8((ushort*)rows, s.K, count, s.K, 8, nr, dst + q0);
                }
            for (int q = 0; q < cols; q++)
            {
                T* src = b + (long)(j + q) * s.K;
                for (int p = p0; p < s.K; p++) dst[(long)p * nr + q] = Widen(src + p);
            }
            for (int q = cols; q < nr; q++)
                for (int p = 0; p < s.K; p++) dst[(long)p * nr + q] = 0f;
        }
    }

    /// <summary>One element of B as float32: itself, or bfloat16 bits widened.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float Widen<T>(T* x) where T : unmanaged => typeof(T) == typeof(float) ? *(float*)x : BFloat16.Widen(*(ushort*)x);

    /// <summary>A term's op(B2) columns [j, j+cols), its K2 steps, as the tail of a K×NR slice, multiplied by its scale.</summary>
    internal static void PackTermB(in GemmTerm term, int j, int cols, int nr, float* dst)
    {
        PackB(term.Shape, (float*)term.B, j, cols, nr, dst);
        if (term.Scale != 1f)
        {
            var packed = new Span<float>(dst, term.Shape.K * nr);
            TensorPrimitives.Multiply(packed, term.Scale, packed);
        }
    }

}

/// <summary>
/// The packed K×NR slices of op(B) for one column pass of a product. A slice is packed by the first task that needs it
/// (state 0 → 1 while packing → 2 ready, or 3 if packing failed), so no pass waits for all of B before computing and a
/// slice is used while it is still in the packing core's cache.
/// </summary>
internal sealed unsafe class BSlices
{
    const int Unpacked = 0, Packing = 1, Ready = 2, Failed = 3;
    // One instance per thread, set anew for each column pass that thread starts: attention's heads are many small products
    // a call, and none allocates. A pass started while the thread's instance is still in use (not expected: a thread's
    // pass ends before it starts another) gets one of its own.
    [ThreadStatic] static BSlices? t_current;
    bool _inUse;
    GemmShape s;
    GemmTerm term;
    nint b;
    bool bf16B;
    int jc, nr;
    float* packed;
    int[] _state = [];
    public float* Packed => packed;

    /// <summary>The calling thread's instance, every slice of the pass unpacked, B's <paramref name="count"/> slices of columns from <paramref name="jc"/> going to <paramref name="packed"/>.</summary>
    public static BSlices ForPass(in GemmShape s, nint b, bool bf16B, in GemmTerm term, int jc, int nr, float* packed, int count)
    {
        var x = t_current ??= new BSlices();
        if (x._inUse) x = new BSlices();
        x._inUse = true;
        x.s = s; x.b = b; x.bf16B = bf16B; x.term = term; x.jc = jc; x.nr = nr; x.packed = packed;
        if (x._state.Length < count) x._state = new int[count];
        else Array.Clear(x._state, 0, count);
        return x;
    }

    /// <summary>Ends the pass: its tasks are done, the thread may set the instance for its next one.</summary>
    public void EndPass() => _inUse = false;

    /// <summary>True when slice <paramref name="sl"/> is ready, packing it here if nobody has started; false while another thread packs it.</summary>
    public bool TryReady(int sl)
    {
        int state = Volatile.Read(ref _state[sl]);
        if (state == Ready) return true;
        if (state == Unpacked && Interlocked.CompareExchange(ref _state[sl], Packing, Unpacked) == Unpacked)
        {
            try
            {
                int K = s.K + term.Shape.K, j = jc + sl * nr, cols = Math.Min(nr, s.N - j);
                float* slice = packed + (long)sl * nr * K;
                if (bf16B) MatmulCpu.PackB(s, (ushort*)b, j, cols, nr, slice);
                else MatmulCpu.PackB(s, (float*)b, j, cols, nr, slice);
                if (term.Present) MatmulCpu.PackTermB(term, j, cols, nr, slice + (long)s.K * nr);
            }
            catch
            {
                Volatile.Write(ref _state[sl], Failed);
                throw;
            }
            // A full fence, not a plain release: scaling a long term tail (TensorPrimitives) may use non-temporal stores,
            // which a plain store does not order.
            Interlocked.Exchange(ref _state[sl], Ready);
            return true;
        }
        return Check(Volatile.Read(ref _state[sl])) == Ready;
    }

    /// <summary>Waits while another thread packs slice <paramref name="sl"/>.</summary>
    public void WaitReady(int sl)
    {
        var wait = new SpinWait();
        while (Check(Volatile.Read(ref _state[sl])) != Ready) wait.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>A slice whose packing failed is never computed from: the task stops here, the packer's exception is the one reported.</summary>
    static int Check(int state) =>
        state == Failed ? throw new InvalidOperationException("GEMM: another task failed while packing a slice of B.") : state;
}
