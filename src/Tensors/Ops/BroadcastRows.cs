using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int, int>> BroadcastRowsKernel =
        new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int>(BroadcastRows));

    static void BroadcastRows(Index1D index, ArrayView<float> dest, ArrayView<float> row, int n, int width)
    {
        for (int i = index; i < n; i += GridExtent()) dest[i] = row[i % width];
    }

    /// <summary>
    /// Writes <paramref name="row"/> [C] into every row of <paramref name="destination"/> [N, C] in place.
    /// Linear uses it to start the output at the bias, then lets the matmul accumulate (beta = 1).
    /// </summary>
    public static void BroadcastRowsInto(Tensor destination, Tensor row)
    {
        var device = SameDevice("BroadcastRowsInto", destination, row);
        int width = (int)row.Length;
        if (destination.Rank < 1 || destination.Dim(-1) != width)
            throw new ArgumentException($"BroadcastRowsInto: destination {destination.ShapeString} must end in an axis of {width} (row {row.ShapeString}).");
        if (device is IlgpuDevice gpu)
        {
            int n = GpuLength(destination, "BroadcastRowsInto");
            if (n > 0) BroadcastRowsKernel.On(gpu)(LaunchThreads(gpu, n), destination.View, row.View, n, width);
            return;
        }
        var src = row.Span;
        var dst = destination.Span;
        for (int r = 0; r < dst.Length; r += width) src.CopyTo(dst.Slice(r, width));
    }
}
