using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>A reduction as a struct: each element is mapped, then combined from <see cref="Identity"/>.</summary>
internal interface IReduceOp
{
    float Identity { get; }
    float Map(float x);
    float Combine(float a, float b);
}

internal readonly struct SumReduce : IReduceOp
{
    public float Identity => 0f;
    public float Map(float x) => x;
    public float Combine(float a, float b) => a + b;
}
/// <summary>Max that propagates NaN, like torch.max.</summary>
internal readonly struct MaxReduce : IReduceOp
{
    public float Identity => float.NegativeInfinity;
    public float Map(float x) => x;
    public float Combine(float a, float b) => a > b || XMath.IsNaN(a) ? a : b;
}
internal readonly struct SquareSumReduce : IReduceOp
{
    public float Identity => 0f;
    public float Map(float x) => x * x;
    public float Combine(float a, float b) => a + b;
}

public static partial class Ops
{
    /// <summary>Shared-memory size of the reduction kernels: the largest group they are launched with.</summary>
    const int ReduceMaxGroup = 256;

    static class ReduceKernels<TOp> where TOp : struct, IReduceOp
    {
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, float, TOp>> Rows =
            new(acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, float, TOp>(RowsKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, TOp>> Partials =
            new(acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, TOp>(PartialsKernel));

        // One group per row of n: strided accumulation, then a tree in shared memory. y[row] = scale·result.
        static void RowsKernel(ArrayView<float> x, ArrayView<float> y, int n, float scale, TOp op)
        {
            var shared = SharedMemory.Allocate<float>(ReduceMaxGroup);
            int row = Grid.IdxX, tid = Group.IdxX, size = Group.DimX;
            int rowStart = row * n;
            float acc = op.Identity;
            for (int j = tid; j < n; j += size) acc = op.Combine(acc, op.Map(x[rowStart + j]));
            float result = TreeReduce(shared, acc, tid, size, op);
            if (tid == 0) y[row] = result * scale;
        }

        // Group g reduces the elements g·size + tid + k·(groups·size); partials[g] is its result.
        static void PartialsKernel(ArrayView<float> x, ArrayView<float> partials, int n, TOp op)
        {
            var shared = SharedMemory.Allocate<float>(ReduceMaxGroup);
            int tid = Group.IdxX, size = Group.DimX;
            float acc = op.Identity;
            for (int j = Grid.IdxX * size + tid; j < n; j += Grid.DimX * size) acc = op.Combine(acc, op.Map(x[j]));
            float result = TreeReduce(shared, acc, tid, size, op);
            if (tid == 0) partials[Grid.IdxX] = result;
        }

        // Every thread returns the group's result (group size is a power of two). Each kernel here reduces
        // once into its own buffer, so the final load of shared[0] may land anywhere (RowReduce explains why that matters).
        static float TreeReduce(ArrayView<float> shared, float acc, int tid, int size, TOp op)
        {
            shared[tid] = acc;
            Group.Barrier();
            for (int s = size / 2; s > 0; s >>= 1)
            {
                if (tid < s) shared[tid] = op.Combine(shared[tid], shared[tid + s]);
                Group.Barrier();
            }
            return shared[0];
        }
    }

    /// <summary>A power-of-two group size for reducing n elements (small on the simulator, where each thread is an OS thread).</summary>
    static int ReduceGroupSize(IlgpuDevice gpu, long n)
    {
        int cap = Math.Min(gpu.Kind == DeviceKind.IlgpuCpu ? 64 : ReduceMaxGroup, gpu.Accelerator.MaxNumThreadsPerGroup);
        int size = 1;
        while (size * 2 <= cap && size < n) size <<= 1;
        return size;
    }

    /// <summary>Pass one of a whole-tensor reduction: a small tensor of per-group partial results.</summary>
    static Tensor ReducePartials<TOp>(IlgpuDevice gpu, Tensor x) where TOp : struct, IReduceOp
    {
        int n = GpuLength(x, "reduce");
        int size = ReduceGroupSize(gpu, n);
        int groups = (int)Math.Min((n + size - 1L) / size, gpu.Kind == DeviceKind.IlgpuCpu ? 8 : 1024);
        var partials = Tensor.Empty([Math.Max(groups, 1)], gpu, MemoryCategory.Other);
        ReduceKernels<TOp>.Partials.On(gpu)(new KernelConfig(groups, size), x.View, partials.View, n, default);
        return partials;
    }

    /// <summary>Reduces rows of n on the device: y[r] = scale·reduce(x[r·n .. r·n+n)).</summary>
    static void ReduceRowsGpu<TOp>(IlgpuDevice gpu, ArrayView<float> x, ArrayView<float> y, int rows, int n, float scale) where TOp : struct, IReduceOp
    {
        if (rows == 0) return;
        ReduceKernels<TOp>.Rows.On(gpu)(new KernelConfig(rows, ReduceGroupSize(gpu, n)), x, y, n, scale, default);
    }

    static Tensor ReduceAll<TOp>(Tensor x, float scale, string name) where TOp : struct, IReduceOp
    {
        var device = SameDevice(name, x);
        var y = Tensor.Empty([], device);
        if (device is IlgpuDevice gpu)
        {
            int n = GpuLength(x, name);
            if (n <= ReduceGroupSize(gpu, n)) { ReduceRowsGpu<TOp>(gpu, x.View, y.View, 1, n, scale); return y; }
            using var partials = ReducePartials<TOp>(gpu, x);
            ReduceRowsGpu<TOp>(gpu, partials.View, y.View, 1, (int)partials.Length, scale);
            return y;
        }
        var xs = x.HostArray;
        var op = default(TOp);
        double total = op.Identity;
        var gate = new object();
        CpuParallel.For(x.Length, 1 << 16, (start, end) =>
        {
            var span = xs.AsSpan((int)start, (int)(end - start));
            double part = typeof(TOp) == typeof(MaxReduce) ? TensorPrimitives.Max(span) : TensorPrimitives.Sum(span);
            lock (gate) total = typeof(TOp) == typeof(MaxReduce) ? op.Combine((float)total, (float)part) : total + part;
        });
        y.HostArray[0] = (float)(total * scale);
        return y;
    }

    /// <summary>Σ x over all elements; shape [].</summary>
    public static Tensor Sum(Tensor x) => ReduceAll<SumReduce>(x, 1f, nameof(Sum));

    /// <summary>Mean over all elements; shape [] (NaN for an empty tensor).</summary>
    public static Tensor Mean(Tensor x) => ReduceAll<SumReduce>(x, 1f / x.Length, nameof(Mean));

    /// <summary>Max over all elements; shape []. Throws for an empty tensor.</summary>
    public static Tensor Max(Tensor x)
    {
        if (x.Length == 0) throw new ArgumentException($"Max: the tensor {x.ShapeString} is empty.");
        return ReduceAll<MaxReduce>(x, 1f, nameof(Max));
    }

    static Tensor ReduceLastAxis<TOp>(Tensor x, bool mean, string name) where TOp : struct, IReduceOp
    {
        var device = SameDevice(name, x);
        if (x.Rank == 0) throw new ArgumentException($"{name}: needs a tensor of rank ≥ 1, got shape {x.ShapeString}.");
        int n = x.Dim(-1);
        var outShape = x.Shape[..^1];
        int rows = checked((int)ShapeMath.Numel(outShape));
        if (n == 0 && typeof(TOp) == typeof(MaxReduce)) throw new ArgumentException($"{name}: the last axis of {x.ShapeString} is empty.");
        float scale = mean ? 1f / n : 1f;
        var y = Tensor.Empty(outShape, device);
        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, name);
            ReduceRowsGpu<TOp>(gpu, x.View, y.View, rows, n, scale);
            return y;
        }
        var xs = x.HostArray; var ys = y.HostArray;
        CpuParallel.For(rows, Math.Max(1, (1 << 15) / Math.Max(1, n)), (start, end) =>
        {
            for (long r = start; r < end; r++)
            {
                var row = xs.AsSpan((int)(r * n), n);
                ys[r] = typeof(TOp) == typeof(MaxReduce) ? TensorPrimitives.Max(row) : TensorPrimitives.Sum(row) * scale;
            }
        });
        return y;
    }

