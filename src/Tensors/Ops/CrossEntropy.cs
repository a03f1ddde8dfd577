using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// Cross-entropy over logits [N, V] fused with its log-softmax. With shift = max + log Σ exp(x − max),
/// logp_j = x_j − shift, so the smoothing term mean_j(−logp_j) = shift − mean_j(x_j) needs only one more
/// row sum. Backward: dlogits = scale·(softmax − ((1−ε)·onehot + ε/V)), scale = gradScale / count.
/// </summary>
public static partial class Ops
{
    internal struct CrossEntropyParams
    {
        public int N, V, IgnoreIndex;
        public float Smoothing, Scale;
    }

    static class CrossEntropyKernels
    {
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, CrossEntropyParams>> Forward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, CrossEntropyParams>(ForwardKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, CrossEntropyParams>> Mean =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, CrossEntropyParams>(MeanKernel));
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams>> Backward =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, CrossEntropyParams>(BackwardKernel));

        // One group per row: log-probabilities and the row's loss (0 for an ignored target).
        static void ForwardKernel(ArrayView<float> logits, ArrayView<int> targets, ArrayView<float> logProbs, ArrayView<float> rowLoss, CrossEntropyParams p)
        {
            // One shared buffer per reduction (RowReduce explains why).
            var maxScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var expScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var sumScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int row = Grid.IdxX, at = row * p.V;
            float max = float.NegativeInfinity;
            for (int j = Group.IdxX; j < p.V; j += Group.DimX) max = XMath.Max(max, logits[at + j]);
            max = RowReduce.Max(maxScratch, max);
            float sumExp = 0f, sumX = 0f;
            for (int j = Group.IdxX; j < p.V; j += Group.DimX) { float v = logits[at + j]; sumExp += XMath.Exp(v - max); sumX += v; }
            float shift = max + XMath.Log(RowReduce.Sum(expScratch, sumExp));
            sumX = RowReduce.Sum(sumScratch, sumX);
            // Each element is read and written by one thread, which also scores the target's: logProbs may be logits.
            int t = targets[row];
            for (int j = Group.IdxX; j < p.V; j += Group.DimX)
            {
                float v = logits[at + j];
                logProbs[at + j] = v - shift;
                if (j == t && t != p.IgnoreIndex) rowLoss[row] = (1f - p.Smoothing) * (shift - v) + p.Smoothing * (shift - sumX / p.V);
            }
            if (Group.IdxX == 0 && t == p.IgnoreIndex) rowLoss[row] = 0f;
        }

        // A single group: loss[0] = Σ rowLoss · Scale (Scale = 1/count, or 0 when every target is ignored).
        static void MeanKernel(ArrayView<float> rowLoss, ArrayView<float> loss, CrossEntropyParams p)
        {
            var shared = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            float sum = 0f;
            for (int i = Group.IdxX; i < p.N; i += Group.DimX) sum += rowLoss[i];
            sum = RowReduce.Sum(shared, sum);
            if (Group.IdxX == 0) loss[0] = sum * p.Scale;
        }

