using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

public static partial class Ops
{
    /// <summary>
    /// Key-mask values at or below this drop the key outright (probability exactly 0, as with −∞), so a
    /// row whose keys are all dropped yields zeros rather than a uniform distribution over padding.
    /// Values above it are added to the logits as a bias.
    /// </summary>
    public const float KeyMaskDropThreshold = -1e9f;

    /// <summary>Shape of a softmax launch; Causal/HasMask are 0 or 1 (kernel params stay blittable).</summary>
    internal struct SoftmaxParams
    {
        public int S, T, RowsPerBatch, Causal, HasMask;
    }

    static class SoftmaxKernels
    {
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, SoftmaxParams>> Forward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, SoftmaxParams>(ForwardKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>> Backward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(BackwardKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int>> LogForward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int>(LogForwardKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int>> LogBackward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int>(LogBackwardKernel));

        // The masked logit of key j in a row, −∞ when causal or the key mask drops it.
        static float Logit(ArrayView<float> x, ArrayView<float> mask, int at, int j, int lastKept, int maskRow, SoftmaxParams p)
        {
            if (j > lastKept) return float.NegativeInfinity;
            float v = x[at + j];
            if (p.HasMask != 0)
            {
                float m = mask[maskRow + j];
                if (m <= KeyMaskDropThreshold) return float.NegativeInfinity;
                v += m;
            }
            return v;
        }

        static void ForwardKernel(ArrayView<float> x, ArrayView<float> mask, ArrayView<float> y, SoftmaxParams p)
        {
            // One shared buffer per reduction (RowReduce explains why).
            var maxScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var sumScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int row = Grid.IdxX, at = row * p.S;
            int lastKept = p.Causal != 0 ? row % p.T + p.S - p.T : p.S - 1;
            int maskRow = p.HasMask != 0 ? row / p.RowsPerBatch * p.S : 0;
            float max = float.NegativeInfinity;
            for (int j = Group.IdxX; j < p.S; j += Group.DimX)
                max = XMath.Max(max, Logit(x, mask, at, j, lastKept, maskRow, p));
            max = RowReduce.Max(maxScratch, max);
            bool empty = max == float.NegativeInfinity; // every key dropped: zeros, not 0/0
            float sum = 0f;
            if (!empty)
                for (int j = Group.IdxX; j < p.S; j += Group.DimX)
                    sum += XMath.Exp(Logit(x, mask, at, j, lastKept, maskRow, p) - max);
            sum = RowReduce.Sum(sumScratch, sum);
            float inv = empty ? 0f : 1f / sum;
            for (int j = Group.IdxX; j < p.S; j += Group.DimX)
                y[at + j] = empty ? 0f : XMath.Exp(Logit(x, mask, at, j, lastKept, maskRow, p) - max) * inv;
        }

        static void BackwardKernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int s)
        {
            var shared = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int at = Grid.IdxX * s;
            float dot = 0f;
            for (int j = Group.IdxX; j < s; j += Group.DimX) dot += dy[at + j] * y[at + j];
            dot = RowReduce.Sum(shared, dot);
            for (int j = Group.IdxX; j < s; j += Group.DimX) dx[at + j] = y[at + j] * (dy[at + j] - dot);
        }

        static void LogForwardKernel(ArrayView<float> x, ArrayView<float> y, int s)
        {
            var maxScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var sumScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int at = Grid.IdxX * s;
            float max = float.NegativeInfinity;
            for (int j = Group.IdxX; j < s; j += Group.DimX) max = XMath.Max(max, x[at + j]);
            max = RowReduce.Max(maxScratch, max);
            float sum = 0f;
            for (int j = Group.IdxX; j < s; j += Group.DimX) sum += XMath.Exp(x[at + j] - max);
            float shift = max + XMath.Log(RowReduce.Sum(sumScratch, sum));
            for (int j = Group.IdxX; j < s; j += Group.DimX) y[at + j] = x[at + j] - shift;
        }

        static void LogBackwardKernel(ArrayView<float> y, ArrayView<float> dy, ArrayView<float> dx, int s)
        {
            var shared = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int at = Grid.IdxX * s;
            float sum = 0f;
            for (int j = Group.IdxX; j < s; j += Group.DimX) sum += dy[at + j];
            sum = RowReduce.Sum(shared, sum);
            for (int j = Group.IdxX; j < s; j += Group.DimX) dx[at + j] = dy[at + j] - XMath.Exp(y[at + j]) * sum;
        }
    }

    /// <summary>Rows per CPU work item so that each item touches about 32k elements.</summary>
    static long RowGrain(int width) => Math.Max(1, (1 << 15) / Math.Max(width, 1));

