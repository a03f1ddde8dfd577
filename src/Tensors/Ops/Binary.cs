using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

// The CPU simulator emits a task type per kernel in a dynamic assembly named ILGPURuntime; it must see
// the internal blittable parameter structs (layouts, optimizer scalars) that kernels take.
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]

namespace Nanolora.Tensors;

/// <summary>
/// A binary elementwise function as a struct, so one generic kernel <see cref="Ops.Zip{TOp}"/> serves them all.
/// Implementations must be public (or visible to ILGPURuntime) for the ILGPU CPU simulator to run them.
/// </summary>
public interface IBinaryOp
{
    /// <summary>The function's value at (a, b).</summary>
    float Apply(float a, float b);
}

/// <summary>Elementwise a + b.</summary>
public readonly struct AddOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a + b;
}
/// <summary>Elementwise a − b.</summary>
public readonly struct SubOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a - b;
}
/// <summary>Elementwise a · b.</summary>
public readonly struct MulOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a * b;
}
/// <summary>Elementwise a / b.</summary>
public readonly struct DivOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a / b;
}
/// <summary>Elementwise max that propagates NaN, like torch.maximum.</summary>
public readonly struct MaxOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a > b || XMath.IsNaN(a) ? a : b;
}
/// <summary>1 where a ≥ b, else 0: the gradient mask of <see cref="Ops.Maximum"/> for its first operand (1 − mask for the second).</summary>
public readonly struct GreaterEqualOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a >= b ? 1f : 0f;
}

/// <summary>
/// A broadcast collapsed to 4 axes: adjacent output axes with the same broadcast pattern are merged, so
/// the strides of a and b are 0 (broadcast) or contiguous. The innermost stride is therefore 0 or 1.
/// </summary>
internal struct BroadcastLayout
{
    public int N, D0, D1, D2, D3;
    public int A0, A1, A2, A3, B0, B1, B2, B3;

    /// <summary>Offsets into a and b of output element i.</summary>
    public readonly void Locate(int i, out int ia, out int ib)
    {
        int i3 = i % D3, t = i / D3;
        int i2 = t % D2; t /= D2;
        int i1 = t % D1, i0 = t / D1;
        ia = i0 * A0 + i1 * A1 + i2 * A2 + i3 * A3;
        ib = i0 * B0 + i1 * B1 + i2 * B2 + i3 * B3;
    }

    public static BroadcastLayout Create(string op, ReadOnlySpan<int> a, ReadOnlySpan<int> b, out int[] outShape)
    {
        try { outShape = ShapeMath.Broadcast(a, b); }
        catch (ArgumentException e) { throw new ArgumentException($"{op}: {e.Message}", e); }
        var sa = ShapeMath.BroadcastStrides(a, outShape);
        var sb = ShapeMath.BroadcastStrides(b, outShape);
        var axes = new List<(long Dim, long A, long B)>();
        for (int i = 0; i < outShape.Length; i++)
        {
            if (outShape[i] == 1) continue;
            if (axes.Count > 0)
            {
                var p = axes[^1];
                if ((p.A == 0) == (sa[i] == 0) && (p.B == 0) == (sb[i] == 0))
                {
                    axes[^1] = (p.Dim * outShape[i], sa[i], sb[i]);
                    continue;
                }
            }
            axes.Add((outShape[i], sa[i], sb[i]));
        }
        if (axes.Count > 4)
            throw new ArgumentException($"{op}: broadcasting {ShapeMath.Format(a)} with {ShapeMath.Format(b)} needs {axes.Count} axes after merging; at most 4 are supported. Reshape the operands first.");
        while (axes.Count < 4) axes.Insert(0, (1, 0, 0));
        long n = ShapeMath.Numel(outShape);
        if (n > int.MaxValue) throw new ArgumentException($"{op}: the result {ShapeMath.Format(outShape)} exceeds 2^31-1 elements.");
        return new BroadcastLayout
        {
            N = (int)n, D0 = (int)axes[0].Dim, D1 = (int)axes[1].Dim, D2 = (int)axes[2].Dim, D3 = (int)axes[3].Dim,
            A0 = (int)axes[0].A, A1 = (int)axes[1].A, A2 = (int)axes[2].A, A3 = (int)axes[3].A,
            B0 = (int)axes[0].B, B1 = (int)axes[1].B, B2 = (int)axes[2].B, B3 = (int)axes[3].B,
        };
    }
}

public static partial class Ops
{
    static class BinaryKernels<TOp> where TOp : struct, IBinaryOp
    {
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, BroadcastLayout, TOp>> Forward =
            new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, BroadcastLayout, TOp>(ForwardKernel));

