using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class LayoutTests
{
    /// <summary>Naive permute: out[idx] = x[idx mapped back through axes].</summary>
    static double[] PermuteRef(float[] x, int[] shape, int[] axes)
    {
        int rank = shape.Length;
        var outShape = axes.Select(a => shape[a]).ToArray();
        var inStride = new long[rank];
        for (int i = rank - 1, s = 1; i >= 0; s *= shape[i], i--) inStride[i] = s;
        var result = new double[x.Length];
        for (long o = 0; o < x.Length; o++)
        {
            long rem = o, src = 0;
            for (int k = rank - 1; k >= 0; k--)
            {
                src += rem % outShape[k] * inStride[axes[k]];
                rem /= outShape[k];
            }
            result[o] = x[src];
        }
        return result;
    }

    static readonly int[][] Orders =
    [
        [0, 1, 2, 3], [0, 2, 1, 3], [3, 2, 1, 0], [0, 1, 3, 2], [1, 0, 2, 3], [2, 3, 0, 1], [0, 3, 1, 2], [-1, 0, -2, 1],
    ];

    public static IEnumerable<object[]> PermuteGrid() =>
        from d in Devices() from o in Enumerable.Range(0, Orders.Length) select new object[] { d[0], o };

    [Theory, MemberData(nameof(PermuteGrid))]
    public void PermuteMatchesReferenceAndInverts(string device, int order)
    {
        var d = Dev(device);
        int[] shape = [2, 3, 4, 5];
        var axes = Orders[order];
        var norm = axes.Select(a => a < 0 ? a + 4 : a).ToArray();
        var data = Random(120, 41);
        using var x = Tensor.FromArray(data, shape, d);
        using var y = Ops.Permute(x, axes);
        Assert.Equal(norm.Select(a => shape[a]).ToArray(), y.ShapeArray());
        Close(PermuteRef(data, shape, norm), y.ToArray(), 0, 0, $"permute [{string.Join(",", axes)}] on {device}");
        var inverse = new int[4];
        for (int k = 0; k < 4; k++) inverse[norm[k]] = k;
        using var back = Ops.Permute(y, inverse);
        Assert.Equal(data, back.ToArray());
    }

    // The CPU copies a permute's output rows in chunks over the threads, carrying each chunk's source offset from row to
    // row (an odometer over the axes): at this size every order but the identity (a plain copy) is cut into several chunks
    // on two or more cores, where the small shapes above fit one chunk from row 0.
    [Theory]
    [InlineData(0)] [InlineData(1)] [InlineData(2)] [InlineData(3)] [InlineData(4)] [InlineData(5)] [InlineData(6)] [InlineData(7)]
    public void PermuteOfManyRowsMatchesReferenceInEveryChunk(int order)
    {
        int[] shape = [3, 29, 7, 130];
        var axes = Orders[order];
        var norm = axes.Select(a => a < 0 ? a + 4 : a).ToArray();
        var data = Random(3 * 29 * 7 * 130, 47);
        using var x = Tensor.FromArray(data, shape, Device.Cpu);
        using var y = Ops.Permute(x, axes);
        Close(PermuteRef(data, shape, norm), y.ToArray(), 0, 0, $"permute [{string.Join(",", axes)}] of [3, 29, 7, 130]");
    }

    // The odometer against the division-based decoding the GPU kernel uses (PermuteLayout.Source), for every start row and
    // runs of several lengths, whatever the thread count: the head split, a transpose (the last axis strided) and a
    // six-axis reversal; rows outside the run stay untouched.
    [Fact]
    public void PermuteRowsFromAnyStartMatchTheDecodedOffsets()
    {
        var layouts = new[]
        {
            new PermuteLayout { N = 3 * 7 * 29 * 130, D1 = 1, D2 = 3, D3 = 7, D4 = 29, D5 = 130, S2 = 29 * 7 * 130, S3 = 130, S4 = 7 * 130, S5 = 1 },
            new PermuteLayout { N = 65 * 45, D1 = 1, D2 = 1, D3 = 1, D4 = 65, D5 = 45, S4 = 1, S5 = 65 },
            new PermuteLayout { N = 720, D1 = 2, D2 = 3, D3 = 2, D4 = 5, D5 = 4, S0 = 1, S1 = 3, S2 = 6, S3 = 18, S4 = 36, S5 = 180 },
        };
        foreach (var l in layouts)
        {
            var xs = Random(l.N, 48);
            int rows = l.N / l.D5;
            for (int start = 0; start < rows; start += Math.Max(1, rows / 97))
                foreach (int length in new[] { 1, 2, 7, 31, rows })
                {
                    int end = Math.Min(rows, start + length);
                    var ys = Enumerable.Repeat(float.NaN, l.N).ToArray();
                    Ops.PermuteRows(l, xs, ys, start, end);
                    for (int i = 0; i < l.N; i++)
                    {
                        int row = i / l.D5;
                        float expected = row >= start && row < end ? xs[l.Source(i)] : float.NaN;
                        Assert.True(expected.Equals(ys[i]), $"layout D5 {l.D5} S5 {l.S5}, rows [{start}, {end}), element {i}: {ys[i]} vs {expected}");
                    }
                }
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void PermuteOddShapesAndTranspose(string device)
    {
        var d = Dev(device);
        var data = Random(45 * 65, 42);
        using var x = Tensor.FromArray(data, [45, 65], d);
        using var t = Ops.Transpose(x, 0, 1);
        Close(PermuteRef(data, [45, 65], [1, 0]), t.ToArray(), 0, 0, $"transpose on {device}");
        // Size-1 axes and a rank-6 permutation.
        var six = Random(2 * 1 * 3 * 2 * 1 * 5, 43);
        int[] shape6 = [2, 1, 3, 2, 1, 5];
        using var x6 = Tensor.FromArray(six, shape6, d);
        int[] axes6 = [5, 3, 0, 1, 4, 2];
        using var y6 = Ops.Permute(x6, axes6);
        Close(PermuteRef(six, shape6, axes6), y6.ToArray(), 0, 0, $"rank-6 permute on {device}");
        Assert.Throws<ArgumentException>(() => Ops.Permute(x, 0, 0));
        Assert.Throws<ArgumentException>(() => Ops.Permute(x, 0));
        Assert.Throws<ArgumentException>(() => Ops.Transpose(x, 0, 2));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void ConcatSliceRoundTrip(string device)
    {
        var d = Dev(device);
        for (int axis = 0; axis < 3; axis++)
        {
            int[] sa = [3, 4, 5], sb = [3, 4, 5], sc = [3, 4, 5];
            sa[axis] = 1; sb[axis] = 7; sc[axis] = 2;
            using var a = RandomTensor(d, 44, sa);
            using var b = RandomTensor(d, 45, sb);
            using var c = RandomTensor(d, 46, sc);
            using var cat = Ops.Concat([a, b, c], axis);
            var expectedShape = new[] { 3, 4, 5 };
            expectedShape[axis] = 10;
            Assert.Equal(expectedShape, cat.ShapeArray());
            using var a2 = Ops.Slice(cat, axis, 0, 1);
            using var b2 = Ops.Slice(cat, axis - 3, 1, 7);   // negative axis
            using var c2 = Ops.Slice(cat, axis, 8, 2);
            Assert.Equal(a.ToArray(), a2.ToArray());
            Assert.Equal(b.ToArray(), b2.ToArray());
            Assert.Equal(c.ToArray(), c2.ToArray());
            Assert.Equal(sb, b2.ShapeArray());

            // WriteSlice rebuilds the concatenation in a zeroed tensor, in any order.
            using var rebuilt = Tensor.Zeros(expectedShape, d);
            Ops.WriteSlice(rebuilt, c, axis, 8);
            Ops.WriteSlice(rebuilt, a, axis, 0);
            Ops.WriteSlice(rebuilt, b, axis, 1);
            Assert.Equal(cat.ToArray(), rebuilt.ToArray());
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SliceMatchesReferenceAndValidates(string device)
    {
        var d = Dev(device);
        var data = Random(45 * 65, 47);
        using var x = Tensor.FromArray(data, [45, 65], d);
        using var s = Ops.Slice(x, 1, 13, 33);
        var expected = new float[45 * 33];
        for (int r = 0; r < 45; r++) for (int c = 0; c < 33; c++) expected[r * 33 + c] = data[r * 65 + 13 + c];
        Assert.Equal(expected, s.ToArray());
        using var empty = Ops.Slice(x, 0, 45, 0);
        Assert.Equal([0, 65], empty.ShapeArray());
        var e = Assert.Throws<ArgumentException>(() => Ops.Slice(x, 1, 60, 6));
        Assert.Contains("65", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.Slice(x, 2, 0, 1));
        using var wrong = Tensor.Zeros([44, 3], d);
        Assert.Throws<ArgumentException>(() => Ops.WriteSlice(x, wrong, 1, 0));
        using var fits = Tensor.Zeros([45, 3], d);
        Assert.Throws<ArgumentException>(() => Ops.WriteSlice(x, fits, 1, 63));
        Assert.Throws<ArgumentException>(() => Ops.Concat([x, wrong], 1));
    }
}