    /// <summary>
    /// Softmax over the last axis, x [..., T, S]. <paramref name="causal"/> drops key j for query row i
    /// (within T) when j &gt; i + (S − T), so T &lt; S serves KV-cached decoding. <paramref name="keyMask"/> [B, S]
    /// (B = x.Dim(0)) is added to every row of batch b; values ≤ <see cref="KeyMaskDropThreshold"/> drop the key.
    /// A row with every key dropped is all zeros.
    /// </summary>
    /// <param name="x">The logits [..., T, S].</param>
    /// <param name="causal">Drop the keys after each query's position.</param>
    /// <param name="keyMask">[B, S] added to the logits of batch b; at or below the drop threshold the key is dropped.</param>
    /// <param name="output">Where to write: x itself for in place (attention's scores, which nothing reads afterwards), or
    /// another tensor of x's shape; a new tensor when null. Each row is read whole before any of it is written, on every
    /// device, so in place gives the same values bit for bit.</param>
    public static Tensor Softmax(Tensor x, bool causal = false, Tensor? keyMask = null, Tensor? output = null)
    {
        const string op = "Softmax";
        var device = keyMask is null ? SameDevice(op, x) : SameDevice(op, x, keyMask);
        if (output != null) { SameDevice(op, x, output); SameShape(op, x, output); }
        if (x.Rank < 1) throw new ArgumentException($"{op}: x must have at least one axis, got shape {x.ShapeString}.");
        if ((causal || keyMask != null) && x.Rank < 2)
            throw new ArgumentException($"{op}: causal and keyMask need x of rank >= 2 ([..., T, S]), got shape {x.ShapeString}.");
        int s = x.Dim(-1), t = x.Rank >= 2 ? x.Dim(-2) : 1;
        int b = x.Dim(0);
        if (keyMask != null && (keyMask.Rank != 2 || keyMask.Dim(0) != b || keyMask.Dim(1) != s))
            throw new ArgumentException($"{op}: keyMask must have shape [{b}, {s}] (x.Dim(0), x.Dim(-1)), got {keyMask.ShapeString}.");
        var y = output ?? Tensor.Empty(x.Shape, device);
        long rows = s == 0 ? 0 : x.Length / s;
        if (rows == 0 || s == 0) return y;
        int rowsPerBatch = (int)(rows / b);

        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, op);
            var p = new SoftmaxParams { S = s, T = t, RowsPerBatch = rowsPerBatch, Causal = causal ? 1 : 0, HasMask = keyMask != null ? 1 : 0 };
            SoftmaxKernels.Forward.On(gpu)(RowReduce.PerRow(gpu, (int)rows, s), x.View, (keyMask ?? x).View, y.View, p);
            return y;
        }