    /// <summary>[..., N] → [...]: Σ over the last axis.</summary>
    public static Tensor SumLastAxis(Tensor x) => ReduceLastAxis<SumReduce>(x, false, nameof(SumLastAxis));
    /// <summary>[..., N] → [...]: mean over the last axis.</summary>
    public static Tensor MeanLastAxis(Tensor x) => ReduceLastAxis<SumReduce>(x, true, nameof(MeanLastAxis));
    /// <summary>[..., N] → [...]: max over the last axis (N ≥ 1).</summary>
    public static Tensor MaxLastAxis(Tensor x) => ReduceLastAxis<MaxReduce>(x, false, nameof(MaxLastAxis));

    static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<int>, int>> ArgMaxKernel =
        new(acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<int>, int>(ArgMaxRows));

    // Whether (v2, i2) beats (v1, i1): larger value, NaN above all, the lower index on ties.
    static bool ArgMaxBetter(float v2, int i2, float v1, int i1)
    {
        bool nan1 = XMath.IsNaN(v1), nan2 = XMath.IsNaN(v2);
        if (nan1 || nan2) return nan2 && (!nan1 || i2 < i1);
        return v2 > v1 || (v2 == v1 && i2 < i1);
    }

    static void ArgMaxRows(ArrayView<float> x, ArrayView<int> result, int n)
    {
        var values = SharedMemory.Allocate<float>(ReduceMaxGroup);
        var indices = SharedMemory.Allocate<int>(ReduceMaxGroup);
        int row = Grid.IdxX, tid = Group.IdxX, size = Group.DimX, rowStart = row * n;
        float best = float.NegativeInfinity;
        int bestIndex = int.MaxValue;
        for (int j = tid; j < n; j += size)
            if (ArgMaxBetter(x[rowStart + j], j, best, bestIndex)) { best = x[rowStart + j]; bestIndex = j; }
        values[tid] = best; indices[tid] = bestIndex;
        Group.Barrier();
        for (int s = size / 2; s > 0; s >>= 1)
        {
            if (tid < s && ArgMaxBetter(values[tid + s], indices[tid + s], values[tid], indices[tid]))
            {
                values[tid] = values[tid + s]; indices[tid] = indices[tid + s];
            }
            Group.Barrier();
        }
        if (tid == 0) result[row] = indices[0];
    }

