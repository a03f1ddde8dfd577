using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// A permutation as a gather: output axes (after dropping size-1 axes and merging runs that stay
/// adjacent in the source) with the source stride of each, padded at the front to 6.
/// </summary>
internal struct PermuteLayout
{
    public int N, D1, D2, D3, D4, D5, S0, S1, S2, S3, S4, S5;

    /// <summary>Source offset of output element i.</summary>
    public readonly int Source(int i)
    {
        int i5 = i % D5; i /= D5;
        int i4 = i % D4; i /= D4;
        int i3 = i % D3; i /= D3;
        int i2 = i % D2; i /= D2;
        int i1 = i % D1, i0 = i / D1;
        return i0 * S0 + i1 * S1 + i2 * S2 + i3 * S3 + i4 * S4 + i5 * S5;
    }
}

/// <summary>Copies N elements in blocks: block o, element r goes from src[o·SrcStride + SrcOffset + r] to dst[o·DstStride + DstOffset + r].</summary>
internal readonly struct BlockCopy(int n, int block, int srcStride, int srcOffset, int dstStride, int dstOffset)
{
    public readonly int N = n, Block = block, SrcStride = srcStride, SrcOffset = srcOffset, DstStride = dstStride, DstOffset = dstOffset;
}

public static partial class Ops
{
    const int MaxPermuteRank = 6;

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, PermuteLayout>> PermuteKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, PermuteLayout>(PermuteGather));
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, BlockCopy>> BlockCopyKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, BlockCopy>(BlockCopyGpu));

    static void PermuteGather(Index1D index, ArrayView<float> x, ArrayView<float> y, PermuteLayout l)
    {
        for (int i = index; i < l.N; i += GridExtent()) y[i] = x[l.Source(i)];
    }

    static void BlockCopyGpu(Index1D index, ArrayView<float> src, ArrayView<float> dst, BlockCopy c)
    {
        for (int i = index; i < c.N; i += GridExtent())
        {
            int o = i / c.Block, r = i - o * c.Block;
            dst[o * c.DstStride + c.DstOffset + r] = src[o * c.SrcStride + c.SrcOffset + r];
        }
    }

    static int NormalizeAxis(string op, int axis, int rank)
    {
        int a = axis < 0 ? axis + rank : axis;
        if (a < 0 || a >= rank) throw new ArgumentException($"{op}: axis {axis} is out of range for rank {rank}.");
        return a;
    }

    /// <summary>
    /// y = x with axes reordered: y.shape[k] = x.shape[axes[k]] (rank ≤ 6; negative axes count from the end).
    /// Backward: Permute(dy, inverse of axes). When the last axis stays last (e.g. [B,T,H,D] → [B,H,T,D]) the
    /// CPU copies whole rows.
    /// </summary>
    public static Tensor Permute(Tensor x, params int[] axes)
    {
        var device = SameDevice(nameof(Permute), x);
        int rank = x.Rank;
        if (axes.Length != rank) throw new ArgumentException($"Permute: {axes.Length} axes given for a tensor of shape {x.ShapeString}; expected {rank}.");
        if (rank > MaxPermuteRank) throw new ArgumentException($"Permute: rank {rank} (shape {x.ShapeString}) exceeds the supported {MaxPermuteRank}.");
        var perm = new int[rank];
        var seen = new bool[rank];
        for (int k = 0; k < rank; k++)
        {
            perm[k] = NormalizeAxis(nameof(Permute), axes[k], rank);
            if (seen[perm[k]]) throw new ArgumentException($"Permute: axes [{string.Join(", ", axes)}] repeat axis {perm[k]}.");
            seen[perm[k]] = true;
        }
        var inStride = new long[rank];
        for (int i = rank - 1, s = 1; i >= 0; s *= x.Shape[i], i--) inStride[i] = s;
        var outShape = new int[rank];
        var dims = new List<(long Dim, long Stride)>();
        for (int k = 0; k < rank; k++)
        {
            int d = x.Shape[perm[k]];
            outShape[k] = d;
            if (d == 1) continue;
            if (dims.Count > 0 && dims[^1].Stride == inStride[perm[k]] * d) dims[^1] = (dims[^1].Dim * d, inStride[perm[k]]);
            else dims.Add((d, inStride[perm[k]]));
        }
        var y = Tensor.Empty(outShape, device);
        if (y.Length == 0) return y;
        if (dims.Count <= 1) { y.CopyFrom(x); return y; }
        while (dims.Count < MaxPermuteRank) dims.Insert(0, (1, 0));
        var l = new PermuteLayout
        {
            N = GpuLength(x, nameof(Permute)),
            D1 = (int)dims[1].Dim, D2 = (int)dims[2].Dim, D3 = (int)dims[3].Dim, D4 = (int)dims[4].Dim, D5 = (int)dims[5].Dim,
            S0 = (int)dims[0].Stride, S1 = (int)dims[1].Stride, S2 = (int)dims[2].Stride, S3 = (int)dims[3].Stride, S4 = (int)dims[4].Stride, S5 = (int)dims[5].Stride,
        };
        if (device is IlgpuDevice gpu)
        {
            PermuteKernel.On(gpu)(LaunchThreads(gpu, l.N), x.View, y.View, l);
            return y;
        }
        var xs = x.HostArray; var ys = y.HostArray;
        int inner = l.D5, rows = l.N / inner;
        CpuParallel.For(rows, Math.Max(1, (1 << 14) / inner), (start, end) => PermuteRows(l, xs, ys, (int)start, (int)end));
        return y;
    }

    /// <summary>
    /// Output rows [start, end) of a permute (a row: the D5 elements of the last output axis). The source offset is carried
    /// from row to row like an odometer over the other axes: decoding each row's offset with five divisions cost more than
    /// copying its 64 floats (attention's head split ran at 42 GB/s against PyTorch's 112, run-all 2026-12-06 15:00).
    /// </summary>
    internal static void PermuteRows(in PermuteLayout l, float[] xs, float[] ys, int start, int end)
    {
        int inner = l.D5;
        int r = start;
        int i4 = r % l.D4; r /= l.D4;
        int i3 = r % l.D3; r /= l.D3;
        int i2 = r % l.D2; r /= l.D2;
        int i1 = r % l.D1, i0 = r / l.D1;
        int src = i0 * l.S0 + i1 * l.S1 + i2 * l.S2 + i3 * l.S3 + i4 * l.S4;
        for (int row = start, dst = start * inner; row < end; row++, dst += inner)
        {
            if (l.S5 == 1) xs.AsSpan(src, inner).CopyTo(ys.AsSpan(dst, inner));
            else for (int j = 0, at = src; j < inner; j++, at += l.S5) ys[dst + j] = xs[at];
            // Next row: step the innermost of the other axes, carrying into the ones above it.
            src += l.S4;
            if (++i4 < l.D4) continue;
            i4 = 0; src += l.S3 - l.D4 * l.S4;
            if (++i3 < l.D3) continue;
            i3 = 0; src += l.S2 - l.D3 * l.S3;
            if (++i2 < l.D2) continue;
            i2 = 0; src += l.S1 - l.D2 * l.S2;
            if (++i1 < l.D1) continue;
            i1 = 0; src += l.S0 - l.D1 * l.S1;
        }
    }

    /// <summary>Swaps two axes (a <see cref="Permute"/>).</summary>
    public static Tensor Transpose(Tensor x, int axis0, int axis1)
    {
        int a0 = NormalizeAxis(nameof(Transpose), axis0, x.Rank), a1 = NormalizeAxis(nameof(Transpose), axis1, x.Rank);
        var axes = Enumerable.Range(0, x.Rank).ToArray();
        (axes[a0], axes[a1]) = (axes[a1], axes[a0]);
        return Permute(x, axes);
    }

    static void RunBlockCopy(Tensor src, Tensor dst, BlockCopy c)
    {
        if (c.N == 0) return;
        if (dst.Device is IlgpuDevice gpu)
        {
            BlockCopyKernel.On(gpu)(LaunchThreads(gpu, c.N), src.View, dst.View, c);
            return;
        }
        var s = src.HostArray; var d = dst.HostArray;
        int blocks = c.N / c.Block;
        CpuParallel.For(blocks, Math.Max(1, (1 << 15) / c.Block), (start, end) =>
        {
            for (int o = (int)start; o < end; o++) Array.Copy(s, o * c.SrcStride + c.SrcOffset, d, o * c.DstStride + c.DstOffset, c.Block);
        });
    }

    /// <summary>Elements before axis (outer) and after it (inner), as ints for 32-bit kernel indexing.</summary>
    static (int Outer, int Inner) AroundAxis(Tensor t, int axis, string op)
    {
        GpuLength(t, op);
        long outer = 1, inner = 1;
        for (int i = 0; i < axis; i++) outer *= t.Shape[i];
        for (int i = axis + 1; i < t.Rank; i++) inner *= t.Shape[i];
        return ((int)outer, (int)inner);
    }

    /// <summary>x[.., start:start+length, ..] along <paramref name="axis"/>, as a fresh tensor. Backward: WriteSlice of dy into zeros.</summary>
    public static Tensor Slice(Tensor x, int axis, int start, int length)
    {
        var device = SameDevice(nameof(Slice), x);
        axis = NormalizeAxis(nameof(Slice), axis, x.Rank);
        int dim = x.Shape[axis];
        if (start < 0 || length < 0 || (long)start + length > dim)
            throw new ArgumentException($"Slice: [{start}, {start}+{length}) is outside axis {axis} of size {dim} (shape {x.ShapeString}).");
        var shape = x.ShapeArray();
        shape[axis] = length;
        var y = Tensor.Empty(shape, device);
        var (outer, inner) = AroundAxis(x, axis, nameof(Slice));
        int block = length * inner;
        RunBlockCopy(x, y, new BlockCopy(outer * block, Math.Max(block, 1), dim * inner, start * inner, block, 0));
        return y;
    }

    /// <summary>In place: destination[.., start:start+len, ..] = source along <paramref name="axis"/> (len = source's size there).</summary>
    public static void WriteSlice(Tensor destination, Tensor source, int axis, int start)
    {
        SameDevice(nameof(WriteSlice), destination, source);
        axis = NormalizeAxis(nameof(WriteSlice), axis, destination.Rank);
        bool ok = source.Rank == destination.Rank;
        for (int i = 0; ok && i < source.Rank; i++) ok = i == axis || source.Shape[i] == destination.Shape[i];
        if (!ok) throw new ArgumentException($"WriteSlice: source {source.ShapeString} must match destination {destination.ShapeString} on every axis but {axis}.");
        int length = source.Shape[axis], dim = destination.Shape[axis];
        if (start < 0 || (long)start + length > dim)
            throw new ArgumentException($"WriteSlice: [{start}, {start}+{length}) is outside axis {axis} of size {dim} (destination {destination.ShapeString}).");
        var (outer, inner) = AroundAxis(destination, axis, nameof(WriteSlice));
        int block = length * inner;
        RunBlockCopy(source, destination, new BlockCopy(outer * block, Math.Max(block, 1), block, 0, dim * inner, start * inner));
    }

    /// <summary>Joins tensors along <paramref name="axis"/>; all other axes must match. Backward: Slice of dy per input.</summary>
    public static Tensor Concat(IReadOnlyList<Tensor> xs, int axis)
    {
        if (xs.Count == 0) throw new ArgumentException("Concat: needs at least one tensor.");
        var device = SameDevice(nameof(Concat), [.. xs]);
        var first = xs[0];
        axis = NormalizeAxis(nameof(Concat), axis, first.Rank);
        var shape = first.ShapeArray();
        long total = 0;
        foreach (var t in xs)
        {
            bool ok = t.Rank == first.Rank;
            for (int i = 0; ok && i < t.Rank; i++) ok = i == axis || t.Shape[i] == first.Shape[i];
            if (!ok) throw new ArgumentException($"Concat: shapes {first.ShapeString} and {t.ShapeString} differ off axis {axis}.");
            total += t.Shape[axis];
        }
        shape[axis] = checked((int)total);
        var y = Tensor.Empty(shape, device);
        int offset = 0;
        foreach (var t in xs)
        {
            WriteSlice(y, t, axis, offset);
            offset += t.Shape[axis];
        }
        return y;
    }
}
