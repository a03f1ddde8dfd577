using ILGPU;
using ILGPU.Runtime;
using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>Dropout's launch parameters: the hash key of the seed, the drop threshold on 24-bit draws, the keep scale.</summary>
internal readonly struct DropoutParams(int n, ulong key, int threshold, float scale, int relu)
{
    public readonly int N = n, Threshold = threshold, Relu = relu;
    public readonly ulong Key = key;
    public readonly float Scale = scale;

    /// <summary>Element i is kept when its 24-bit draw is ≥ round(p·2^24): an integer test, identical everywhere.</summary>
    public float MaskAt(int i) => CounterHash.Bits24(Key, (ulong)i) >= Threshold ? Scale : 0f;
}

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>> DropoutKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>(DropoutGpu));

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>> DropoutAddKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, DropoutParams>(DropoutAddGpu));

    static void DropoutAddGpu(Index1D index, ArrayView<float> residual, ArrayView<float> x, ArrayView<float> y, ArrayView<float> mask, DropoutParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            float m = p.MaskAt(i);
            mask[i] = m;
            float dropped = x[i] * m;
            y[i] = residual[i] + dropped;
        }
    }

    static void DropoutGpu(Index1D index, ArrayView<float> x, ArrayView<float> y, ArrayView<float> mask, DropoutParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            float m = p.MaskAt(i), v = x[i];
            if (p.Relu != 0 && !(v > 0f)) { mask[i] = 0f; y[i] = 0f; continue; }
            mask[i] = m;
            y[i] = v * m;
        }
    }

    /// <summary>
    /// Inverted dropout: each element is zeroed with probability <paramref name="p"/>, the rest scaled by
    /// 1/(1−p). The mask (0 or 1/(1−p)) comes from a counter-based hash of (seed, element index), so cpu
    /// and every GPU draw the same mask. Backward: Mul(dy, mask). p = 0 gives a copy and a mask of ones.
    /// </summary>
    public static Tensor Dropout(Tensor x, float p, ulong seed, out Tensor mask) => Dropout(nameof(Dropout), x, p, seed, false, null, out mask);

    /// <summary>
    /// residual + Dropout(x) in one pass, the same values as the two ops with this seed (a residual connection's
    /// sublayer output): x and the residual are read once and the sum written once, with no dropped copy in between.
    /// (A GPU compiler may fuse the kernel's multiply and add into one rounding: then within an ulp of the two ops.)
    /// Backward: the residual gets dy, x gets Mul(dy, mask).
    /// </summary>
    public static Tensor DropoutAdd(Tensor residual, Tensor x, float p, ulong seed, out Tensor mask)
    {
        SameShape(nameof(DropoutAdd), residual, x);
        return Dropout(nameof(DropoutAdd), x, p, seed, false, residual, out mask);
    }

    /// <summary>
    /// Dropout(Relu(x)) in one pass, the same values as the two ops with this seed. The mask it returns already holds
    /// ReLU's derivative (0 where x ≤ 0), so the backward of both is Mul(dy, mask) and x itself need not be kept. A
    /// feed-forward block's hidden layer, the widest activation, is read and written once each way instead of twice.
    /// </summary>
    public static Tensor ReluDropout(Tensor x, float p, ulong seed, out Tensor mask) => Dropout(nameof(ReluDropout), x, p, seed, true, null, out mask);

    static Tensor Dropout(string op, Tensor x, float p, ulong seed, bool relu, Tensor? residual, out Tensor mask)
    {
        var device = residual is null ? SameDevice(op, x) : SameDevice(op, x, residual);
        if (!(p >= 0f && p <= 1f)) throw new ArgumentException($"{op}: p must be in [0, 1], got {p}.");
        if (p == 0f && !relu && residual is null)
        {
            mask = Tensor.Full(x.Shape, 1f, device);
            return x.Clone(MemoryCategory.Activation);
        }
        int n = GpuLength(x, op);
        var prm = new DropoutParams(n, CounterHash.Key(seed), (int)Math.Round(p * (double)(1 << 24)), p == 1f ? 0f : (float)(1.0 / (1.0 - p)), relu ? 1 : 0);
        var y = Tensor.Empty(x.Shape, device);
        mask = Tensor.Empty(x.Shape, device);
        if (n == 0) return y;
        if (device is IlgpuDevice gpu)
        {
            if (residual is null) DropoutKernel.On(gpu)(LaunchThreads(gpu, n), x.View, y.View, mask.View, prm);
            else DropoutAddKernel.On(gpu)(LaunchThreads(gpu, n), residual.View, x.View, y.View, mask.View, prm);
            return y;
        }
        var xs = x.HostArray; var ys = y.HostArray; var ms = mask.HostArray; var rs = residual?.HostArray;
        bool vectorized = Vector512.IsHardwareAccelerated;
        CpuParallel.For(n, 1 << 14, (start, end) =>
        {
            int i = (int)start;
            if (vectorized)
            {
                // 16 draws per step: two 8-lane hashes narrowed to 32 bits, compared, selected and applied as vectors.
                var threshold = Vector512.Create(prm.Threshold);
                var scale = Vector512.Create(prm.Scale);
                for (; i <= end - 16; i += 16)
                {
                    var bits = Vector512.Narrow(CounterHash.Bits24x8(prm.Key, (ulong)i), CounterHash.Bits24x8(prm.Key, (ulong)i + 8)).AsInt32();
                    var m = Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(bits, threshold).AsSingle(), scale, Vector512<float>.Zero);
                    var v = Vector512.LoadUnsafe(ref xs[i]);
                    if (relu)
                    {
                        // ReLU's derivative (0 where x ≤ 0 or NaN) goes into the mask; its value is max(x, 0), which keeps a
                        // NaN as the CPU's ReLU does, so a NaN out of fc1 still reaches the loss.
                        m = Vector512.BitwiseAnd(m, Vector512.GreaterThan(v, Vector512<float>.Zero));
                        v = Vector512.Max(v, Vector512<float>.Zero);
                    }
                    m.StoreUnsafe(ref ms[i]);
                    // Rounded product, then the add: the same two roundings as Dropout followed by Add.
                    if (rs != null) (Vector512.LoadUnsafe(ref rs[i]) + v * m).StoreUnsafe(ref ys[i]);
                    else (v * m).StoreUnsafe(ref ys[i]);
                }
            }
            for (; i < end; i++)
            {
                float m = prm.MaskAt(i), v = xs[i];
                if (relu) { if (!(v > 0f)) m = 0f; v = MathF.Max(v, 0f); }
                ms[i] = m;
                float dropped = v * m;
                ys[i] = rs != null ? rs[i] + dropped : dropped;
            }
        });
        return y;
    }
}