        var xs = x.HostArray; var ys = y.HostArray;
        // Dropped keys become −∞ once here, so the row loop is a plain add.
        float[]? mask = null;
        if (keyMask != null)
        {
            mask = keyMask.ToArray();
            for (int i = 0; i < mask.Length; i++) if (mask[i] <= KeyMaskDropThreshold) mask[i] = float.NegativeInfinity;
        }
        CpuParallel.For(rows, RowGrain(s), [MethodImpl(MethodImplOptions.AggressiveOptimization)] (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                int kept = causal ? Math.Clamp((int)(r % t) + s - t + 1, 0, s) : s;
                var yr = ys.AsSpan((int)(r * s), s);
                ReadOnlySpan<float> src = xs.AsSpan((int)(r * s), kept);
                if (mask != null)
                {
                    TensorPrimitives.Add(src, mask.AsSpan((int)(r / rowsPerBatch) * s, kept), yr[..kept]);
                    src = yr[..kept];
                }
                SoftmaxRow(src, yr[..kept]);
                yr[kept..].Clear();
            }
        });
        return y;
    }

    /// <summary>Softmax of one row into <paramref name="y"/> (attention's fused heads; may be <paramref name="x"/>); all −∞ gives zeros.</summary>
    internal static void SoftmaxRowInto(ReadOnlySpan<float> x, Span<float> y) => SoftmaxRow(x, y);

    /// <summary>Softmax of one row into <paramref name="y"/> (which may be <paramref name="x"/>); all −∞ gives zeros.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void SoftmaxRow(ReadOnlySpan<float> x, Span<float> y)
    {
        if (x.Length == 0) return;
        float max = VectorExp.Max(x);
        if (max == float.NegativeInfinity) { y.Clear(); return; }
        float sum = VectorExp.ExpShifted(x, max, y);
        VectorExp.Scale(y, 1f / sum);
    }

    /// <summary>The checks and row geometry both backward passes share; returns the (unfilled) dx: <paramref name="output"/> or a new tensor.</summary>
    static Tensor RowBackwardOutput(string op, Tensor y, Tensor dy, out IlgpuDevice? gpu, out int s, out long rows, Tensor? output = null)
    {
        var device = SameDevice(op, y, dy);
        SameShape(op, y, dy);
        if (output != null) { SameDevice(op, dy, output); SameShape(op, dy, output); }
        if (y.Rank < 1) throw new ArgumentException($"{op}: y must have at least one axis, got shape {y.ShapeString}.");
        s = y.Dim(-1);
        rows = s == 0 ? 0 : y.Length / s;
        gpu = device as IlgpuDevice;
        if (gpu != null) GpuLength(y, op);
        return output ?? Tensor.Empty(y.Shape, device);
    }

    /// <summary>dx = y ⊙ (dy − rowsum(dy ⊙ y)), y the softmax output; all [..., S].</summary>
    /// <param name="y">The softmax's output.</param>
    /// <param name="dy">The gradient of y.</param>
    /// <param name="output">Where to write dx: dy itself for in place (a rule that owns dy may), or a new tensor when null.
    /// A row's sum is taken before any of it is written.</param>
    public static Tensor SoftmaxBackward(Tensor y, Tensor dy, Tensor? output = null)
    {
        var dx = RowBackwardOutput("SoftmaxBackward", y, dy, out var gpu, out int s, out long rows, output);
        if (rows == 0) return dx;
        if (gpu != null)
        {
            SoftmaxKernels.Backward.On(gpu)(RowReduce.PerRow(gpu, (int)rows, s), y.View, dy.View, dx.View, s);
            return dx;
        }
        var ys = y.HostArray; var dys = dy.HostArray; var dxs = dx.HostArray;
        CpuParallel.For(rows, RowGrain(s), (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                var yr = ys.AsSpan((int)(r * s), s); var dyr = dys.AsSpan((int)(r * s), s); var dxr = dxs.AsSpan((int)(r * s), s);
                float dot = TensorPrimitives.Dot(dyr, yr);
                TensorPrimitives.Subtract(dyr, dot, dxr);
                TensorPrimitives.Multiply(dxr, yr, dxr);
            }
        });
        return dx;
    }

    /// <summary>log(softmax(x)) over the last axis, computed as x − max − log Σ exp(x − max).</summary>
    public static Tensor LogSoftmax(Tensor x)
    {
        const string op = "LogSoftmax";
        var device = SameDevice(op, x);
        if (x.Rank < 1) throw new ArgumentException($"{op}: x must have at least one axis, got shape {x.ShapeString}.");
        int s = x.Dim(-1);
        var y = Tensor.Empty(x.Shape, device);
        long rows = s == 0 ? 0 : x.Length / s;
        if (rows == 0) return y;
        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, op);
            SoftmaxKernels.LogForward.On(gpu)(RowReduce.PerRow(gpu, (int)rows, s), x.View, y.View, s);
            return y;
        }
        var xs = x.HostArray; var ys = y.HostArray;
        CpuParallel.For(rows, RowGrain(s), (r0, r1) =>
        {
            for (long r = r0; r < r1; r++) LogSoftmaxRow(xs.AsSpan((int)(r * s), s), ys.AsSpan((int)(r * s), s));
        });
        return y;
    }

    /// <summary>Log-softmax of one row into <paramref name="y"/>; returns the shift max + log Σ exp(x − max).</summary>
    static float LogSoftmaxRow(ReadOnlySpan<float> x, Span<float> y) => LogSoftmaxRow(x, y, y);

    /// <summary>log-softmax of one row into y, the exponentials summed through <paramref name="exps"/> (y itself unless y is x); returns the shift.</summary>
    static float LogSoftmaxRow(ReadOnlySpan<float> x, Span<float> y, Span<float> exps)
    {
        float max = VectorExp.Max(x);
        float shift = max + MathF.Log(VectorExp.ExpShifted(x, max, exps));
        TensorPrimitives.Subtract(x, shift, y);
        return shift;
    }

    /// <summary>dx = dy − exp(y) · rowsum(dy), y the log-softmax output.</summary>
    public static Tensor LogSoftmaxBackward(Tensor y, Tensor dy)
    {
        var dx = RowBackwardOutput("LogSoftmaxBackward", y, dy, out var gpu, out int s, out long rows);
        if (rows == 0) return dx;
        if (gpu != null)
        {
            SoftmaxKernels.LogBackward.On(gpu)(RowReduce.PerRow(gpu, (int)rows, s), y.View, dy.View, dx.View, s);
            return dx;
        }
        var ys = y.HostArray; var dys = dy.HostArray; var dxs = dx.HostArray;
        CpuParallel.For(rows, RowGrain(s), (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                var yr = ys.AsSpan((int)(r * s), s); var dyr = dys.AsSpan((int)(r * s), s); var dxr = dxs.AsSpan((int)(r * s), s);
                float sum = TensorPrimitives.Sum(dyr);
                VectorExp.ExpShifted(yr, 0f, dxr);
                // dx = exp(y) · (−sum) + dy
                TensorPrimitives.MultiplyAdd(dxr, -sum, dyr, dxr);
            }
        });
        return dx;
    }
}
