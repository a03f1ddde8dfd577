using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// Embedding lookup and its backward. The backward groups positions by id on the host (a counting
/// sort, O(n + V)), so every row of dW is summed by one worker in position order: no atomics, and the
/// same bits on every run and backend.
/// </summary>
public static partial class Ops
{
    static class EmbeddingKernels
    {
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>> Forward =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(ForwardKernel));
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>> Backward =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(BackwardKernel));

        // y[p, c] = weight[ids[p], c]
        static void ForwardKernel(Index1D index, ArrayView<float> weight, ArrayView<int> ids, ArrayView<float> y, int n, int c)
        {
            for (int i = index; i < n; i += GridExtent())
            {
                int p = i / c;
                y[i] = weight[ids[p] * c + (i - p * c)];
            }
        }

        public static readonly Kernel<Action<Index1D, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, int, int>> Forward16 =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<int>, ArrayView<float>, int, int>(ForwardKernel16));

        // The same from a bfloat16 table (a frozen 16-bit base), widened as it is read.
        static void ForwardKernel16(Index1D index, ArrayView<ushort> weight, ArrayView<int> ids, ArrayView<float> y, int n, int c)
        {
            for (int i = index; i < n; i += GridExtent())
            {
                int p = i / c;
                y[i] = Interop.IntAsFloat((uint)weight[ids[p] * c + (i - p * c)] << 16);
            }
        }

        // groups = [unique ids (u) | starts (u + 1) | positions]; item (k, col) sums dy over the positions of unique id k.
        static void BackwardKernel(Index1D index, ArrayView<float> dy, ArrayView<int> groups, ArrayView<float> dw, int u, int c)
        {
            int n = u * c;
            for (int i = index; i < n; i += GridExtent())
            {
                int k = i / c, col = i - k * c;
                float acc = 0f;
                for (int q = groups[u + k]; q < groups[u + k + 1]; q++) acc += dy[groups[2 * u + 1 + q] * c + col];
                dw[groups[k] * c + col] = acc;
            }
        }
    }

    /// <summary>Throws unless every id is in [0, vocabSize), naming the first bad one and its position.</summary>
    internal static void CheckIds(string op, int[] ids, int vocabSize, ReadOnlySpan<int> idsShape)
    {
        for (int p = 0; p < ids.Length; p++)
            if ((uint)ids[p] >= (uint)vocabSize)
                throw new ArgumentException($"{op}: id {ids[p]} at position {p}{PositionIn(p, idsShape)} is outside the vocabulary [0, {vocabSize}) (V = {vocabSize}).");
    }

    static string PositionIn(int flat, ReadOnlySpan<int> shape)
    {
        if (shape.Length < 2) return "";
        var index = new int[shape.Length];
        for (int a = shape.Length - 1; a >= 0; a--) { index[a] = flat % shape[a]; flat /= shape[a]; }
        return $" (index [{string.Join(", ", index)}] of shape {ShapeMath.Format(shape)})";
    }

    /// <summary>Rows of weight [V, C] picked by ids (shape <paramref name="idsShape"/>): output [..idsShape, C]. The table may be bfloat16 (widened as read).</summary>
    public static Tensor Embedding(Tensor weight, int[] ids, ReadOnlySpan<int> idsShape)
    {
        const string op = "Embedding";
        var device = SameDevice(op, weight);
        ArgumentNullException.ThrowIfNull(ids);
        if (weight.Rank != 2) throw new ArgumentException($"{op}: weight must be [V, C], got shape {weight.ShapeString}.");
        ShapeMath.Validate(idsShape);
        if (ShapeMath.Numel(idsShape) != ids.Length)
            throw new ArgumentException($"{op}: idsShape {ShapeMath.Format(idsShape)} holds {ShapeMath.Numel(idsShape)} ids but {ids.Length} were given.");
        int v = weight.Dim(0), c = weight.Dim(1);
        CheckIds(op, ids, v, idsShape);
        var shape = new int[idsShape.Length + 1];
        idsShape.CopyTo(shape);
        shape[^1] = c;
        var y = Tensor.Empty(shape, device);
        if (y.Length == 0) return y;

        if (device is IlgpuDevice gpu)
        {
            GpuLength(weight, op);
            int n = GpuLength(y, op);
            using var dids = new DeviceInts(gpu, ids);
            if (weight.DType == DType.BFloat16) EmbeddingKernels.Forward16.On(gpu)(LaunchThreads(gpu, n), weight.View16, dids.View, y.View, n, c);
            else EmbeddingKernels.Forward.On(gpu)(LaunchThreads(gpu, n), weight.View, dids.View, y.View, n, c);
            return y;
        }
        if (weight.DType == DType.BFloat16)
        {
            var w16 = weight.Host16; var y16 = y.HostArray;
            CpuParallel.For(ids.Length, RowGrain(c), (p0, p1) =>
            {
                for (long p = p0; p < p1; p++) BFloat16.Widen(w16.AsSpan(ids[p] * c, c), y16.AsSpan((int)(p * c), c));
            });
            return y;
        }
        var w = weight.HostArray; var ys = y.HostArray;
        CpuParallel.For(ids.Length, RowGrain(c), (p0, p1) =>
        {
            for (long p = p0; p < p1; p++) w.AsSpan(ids[p] * c, c).CopyTo(ys.AsSpan((int)(p * c), c));
        });
        return y;
    }

    /// <summary>
    /// dW [V, C]: row v is the sum of the dy rows at the positions where ids == v (zero for unseen ids).
    /// dy [..., C] with ids.Length rows.
    /// </summary>
    public static Tensor EmbeddingBackward(Tensor dy, int[] ids, int vocabSize)
    {
        const string op = "EmbeddingBackward";
        var device = SameDevice(op, dy);
        ArgumentNullException.ThrowIfNull(ids);
        if (vocabSize < 0) throw new ArgumentException($"{op}: vocabSize must be >= 0, got {vocabSize}.");
        if (dy.Rank < 1) throw new ArgumentException($"{op}: dy must be [..., C], got shape {dy.ShapeString}.");
        int c = dy.Dim(-1);
        if (dy.Length != (long)ids.Length * c)
            throw new ArgumentException($"{op}: dy {dy.ShapeString} must hold {ids.Length} rows of {c} (one per id), but holds {(c == 0 ? 0 : dy.Length / c)}.");
        CheckIds(op, ids, vocabSize, []);
        var dw = Tensor.Zeros([vocabSize, c], device);
        if (ids.Length == 0 || c == 0) return dw;
        var groups = GroupPositionsById(ids, vocabSize, out int u);

        if (device is IlgpuDevice gpu)
        {
            GpuLength(dy, op);
            GpuLength(dw, op);
            using var dgroups = new DeviceInts(gpu, groups);
            EmbeddingKernels.Backward.On(gpu)(LaunchThreads(gpu, (long)u * c), dy.View, dgroups.View, dw.View, u, c);
            return dw;
        }
        var dys = dy.HostArray; var dws = dw.HostArray;
        CpuParallel.For(u, Math.Max(1, RowGrain(c) / Math.Max(1, ids.Length / u)), (k0, k1) =>
        {
            for (long k = k0; k < k1; k++)
            {
                var row = dws.AsSpan(groups[k] * c, c);
                for (int q = groups[u + k]; q < groups[u + k + 1]; q++)
                    TensorPrimitives.Add(row, dys.AsSpan(groups[2 * u + 1 + q] * c, c), row);
            }
        });
        return dw;
    }

    /// <summary>
    /// Counting sort of positions by id: returns [unique ids ascending (u) | start of each id's run (u + 1) |
    /// positions, ascending within each run (n)].
    /// </summary>
    static int[] GroupPositionsById(int[] ids, int vocabSize, out int u)
    {
        var next = new int[vocabSize];
        foreach (var id in ids) next[id]++;
        u = 0;
        foreach (var count in next) if (count > 0) u++;
        var groups = new int[2 * u + 1 + ids.Length];
        int k = 0, offset = 0;
        for (int v = 0; v < vocabSize; v++)
        {
            if (next[v] == 0) continue;
            groups[k] = v;
            groups[u + k] = offset;
            int count = next[v];
            next[v] = offset;
            offset += count;
            k++;
        }
        groups[2 * u] = offset;
        int posBase = 2 * u + 1;
        for (int p = 0; p < ids.Length; p++) groups[posBase + next[ids[p]]++] = p;
        return groups;
    }
}