        static void ForwardKernel(Index1D index, ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, BroadcastLayout layout, TOp op)
        {
            for (int i = index; i < layout.N; i += GridExtent())
            {
                layout.Locate(i, out int ia, out int ib);
                y[i] = op.Apply(a[ia], b[ib]);
            }
        }
    }

    /// <summary>Elementwise a + b with NumPy broadcasting.</summary>
    public static Tensor Add(Tensor a, Tensor b) => Zip<AddOp>(a, b);
    /// <summary>Elementwise a − b with NumPy broadcasting.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => Zip<SubOp>(a, b);
    /// <summary>Elementwise a · b with NumPy broadcasting.</summary>
    public static Tensor Mul(Tensor a, Tensor b) => Zip<MulOp>(a, b);
    /// <summary>Elementwise a / b with NumPy broadcasting.</summary>
    public static Tensor Div(Tensor a, Tensor b) => Zip<DivOp>(a, b);
    /// <summary>Elementwise max. Backward: da = SumTo(dy ⊙ Zip&lt;GreaterEqualOp&gt;(a, b), a.shape), db takes the rest.</summary>
    public static Tensor Maximum(Tensor a, Tensor b) => Zip<MaxOp>(a, b);

    /// <summary>
    /// y = op(a, b) with NumPy broadcasting. Backward of a broadcast operand: <see cref="SumTo"/> of its
    /// elementwise gradient (add: dy; mul: dy ⊙ other; div: dy / b and −dy ⊙ a / b²).
    /// </summary>
    public static Tensor Zip<TOp>(Tensor a, Tensor b, TOp op = default) where TOp : struct, IBinaryOp
    {
        string name = typeof(TOp).Name;
        var device = SameDevice(name, a, b);
        var layout = BroadcastLayout.Create(name, a.Shape, b.Shape, out var shape);
        var y = Tensor.Empty(shape, device);
        if (layout.N == 0) return y;
        if (device is IlgpuDevice gpu)
        {
            BinaryKernels<TOp>.Forward.On(gpu)(LaunchThreads(gpu, layout.N), a.View, b.View, y.View, layout, op);
            return y;
        }
        var xa = a.HostArray; var xb = b.HostArray; var ys = y.HostArray;
        bool aRow = layout.A3 != 0, bRow = layout.B3 != 0;
        // Work in segments that never cross an inner row: inside one, a and b are each a span or a scalar.
        CpuParallel.For(layout.N, 1 << 15, (start, end) =>
        {
            for (int i = (int)start; i < end;)
            {
                int col = i % layout.D3, len = Math.Min(layout.D3 - col, (int)end - i);
                layout.Locate(i, out int ia, out int ib);
                ZipSegment(aRow ? xa.AsSpan(ia, len) : xa.AsSpan(ia, 1), aRow, bRow ? xb.AsSpan(ib, len) : xb.AsSpan(ib, 1), bRow, ys.AsSpan(i, len), op);
                i += len;
            }
        });
        return y;
    }

    /// <summary>One inner segment on the CPU; a or b is a one-element span when it is broadcast along it.</summary>
    static void ZipSegment<TOp>(ReadOnlySpan<float> a, bool aRow, ReadOnlySpan<float> b, bool bRow, Span<float> y, TOp op) where TOp : struct, IBinaryOp
    {
        if (aRow && bRow)
        {
            if (typeof(TOp) == typeof(AddOp)) { TensorPrimitives.Add(a, b, y); return; }
            if (typeof(TOp) == typeof(SubOp)) { TensorPrimitives.Subtract(a, b, y); return; }
            if (typeof(TOp) == typeof(MulOp)) { TensorPrimitives.Multiply(a, b, y); return; }
            if (typeof(TOp) == typeof(DivOp)) { TensorPrimitives.Divide(a, b, y); return; }
            if (typeof(TOp) == typeof(MaxOp)) { TensorPrimitives.Max(a, b, y); return; }
            for (int i = 0; i < y.Length; i++) y[i] = op.Apply(a[i], b[i]);
        }
        else if (aRow)
        {
            float s = b[0];
            if (typeof(TOp) == typeof(AddOp)) { TensorPrimitives.Add(a, s, y); return; }
            if (typeof(TOp) == typeof(SubOp)) { TensorPrimitives.Subtract(a, s, y); return; }
            if (typeof(TOp) == typeof(MulOp)) { TensorPrimitives.Multiply(a, s, y); return; }
            if (typeof(TOp) == typeof(DivOp)) { TensorPrimitives.Divide(a, s, y); return; }
            for (int i = 0; i < y.Length; i++) y[i] = op.Apply(a[i], s);
        }
        else if (bRow)
        {
            float s = a[0];
            if (typeof(TOp) == typeof(AddOp)) { TensorPrimitives.Add(b, s, y); return; }
            if (typeof(TOp) == typeof(SubOp)) { TensorPrimitives.Subtract(s, b, y); return; }
            if (typeof(TOp) == typeof(MulOp)) { TensorPrimitives.Multiply(b, s, y); return; }
            if (typeof(TOp) == typeof(DivOp)) { TensorPrimitives.Divide(s, b, y); return; }
            for (int i = 0; i < y.Length; i++) y[i] = op.Apply(s, b[i]);
        }
        else y.Fill(op.Apply(a[0], b[0]));
    }

    // ---- in-place updates (gradient accumulation) -----------------------------------------------

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int, float>> AxpyKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, float>(Axpy));
    static readonly Kernel<Action<Index1D, ArrayView<float>, int, float>> ScaleKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, int, float>(ScaleInPlaceKernel));

    static void Axpy(Index1D index, ArrayView<float> target, ArrayView<float> source, int n, float alpha)
    {
        for (int i = index; i < n; i += GridExtent()) target[i] += alpha * source[i];
    }

    static void ScaleInPlaceKernel(Index1D index, ArrayView<float> target, int n, float s)
    {
        for (int i = index; i < n; i += GridExtent()) target[i] *= s;
    }

    /// <summary>target += alpha·source, in place (same shape and device).</summary>
    public static void AddInPlace(Tensor target, Tensor source, float alpha = 1f)
    {
        var device = SameDevice(nameof(AddInPlace), target, source);
        SameShape(nameof(AddInPlace), target, source);
        if (target.Length == 0) return;
        if (device is IlgpuDevice gpu)
        {
            int n = GpuLength(target, nameof(AddInPlace));
            AxpyKernel.On(gpu)(LaunchThreads(gpu, n), target.View, source.View, n, alpha);
            return;
        }
        var t = target.HostArray; var s = source.HostArray;
        CpuParallel.For(target.Length, 1 << 15, (start, end) =>
        {
            var ts = t.AsSpan((int)start, (int)(end - start));
            var ss = s.AsSpan((int)start, (int)(end - start));
            if (alpha == 1f) TensorPrimitives.Add(ts, ss, ts);
            else TensorPrimitives.MultiplyAdd(ss, alpha, ts, ts);
        });
    }

    /// <summary>target *= s, in place.</summary>
    public static void ScaleInPlace(Tensor target, float s)
    {
        var device = SameDevice(nameof(ScaleInPlace), target);
        if (target.Length == 0) return;
        if (device is IlgpuDevice gpu)
        {
            int n = GpuLength(target, nameof(ScaleInPlace));
            ScaleKernel.On(gpu)(LaunchThreads(gpu, n), target.View, n, s);
            return;
        }
        var t = target.HostArray;
        CpuParallel.For(target.Length, 1 << 15, (start, end) =>
        {
            var ts = t.AsSpan((int)start, (int)(end - start));
            TensorPrimitives.Multiply(ts, s, ts);
        });
    }
}