        static void BackwardKernel(Index1D index, ArrayView<float> logProbs, ArrayView<int> targets, ArrayView<float> dlogits, CrossEntropyParams p)
        {
            int n = p.N * p.V;
            float off = p.Smoothing / p.V;
            for (int i = index; i < n; i += GridExtent())
            {
                int row = i / p.V, j = i - row * p.V;
                int t = targets[row];
                dlogits[i] = t == p.IgnoreIndex ? 0f
                    : p.Scale * (XMath.Exp(logProbs[i]) - off - (j == t ? 1f - p.Smoothing : 0f));
            }
        }
    }

    /// <summary>Validates targets (each == ignoreIndex or in [0, V)) and returns how many are not ignored.</summary>
    static int CheckTargets(string op, int[] targets, int n, int v, int ignoreIndex, float labelSmoothing)
    {
        ArgumentNullException.ThrowIfNull(targets);
        if (targets.Length != n) throw new ArgumentException($"{op}: expected {n} targets (one per row), got {targets.Length}.");
        if (!(labelSmoothing >= 0f && labelSmoothing <= 1f)) throw new ArgumentException($"{op}: labelSmoothing must be in [0, 1], got {labelSmoothing}.");
        int count = 0;
        for (int i = 0; i < n; i++)
        {
            int t = targets[i];
            if (t == ignoreIndex) continue;
            if ((uint)t >= (uint)v)
                throw new ArgumentException($"{op}: target {t} at row {i} is outside the vocabulary [0, {v}) (V = {v}) and is not ignoreIndex ({ignoreIndex}).");
            count++;
        }
        return count;
    }

    /// <summary>
    /// Mean cross-entropy of logits [N, V] against targets int[N] over rows whose target is not
    /// <paramref name="ignoreIndex"/> (0 if none), with PyTorch's label smoothing. Returns a scalar
    /// tensor (shape []) and the log-probabilities [N, V] for <see cref="CrossEntropyBackward"/>.
    /// </summary>
    /// <param name="logits">The logits [N, V].</param>
    /// <param name="targets">The target class of each row, or <paramref name="ignoreIndex"/>.</param>
    /// <param name="ignoreIndex">The target value of rows left out.</param>
    /// <param name="labelSmoothing">PyTorch's ε.</param>
    /// <param name="logProbs">The log-probabilities: <paramref name="logProbsOutput"/>, or a new tensor.</param>
    /// <param name="logProbsOutput">Where to write them: logits itself for in place (a row's logits are all read before
    /// any is written; the loss is the same bit for bit), or null for a new tensor.</param>
    public static Tensor CrossEntropy(Tensor logits, int[] targets, int ignoreIndex, float labelSmoothing, out Tensor logProbs, Tensor? logProbsOutput = null)
    {
        const string op = "CrossEntropy";
        var device = SameDevice(op, logits);
        if (logits.Rank != 2) throw new ArgumentException($"{op}: logits must be [N, V], got shape {logits.ShapeString}.");
        int n = logits.Dim(0), v = logits.Dim(1);
        int count = CheckTargets(op, targets, n, v, ignoreIndex, labelSmoothing);
        if (v == 0 && count > 0) throw new ArgumentException($"{op}: logits {logits.ShapeString} have no classes.");
        if (logProbsOutput != null) { SameDevice(op, logits, logProbsOutput); SameShape(op, logits, logProbsOutput); }
        logProbs = logProbsOutput ?? Tensor.Empty(logits.Shape, device);
        var loss = Tensor.Empty([], device);
        float invCount = count == 0 ? 0f : 1f / count;
        if (n == 0 || v == 0) { loss.Fill(0f); return loss; }

        if (device is IlgpuDevice gpu)
        {
            GpuLength(logits, op);
            var p = new CrossEntropyParams { N = n, V = v, IgnoreIndex = ignoreIndex, Smoothing = labelSmoothing, Scale = invCount };
            using var rowLoss = Tensor.Empty([n], device);
            using var dtargets = new DeviceInts(gpu, targets);
            CrossEntropyKernels.Forward.On(gpu)(RowReduce.PerRow(gpu, n, v), logits.View, dtargets.View, logProbs.View, rowLoss.View, p);
            CrossEntropyKernels.Mean.On(gpu)(new KernelConfig(1, RowReduce.GroupSize(gpu, n)), rowLoss.View, loss.View, p);
            return loss;
        }

        var xs = logits.HostArray; var lps = logProbs.HostArray;
        bool inPlace = ReferenceEquals(xs, lps);
        var losses = new double[n];
        CpuParallel.For(n, RowGrain(v), (r0, r1) =>
        {
            // In place, the row's exponentials go to scratch and what the loss reads of x is read first.
            float[]? scratch = inPlace ? System.Buffers.ArrayPool<float>.Shared.Rent(v) : null;
            for (long r = r0; r < r1; r++)
            {
                var xr = xs.AsSpan((int)(r * v), v);
                var lr = lps.AsSpan((int)(r * v), v);
                int t = targets[r];
                bool scored = t != ignoreIndex;
                float xt = scored ? xr[t] : 0f;
                float sumX = scored && labelSmoothing != 0f ? TensorPrimitives.Sum(xr) : 0f;
                float shift = LogSoftmaxRow(xr, lr, scratch != null ? scratch.AsSpan(0, v) : lr);
                if (!scored) continue;
                float smooth = labelSmoothing == 0f ? 0f : shift - sumX / v;
                losses[r] = (1f - labelSmoothing) * (shift - xt) + labelSmoothing * smooth;
            }
            if (scratch != null) System.Buffers.ArrayPool<float>.Shared.Return(scratch);
        });
        double total = 0;
        foreach (var l in losses) total += l;
        loss.Span[0] = (float)(total * invCount);
        return loss;
    }

    /// <summary>
    /// dlogits [N, V] = gradScale · (softmax − ((1−ε)·onehot(target) + ε/V)) / countNonIgnored; zero rows
    /// for ignored targets. logProbs is CrossEntropy's saved output; <paramref name="output"/> may be logProbs itself (in
    /// place: each element is read once, then written), else a new tensor is made.
    /// </summary>
    public static Tensor CrossEntropyBackward(Tensor logProbs, int[] targets, int ignoreIndex, float labelSmoothing, float gradScale, Tensor? output = null)
    {
        const string op = "CrossEntropyBackward";
        var device = SameDevice(op, logProbs);
        if (logProbs.Rank != 2) throw new ArgumentException($"{op}: logProbs must be [N, V], got shape {logProbs.ShapeString}.");
        int n = logProbs.Dim(0), v = logProbs.Dim(1);
        int count = CheckTargets(op, targets, n, v, ignoreIndex, labelSmoothing);
        if (output != null) { SameDevice(op, logProbs, output); SameShape(op, logProbs, output); }
        var dx = output ?? Tensor.Empty(logProbs.Shape, device);
        if (dx.Length == 0) return dx;
        float scale = count == 0 ? 0f : gradScale / count;

        if (device is IlgpuDevice gpu)
        {
            int len = GpuLength(logProbs, op);
            var p = new CrossEntropyParams { N = n, V = v, IgnoreIndex = ignoreIndex, Smoothing = labelSmoothing, Scale = scale };
            using var dtargets = new DeviceInts(gpu, targets);
            CrossEntropyKernels.Backward.On(gpu)(LaunchThreads(gpu, len), logProbs.View, dtargets.View, dx.View, p);
            return dx;
        }

        var lps = logProbs.HostArray; var dxs = dx.HostArray;
        float off = scale * labelSmoothing / v;
        CpuParallel.For(n, RowGrain(v), (r0, r1) =>
        {
            for (long r = r0; r < r1; r++)
            {
                var dxr = dxs.AsSpan((int)(r * v), v);
                int t = targets[r];
                if (t == ignoreIndex) { dxr.Clear(); continue; }
                VectorExp.ExpShifted(lps.AsSpan((int)(r * v), v), 0f, dxr);
                // dx = scale·p − scale·ε/V, then the target column loses scale·(1 − ε)
                TensorPrimitives.Multiply(dxr, scale, dxr);
                TensorPrimitives.Subtract(dxr, off, dxr);
                dxr[t] -= scale * (1f - labelSmoothing);
            }
        });
        return dx;
    }
}
