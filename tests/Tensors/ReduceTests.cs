using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class ReduceTests
{
    static readonly int[] Widths = [1, 7, 33, 65, 1000];

    public static IEnumerable<object[]> Grid() =>
        from d in Devices() from w in Widths select new object[] { d[0], w };

    [Theory, MemberData(nameof(Grid))]
    public void RowReductionsMatchDoubleReference(string device, int width)
    {
        var d = Dev(device);
        const int rows = 5;
        var data = Random(rows * width, 31, -3f, 3f);
        using var x = Tensor.FromArray(data, [rows, width], d);
        using var sum = Ops.SumLastAxis(x);
        using var mean = Ops.MeanLastAxis(x);
        using var max = Ops.MaxLastAxis(x);
        var argmax = Ops.ArgMaxLastAxis(x);
        Assert.Equal([rows], sum.ShapeArray());
        var rowsRef = Enumerable.Range(0, rows).Select(r => data.Skip(r * width).Take(width).Select(v => (double)v).ToArray()).ToArray();
        Close(rowsRef.Select(r => r.Sum()).ToArray(), sum.ToArray(), 1e-5, 1e-5, $"sum w={width} on {device}");
        Close(rowsRef.Select(r => r.Average()).ToArray(), mean.ToArray(), 1e-6, 1e-5, $"mean w={width} on {device}");
        Close(rowsRef.Select(r => r.Max()).ToArray(), max.ToArray(), 0, 0, $"max w={width} on {device}");
        Assert.Equal(rowsRef.Select(r => Array.IndexOf(r, r.Max())).ToArray(), argmax);
    }

    [Theory, MemberData(nameof(Grid))]
    public void WholeTensorReductionsAreScalars(string device, int width)
    {
        var d = Dev(device);
        var data = Random(3 * width, 32, -3f, 3f);
        using var x = Tensor.FromArray(data, [3, width], d);
        using var sum = Ops.Sum(x);
        using var mean = Ops.Mean(x);
        using var max = Ops.Max(x);
        Assert.Equal(0, sum.Rank);
        Assert.Equal(0, max.Rank);
        Close([data.Sum(v => (double)v)], [sum.Item()], 1e-4, 1e-5, $"sum on {device}");
        Close([data.Average(v => (double)v)], [mean.Item()], 1e-6, 1e-5, $"mean on {device}");
        Close([data.Max(v => (double)v)], [max.Item()], 0, 0, $"max on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void LargeSumUsesPartials(string device)
    {
        var d = Dev(device);
        int n = 45 * 65 * 7;
        var data = Random(n, 33);
        using var x = Tensor.FromArray(data, [45, 65, 7], d);
        using var sum = Ops.Sum(x);
        using var max = Ops.Max(x);
        Close([data.Sum(v => (double)v)], [sum.Item()], 1e-3, 1e-5, $"sum on {device}");
        Close([data.Max(v => (double)v)], [max.Item()], 0, 0, $"max on {device}");
        // One group per row: keep the row count small on the simulator, where barriers are slow.
        using var y = Tensor.FromArray(data[..105], [3, 5, 7], d);
        using var rows = Ops.SumLastAxis(y);
        Assert.Equal([3, 5], rows.ShapeArray());
        Close(Enumerable.Range(0, 15).Select(r => data.Skip(r * 7).Take(7).Sum(v => (double)v)).ToArray(), rows.ToArray(), 1e-5, 1e-5, $"rank-3 rows on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void ArgMaxTakesTheFirstOfTies(string device)
    {
        var d = Dev(device);
        var data = new float[3 * 70];
        data[5] = 2f; data[40] = 2f;                              // row 0: tie at 5 and 40
        for (int j = 0; j < 70; j++) data[70 + j] = -1f;          // row 1: all equal → 0
        data[140 + 69] = 1f; data[140 + 3] = 1f;                  // row 2: tie at 3 and 69
        using var x = Tensor.FromArray(data, [3, 70], d);
        Assert.Equal([5, 0, 3], Ops.ArgMaxLastAxis(x));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void EdgeCases(string device)
    {
        var d = Dev(device);
        using var s = Tensor.Scalar(4f, d);
        using var ss = Ops.Sum(s);
        Assert.Equal(4f, ss.Item());
        using var empty = Tensor.Zeros([0], d);
        using var es = Ops.Sum(empty);
        Assert.Equal(0f, es.Item());
        Assert.Throws<ArgumentException>(() => Ops.Max(empty));
        Assert.Throws<ArgumentException>(() => Ops.SumLastAxis(s));
        using var noCols = Tensor.Zeros([4, 0], d);
        Assert.Throws<ArgumentException>(() => Ops.MaxLastAxis(noCols));
        using var zeroRows = Ops.SumLastAxis(noCols);
        Assert.Equal(new float[4], zeroRows.ToArray());
    }
}