    /// <summary>[..., N] → one index per row (host array), the first maximum on ties; a NaN counts as the maximum.</summary>
    public static int[] ArgMaxLastAxis(Tensor x)
    {
        var device = SameDevice(nameof(ArgMaxLastAxis), x);
        if (x.Rank == 0) throw new ArgumentException($"ArgMaxLastAxis: needs a tensor of rank ≥ 1, got shape {x.ShapeString}.");
        int n = x.Dim(-1);
        if (n == 0) throw new ArgumentException($"ArgMaxLastAxis: the last axis of {x.ShapeString} is empty.");
        int rows = checked((int)(x.Length / n));
        var result = new int[rows];
        if (rows == 0) return result;
        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, nameof(ArgMaxLastAxis));
            // A transient int buffer outside the float pool: the result leaves the device at once.
            using var buffer = gpu.Accelerator.Allocate1D<int>(rows);
            ArgMaxKernel.On(gpu)(new KernelConfig(rows, ReduceGroupSize(gpu, n)), x.View, buffer.View, n);
            gpu.Synchronize();
            buffer.View.CopyToCPU(result);
            gpu.Synchronize();
            return result;
        }
        var xs = x.HostArray;
        CpuParallel.For(rows, Math.Max(1, (1 << 15) / n), (start, end) =>
        {
            for (long r = start; r < end; r++) result[r] = TensorPrimitives.IndexOfMax<float>(xs.AsSpan((int)(r * n), n));
        });
        return result;
    }
}