/// <summary>
/// How <see cref="Ops.SumTo"/> walks a gradient: the axes kept in the target and the axes summed away,
/// each merged where adjacent and padded to 3 (so up to 6 alternating groups). Output element o sits at
/// input offset KeptOffset(o); its r-th summand adds ReducedOffset(r).
/// </summary>
internal struct SumToLayout
{
    public int NOut, R, K1, K2, KS0, KS1, KS2, R1, R2, RS0, RS1, RS2;

    public readonly int KeptOffset(int o)
    {
        int k2 = o % K2, t = o / K2;
        return (t / K1) * KS0 + (t % K1) * KS1 + k2 * KS2;
    }

    public readonly int ReducedOffset(int r)
    {
        int r2 = r % R2, t = r / R2;
        return (t / R1) * RS0 + (t % R1) * RS1 + r2 * RS2;
    }

    public static SumToLayout Create(ReadOnlySpan<int> g, ReadOnlySpan<int> target)
    {
        int offset = g.Length - target.Length;
        bool ok = offset >= 0;
        for (int i = 0; ok && i < target.Length; i++) ok = target[i] == g[offset + i] || target[i] == 1;
        if (!ok) throw new ArgumentException($"SumTo: a gradient of shape {ShapeMath.Format(g)} cannot be reduced to {ShapeMath.Format(target)} (the target must broadcast to the gradient's shape).");
        var groups = new List<(bool Kept, long Dim, long Stride)>();
        long stride = 1;
        for (int i = g.Length - 1; i >= 0; i--)
        {
            if (g[i] != 1)
            {
                bool kept = i >= offset && target[i - offset] == g[i];
                if (groups.Count > 0 && groups[0].Kept == kept) groups[0] = (kept, groups[0].Dim * g[i], groups[0].Stride);
                else groups.Insert(0, (kept, g[i], stride));
            }
            stride *= g[i];
        }
        var kept3 = groups.Where(x => x.Kept).ToList();
        var reduced3 = groups.Where(x => !x.Kept).ToList();
        if (kept3.Count > 3 || reduced3.Count > 3)
            throw new ArgumentException($"SumTo: reducing {ShapeMath.Format(g)} to {ShapeMath.Format(target)} alternates kept and summed axes more than 6 times; reduce in two steps.");
        while (kept3.Count < 3) kept3.Insert(0, (true, 1, 0));
        while (reduced3.Count < 3) reduced3.Insert(0, (false, 1, 0));
        return new SumToLayout
        {
            NOut = (int)ShapeMath.Numel(target), R = (int)(reduced3[0].Dim * reduced3[1].Dim * reduced3[2].Dim),
            K1 = (int)kept3[1].Dim, K2 = (int)kept3[2].Dim, KS0 = (int)kept3[0].Stride, KS1 = (int)kept3[1].Stride, KS2 = (int)kept3[2].Stride,
            R1 = (int)reduced3[1].Dim, R2 = (int)reduced3[2].Dim, RS0 = (int)reduced3[0].Stride, RS1 = (int)reduced3[1].Stride, RS2 = (int)reduced3[2].Stride,
        };
    }
}

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, SumToLayout>> SumToKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, SumToLayout>(SumToGpu));

    // One thread per output element, summing its broadcast copies.
    static void SumToGpu(Index1D index, ArrayView<float> g, ArrayView<float> y, SumToLayout l)
    {
        for (int o = index; o < l.NOut; o += GridExtent())
        {
            int baseOffset = l.KeptOffset(o);
            float acc = 0f;
            for (int r = 0; r < l.R; r++) acc += g[baseOffset + l.ReducedOffset(r)];
            y[o] = acc;
        }
    }

    /// <summary>
    /// Sums a broadcast gradient <paramref name="g"/> back to an operand's <paramref name="shape"/>
    /// (over the axes that were broadcast). A fresh tensor; a copy when no axis was broadcast.
    /// </summary>
    public static Tensor SumTo(Tensor g, ReadOnlySpan<int> shape)
    {
        var device = SameDevice(nameof(SumTo), g);
        var l = SumToLayout.Create(g.Shape, shape);
        GpuLength(g, nameof(SumTo));
        var y = Tensor.Empty(shape, device, g.Category);
        if (y.Length == g.Length) { y.CopyFrom(g); return y; }
        if (y.Length == 0) return y;
        if (g.Length == 0) { y.Fill(0f); return y; }
        if (y.Length == 1)
        {
            using var total = Sum(g);
            y.CopyFrom(total);
            return y;
        }
        if (device is IlgpuDevice gpu)
        {
            SumToKernel.On(gpu)(LaunchThreads(gpu, l.NOut), g.View, y.View, l);
            return y;
        }
        var gs = g.HostArray; var ys = y.HostArray;
        if (l.KS2 == 1)
        {
            // Innermost axis kept: add contiguous input rows into contiguous output rows.
            CpuParallel.For(l.NOut, Math.Max(1, (1 << 15) / Math.Max(1, l.R)), (start, end) =>
            {
                for (int o = (int)start; o < end;)
                {
                    int len = Math.Min(l.K2 - o % l.K2, (int)end - o);
                    var dst = ys.AsSpan(o, len);
                    dst.Clear();
                    int baseOffset = l.KeptOffset(o);
                    for (int r = 0; r < l.R; r++) TensorPrimitives.Add(dst, gs.AsSpan(baseOffset + l.ReducedOffset(r), len), dst);
                    o += len;
                }
            });
        }
        else
        {
            // Innermost axis summed: each output is a sum of contiguous runs of length R2.
            CpuParallel.For(l.NOut, Math.Max(1, (1 << 15) / Math.Max(1, l.R)), (start, end) =>
            {
                for (int o = (int)start; o < end; o++)
                {
                    int baseOffset = l.KeptOffset(o);
                    double acc = 0;
                    for (int r = 0; r < l.R; r += l.R2) acc += TensorPrimitives.Sum(gs.AsSpan(baseOffset + l.ReducedOffset(r), l.R2));
                    ys[o] = (float)acc;
                }
            });
        }
        return y;
    }
}
