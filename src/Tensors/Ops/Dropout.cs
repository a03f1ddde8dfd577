using ILGPU;
using ILGPU.Runtime;
using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>
/// Dropout's launch parameters: the hash key of the seed, the drop threshold on 24-bit draws, the keep scale, and the index
/// the tensor's first element has in the mask (non-zero for a row block of a larger tensor, which then draws that tensor's mask).
/// </summary>
internal readonly struct DropoutParams(int n, ulong key, int threshold, float scale, int relu, long first = 0)
{
    public readonly int N = n, Threshold = threshold, Relu = relu;
    public readonly ulong Key = key;
    public readonly float Scale = scale;
    public readonly long First = first;

    /// <summary>Element i is kept when the 24-bit draw of its mask index is ≥ round(p·2^24): an integer test, identical everywhere.</summary>
    public float MaskAt(int i) => CounterHash.Bits24(Key, (ulong)(First + i)) >= Threshold ? Scale : 0f;
}

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>> DropoutKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>(DropoutGpu));

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>> DropoutAddKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>(DropoutAddGpu));

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>> DropoutBackwardKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>(DropoutBackwardGpu));

    static void DropoutBackwardGpu(Index1D index, ArrayView<float> dy, ArrayView<float> y, ArrayView<float> dx, DropoutParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            float m = p.Relu != 0 ? (y[i] > 0f ? p.Scale : 0f) : p.MaskAt(i);
            dx[i] = dy[i] * m;
        }
    }

    static void DropoutAddGpu(Index1D index, ArrayView<float> residual, ArrayView<float> x, ArrayView<float> y, ArrayView<float> mask, DropoutParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            float m = p.MaskAt(i);
            if (mask.Length > 0) mask[i] = m;
            float dropped = x[i] * m;
            y[i] = residual[i] + dropped;
        }
    }

    static void DropoutGpu(Index1D index, ArrayView<float> x, ArrayView<float> y, ArrayView<float> mask, DropoutParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            float m = p.MaskAt(i), v = x[i];
            if (p.Relu != 0 && !(v > 0f)) m = 0f;
            if (mask.Length > 0) mask[i] = m;
            y[i] = p.Relu != 0 && !(v > 0f) ? 0f : v * m;
        }
    }

    /// <summary>
    /// Inverted dropout: each element is zeroed with probability <paramref name="p"/>, the rest scaled by
    /// 1/(1−p). The mask (0 or 1/(1−p)) comes from a counter-based hash of (seed, element index), so cpu
    /// and every GPU draw the same mask, and backward draws it again (<see cref="DropoutBackward"/>) instead of keeping
    /// it. This overload also writes the mask out. p = 0 gives a copy and a mask of ones.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, ulong seed, out Tensor mask) => Dropout(nameof(Dropout), x, p, seed, false, null, true, out mask!);

    /// <summary>Dropout without writing the mask (backward: <see cref="DropoutBackward"/> with the same p and seed).</summary>
    public static Tensor Dropout(Tensor x, float p, ulong seed) => Dropout(nameof(Dropout), x, p, seed, false, null, false, out _);

    /// <summary>
    /// residual + Dropout(x) in one pass, the same values as the two ops with this seed (a residual connection's
    /// sublayer output): x and the residual are read once and the sum written once, with no dropped copy in between.
    /// (A GPU compiler may fuse the kernel's multiply and add into one rounding: then within an ulp of the two ops.)
    /// Backward: the residual gets dy, x gets Mul(dy, mask) (<see cref="DropoutBackward"/>).
    /// </summary>
    public static Tensor DropoutAdd(Tensor residual, Tensor x, float p, ulong seed, out Tensor mask)
    {
        SameShape(nameof(DropoutAdd), residual, x);
        return Dropout(nameof(DropoutAdd), x, p, seed, false, residual, true, out mask!);
    }

    /// <summary><see cref="DropoutAdd(Tensor, Tensor, float, ulong, out Tensor)"/> without writing the mask.</summary>
    public static Tensor DropoutAdd(Tensor residual, Tensor x, float p, ulong seed)
    {
        SameShape(nameof(DropoutAdd), residual, x);
        return Dropout(nameof(DropoutAdd), x, p, seed, false, residual, false, out _);
    }

    /// <summary>
    /// Dropout(Relu(x)) in one pass, the same values as the two ops with this seed. The mask it returns already holds
    /// ReLU's derivative (0 where x ≤ 0), so the backward of both is Mul(dy, mask) and x itself need not be kept. A
    /// feed-forward block's hidden layer, the widest activation, is read and written once each way instead of twice.
    /// </summary>
    public static Tensor ReluDropout(Tensor x, float p, ulong seed, out Tensor mask) => Dropout(nameof(ReluDropout), x, p, seed, true, null, true, out mask!);

    /// <summary>ReluDropout without writing the mask: its output holds it (backward: <see cref="ReluDropoutBackward"/>).</summary>
    /// <param name="x">The input.</param>
    /// <param name="p">The dropout rate.</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="output">Where to write: x itself for in place (each element is read, then written), or a new tensor when null.</param>
    /// <param name="maskOffset">The mask index of x's first element: x is rows of a larger tensor starting at that element,
    /// and gets the part of that tensor's mask (a feed-forward's hidden layer made a row block at a time).</param>
    public static Tensor ReluDropout(Tensor x, float p, ulong seed, Tensor? output = null, long maskOffset = 0) =>
        Dropout(nameof(ReluDropout), x, p, seed, true, null, false, out _, output, maskOffset);

    /// <summary>
    /// dy ⊙ mask for <see cref="Dropout(Tensor, float, ulong)"/> (and the x of DropoutAdd) with this p and seed, the mask
    /// drawn again from the hash: the same numbers as Mul(dy, mask) with the mask the forward would have written, which
    /// then need not be kept (4 bytes an element of every dropout).
    /// </summary>
    /// <param name="dy">The gradient of the dropout's output.</param>
    /// <param name="p">The forward's rate.</param>
    /// <param name="seed">The forward's seed.</param>
    /// <param name="output">Where to write (dy itself for in place, as a rule that owns dy may); a new tensor when null.</param>
    public static Tensor DropoutBackward(Tensor dy, float p, ulong seed, Tensor? output = null) => Backward(nameof(DropoutBackward), dy, null, p, seed, output);

    /// <summary>
    /// dy ⊙ mask for <see cref="ReluDropout(Tensor, float, ulong, Tensor, long)"/>, read off its output <paramref name="y"/>: the mask is
    /// 1/(1 − p) where y &gt; 0 (x &gt; 0 and kept) and 0 elsewhere, NaN included, so Mul(dy, mask) to the bit without the
    /// mask. (A GPU compiler that flushes subnormals may round a kept subnormal x·1/(1 − p) to 0 forward; that element then
    /// gets 0 here where the written mask held 1/(1 − p).)
    /// </summary>
    /// <param name="dy">The gradient of the output.</param>
    /// <param name="y">The forward's output.</param>
    /// <param name="p">The forward's rate.</param>
    /// <param name="output">Where to write (dy itself for in place); a new tensor when null.</param>
    public static Tensor ReluDropoutBackward(Tensor dy, Tensor y, float p, Tensor? output = null)
    {
        SameShape(nameof(ReluDropoutBackward), dy, y);
        return Backward(nameof(ReluDropoutBackward), dy, y, p, 0, output);
    }

    /// <summary>The value a kept element is multiplied by, 1/(1 − p) (0 at p = 1), exactly as every dropout op computes it.</summary>
    public static float DropoutKeepScale(float p) => p == 1f ? 0f : (float)(1.0 / (1.0 - p));

    static DropoutParams Params(string op, int n, float p, ulong seed, bool relu, long first = 0)
    {
        if (!(p >= 0f && p <= 1f)) throw new ArgumentException($"{op}: p must be in [0, 1], got {p}.");
        if (first < 0) throw new ArgumentException($"{op}: the mask offset must be ≥ 0, got {first}.");
        return new DropoutParams(n, CounterHash.Key(seed), (int)Math.Round(p * (double)(1 << 24)), DropoutKeepScale(p), relu ? 1 : 0, first);
    }

    /// <summary>16 masks a step: two 8-lane hashes narrowed to 32 bits, compared with the threshold, selected to scale or 0.</summary>
    internal static Vector512<float> Mask16(in DropoutParams prm, int i) =>
        Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(
            Vector512.Narrow(CounterHash.Bits24x8(prm.Key, (ulong)(prm.First + i)), CounterHash.Bits24x8(prm.Key, (ulong)(prm.First + i) + 8)).AsInt32(),
            Vector512.Create(prm.Threshold)).AsSingle(), Vector512.Create(prm.Scale), Vector512<float>.Zero);

    /// <summary>8 masks a step on AVX2, as <see cref="Mask16"/> does 16 on AVX-512: the same bits.</summary>
    internal static Vector256<float> Mask8(in DropoutParams prm, int i) =>
        Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(
            Vector256.Narrow(CounterHash.Bits24x4(prm.Key, (ulong)(prm.First + i)), CounterHash.Bits24x4(prm.Key, (ulong)(prm.First + i) + 4)).AsInt32(),
            Vector256.Create(prm.Threshold)).AsSingle(), Vector256.Create(prm.Scale), Vector256<float>.Zero);

    static Tensor Backward(string op, Tensor dy, Tensor? y, float p, ulong seed, Tensor? output)
    {
        var device = y is null ? SameDevice(op, dy) : SameDevice(op, dy, y);
        if (output != null) { SameDevice(op, dy, output); SameShape(op, dy, output); }
        int n = GpuLength(dy, op);
        var prm = Params(op, n, p, seed, y != null);
        // Element i reads dy[i] and writes dx[i] only, so dx may be dy itself.
        var dx = output ?? Tensor.Empty(dy.Shape, device);
        if (n == 0) return dx;
        if (device is IlgpuDevice gpu)
        {
            DropoutBackwardKernel.On(gpu)(LaunchThreads(gpu, n), dy.View, y?.View ?? dy.View, dx.View, prm);
            return dx;
        }
        var gs = dy.HostArray; var ys = y?.HostArray; var ds = dx.HostArray;
        bool vectorized = Vector512.IsHardwareAccelerated;
        CpuParallel.For(n, 1 << 14, (start, end) =>
        {
            int i = (int)start;
            if (vectorized)
                for (; i <= end - 16; i += 16)
                {
                    var m = ys != null
                        ? Vector512.ConditionalSelect(Vector512.GreaterThan(Vector512.LoadUnsafe(ref ys[i]), Vector512<float>.Zero), Vector512.Create(prm.Scale), Vector512<float>.Zero)
                        : Mask16(prm, i);
                    (Vector512.LoadUnsafe(ref gs[i]) * m).StoreUnsafe(ref ds[i]);
                }
            else if (Vector256.IsHardwareAccelerated)
                for (; i <= end - 8; i += 8)
                {
                    // ReLU-dropout's mask is read off y; plain dropout's hash runs eight lanes at a time.
                    var m = ys != null
                        ? Vector256.ConditionalSelect(Vector256.GreaterThan(Vector256.LoadUnsafe(ref ys[i]), Vector256<float>.Zero), Vector256.Create(prm.Scale), Vector256<float>.Zero)
                        : Mask8(prm, i);
                    (Vector256.LoadUnsafe(ref gs[i]) * m).StoreUnsafe(ref ds[i]);
                }
            for (; i < end; i++) ds[i] = gs[i] * (ys != null ? (ys[i] > 0f ? prm.Scale : 0f) : prm.MaskAt(i));
        });
        return dx;
    }

    static Tensor Dropout(string op, Tensor x, float p, ulong seed, bool relu, Tensor? residual, bool keepMask, out Tensor? mask, Tensor? output = null,
        long maskOffset = 0)
    {
        var device = residual is null ? SameDevice(op, x) : SameDevice(op, x, residual);
        if (output != null) { SameDevice(op, x, output); SameShape(op, x, output); }
        int n = GpuLength(x, op);
        var prm = Params(op, n, p, seed, relu, maskOffset);
        if (p == 0f && !relu && residual is null)
        {
            mask = keepMask ? Tensor.Full(x.Shape, 1f, device) : null;
            return x.Clone(MemoryCategory.Activation);
        }
        var y = output ?? Tensor.Empty(x.Shape, device);
        mask = keepMask ? Tensor.Empty(x.Shape, device) : null;
        if (n == 0) return y;
        if (device is IlgpuDevice gpu)
        {
            var maskView = mask?.View ?? ArrayView<float>.Empty;
            if (residual is null) DropoutKernel.On(gpu)(LaunchThreads(gpu, n), x.View, y.View, maskView, prm);
            else DropoutAddKernel.On(gpu)(LaunchThreads(gpu, n), residual.View, x.View, y.View, maskView, prm);
            return y;
        }
        var xs = x.HostArray; var ys = y.HostArray; var ms = mask?.HostArray; var rs = residual?.HostArray;
        bool vectorized = Vector512.IsHardwareAccelerated;
        CpuParallel.For(n, 1 << 14, (start, end) =>
        {
            int i = (int)start;
            if (vectorized)
            {
                for (; i <= end - 16; i += 16)
                {
                    var m = Mask16(prm, i);
                    var v = Vector512.LoadUnsafe(ref xs[i]);
                    if (relu)
                    {
                        // ReLU's derivative (0 where x ≤ 0 or NaN) goes into the mask; its value is max(x, 0), which keeps a
                        // NaN as the CPU's ReLU does, so a NaN out of fc1 still reaches the loss.
                        m = Vector512.BitwiseAnd(m, Vector512.GreaterThan(v, Vector512<float>.Zero));
                        v = Vector512.Max(v, Vector512<float>.Zero);
                    }
                    if (ms != null) m.StoreUnsafe(ref ms[i]);
                    // Rounded product, then the add: the same two roundings as Dropout followed by Add.
                    if (rs != null) (Vector512.LoadUnsafe(ref rs[i]) + v * m).StoreUnsafe(ref ys[i]);
                    else (v * m).StoreUnsafe(ref ys[i]);
                }
            }
            else if (Vector256.IsHardwareAccelerated)
                for (; i <= end - 8; i += 8)
                {
                    var m = Mask8(prm, i);
                    var v = Vector256.LoadUnsafe(ref xs[i]);
                    if (relu)
                    {
                        m = Vector256.BitwiseAnd(m, Vector256.GreaterThan(v, Vector256<float>.Zero));
                        v = Vector256.Max(v, Vector256<float>.Zero);
                    }
                    if (ms != null) m.StoreUnsafe(ref ms[i]);
                    if (rs != null) (Vector256.LoadUnsafe(ref rs[i]) + v * m).StoreUnsafe(ref ys[i]);
                    else (v * m).StoreUnsafe(ref ys[i]);
                }
            for (; i < end; i++)
            {
                float m = prm.MaskAt(i), v = xs[i];
                if (relu) { if (!(v > 0f)) m = 0f; v = MathF.Max(v, 0f); }
                if (ms != null) ms[i] = m;
                float dropped = v * m;
                ys[i] = rs != null ? rs[i] + dropped : dropped;
            }
        });
        return y;
    }
}
