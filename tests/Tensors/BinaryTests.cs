using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class BinaryTests
{
    static readonly Dictionary<string, (Func<Tensor, Tensor, Tensor> Op, Func<double, double, double> F)> Cases = new()
    {
        ["add"] = (Ops.Add, (a, b) => a + b),
        ["sub"] = (Ops.Sub, (a, b) => a - b),
        ["mul"] = (Ops.Mul, (a, b) => a * b),
        ["div"] = (Ops.Div, (a, b) => a / b),
        ["maximum"] = (Ops.Maximum, Math.Max),
        ["zip_custom"] = ((a, b) => Ops.Zip<HypotOp>(a, b), (a, b) => Math.Sqrt(a * a + b * b)),
    };

    /// <summary>A user-defined op (public: the ILGPU simulator must see it): exercises the generic kernel and the CPU scalar loop.</summary>
    public readonly struct HypotOp : IBinaryOp { public float Apply(float a, float b) => MathF.Sqrt(a * a + b * b); }

    static readonly (int[] A, int[] B)[] Shapes =
    [
        ([1], [1]), ([7], [7]), ([33], [33]), ([45, 65], [45, 65]),
        ([45, 65], [65]), ([45, 1], [1, 65]), ([2, 1, 3, 7], [4, 1, 7]), ([], [7, 5]), ([7, 5], []), ([65], [45, 65]), ([3, 1], [3, 5]),
    ];

    /// <summary>Row-major index of out element i into an operand of <paramref name="shape"/> broadcast to <paramref name="outShape"/>.</summary>
    static long SourceIndex(long i, int[] shape, int[] outShape)
    {
        long src = 0, stride = 1;
        for (int ax = outShape.Length - 1; ax >= 0; ax--)
        {
            long idx = i % outShape[ax];
            i /= outShape[ax];
            int sAx = ax - (outShape.Length - shape.Length);
            if (sAx >= 0)
            {
                if (shape[sAx] != 1) src += idx * stride;
                stride *= shape[sAx];
            }
        }
        return src;
    }

    public static IEnumerable<object[]> Grid() =>
        from d in Devices() from name in Cases.Keys from s in Enumerable.Range(0, Shapes.Length) select new object[] { d[0], name, s };

    [Theory, MemberData(nameof(Grid))]
    public void BroadcastForwardMatchesDoubleReference(string device, string name, int shapeCase)
    {
        var (sa, sb) = Shapes[shapeCase];
        var d = Dev(device);
        var da = Random((int)ShapeMath.Numel(sa), 21, -2f, 2f);
        var db = Random((int)ShapeMath.Numel(sb), 22, 0.5f, 2f); // away from zero for div
        using var a = Tensor.FromArray(da, sa, d);
        using var b = Tensor.FromArray(db, sb, d);
        using var y = Cases[name].Op(a, b);
        var outShape = ShapeMath.Broadcast(sa, sb);
        Assert.Equal(outShape, y.ShapeArray());
        var expected = new double[ShapeMath.Numel(outShape)];
        for (long i = 0; i < expected.Length; i++)
            expected[i] = Cases[name].F(da[SourceIndex(i, sa, outShape)], db[SourceIndex(i, sb, outShape)]);
        Close(expected, y.ToArray(), 1e-6, 1e-5, $"{name} {ShapeMath.Format(sa)} with {ShapeMath.Format(sb)} on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SumToInvertsEveryBroadcast(string device)
    {
        var d = Dev(device);
        foreach (var (sa, sb) in Shapes.Append(([2, 1, 3, 1], [2, 5, 3, 4])).Append(([1, 1], [7, 5])))
        {
            var outShape = ShapeMath.Broadcast(sa, sb);
            var dg = Random((int)ShapeMath.Numel(outShape), 23);
            using var g = Tensor.FromArray(dg, outShape, d);
            foreach (var target in new[] { sa, sb })
            {
                using var r = Ops.SumTo(g, target);
                Assert.Equal(target, r.ShapeArray());
                var expected = new double[ShapeMath.Numel(target)];
                for (long i = 0; i < dg.Length; i++) expected[SourceIndex(i, target, outShape)] += dg[i];
                Close(expected, r.ToArray(), 1e-5, 1e-5, $"SumTo {ShapeMath.Format(outShape)} -> {ShapeMath.Format(target)} on {device}");
            }
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void LargeShapesCrossCpuChunkBoundaries(string device)
    {
        // Big enough that the CPU splits work into chunks that end mid-row.
        var d = Dev(device);
        foreach (var (sa, sb) in new[] { (new[] { 300, 257 }, new[] { 257 }), ([257, 300], [257, 1]), ([300, 257], [300, 257]), ([], [300, 257]) })
        {
            var outShape = ShapeMath.Broadcast(sa, sb);
            var da = Random((int)ShapeMath.Numel(sa), 27); var db = Random((int)ShapeMath.Numel(sb), 28);
            using var a = Tensor.FromArray(da, sa, d);
            using var b = Tensor.FromArray(db, sb, d);
            using var y = Ops.Sub(a, b);
            var expected = new double[ShapeMath.Numel(outShape)];
            for (long i = 0; i < expected.Length; i++) expected[i] = da[SourceIndex(i, sa, outShape)] - (double)db[SourceIndex(i, sb, outShape)];
            Close(expected, y.ToArray(), 1e-6, 1e-6, $"sub {ShapeMath.Format(sa)} {ShapeMath.Format(sb)} on {device}");
            var dy = y.ToArray();
            using var r = Ops.SumTo(y, sb);
            var sums = new double[ShapeMath.Numel(sb)];
            for (long i = 0; i < dy.Length; i++) sums[SourceIndex(i, sb, outShape)] += dy[i];
            Close(sums, r.ToArray(), 1e-4, 1e-5, $"SumTo {ShapeMath.Format(sb)} on {device}");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SumToSameShapeIsAFreshCopy(string device)
    {
        var d = Dev(device);
        using var g = RandomTensor(d, 24, 7, 5);
        using var r = Ops.SumTo(g, [7, 5]);
        r.Fill(0f);
        Assert.NotEqual(0f, g.ToArray()[0]);
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BroadcastErrorsNameBothShapes(string device)
    {
        var d = Dev(device);
        using var a = Tensor.Zeros([3, 4], d);
        using var b = Tensor.Zeros([5], d);
        var e = Assert.Throws<ArgumentException>(() => Ops.Add(a, b));
        Assert.Contains("[3, 4]", e.Message);
        Assert.Contains("[5]", e.Message);
        var s = Assert.Throws<ArgumentException>(() => Ops.SumTo(a, [2, 4]));
        Assert.Contains("[3, 4]", s.Message);
        Assert.Contains("[2, 4]", s.Message);
        // Five alternating broadcast groups cannot be collapsed to four axes.
        using var c = Tensor.Zeros([2, 1, 2, 1, 2], d);
        using var e2 = Tensor.Zeros([1, 2, 1, 2, 1], d);
        var many = Assert.Throws<ArgumentException>(() => Ops.Mul(c, e2));
        Assert.Contains("[2, 1, 2, 1, 2]", many.Message);
    }

    [Fact]
    public void MixedDevicesAreRejected()
    {
        using var a = Tensor.Zeros([3], Dev("cpu"));
        using var b = Tensor.Zeros([3], Dev("ilgpu-cpu"));
        Assert.Throws<ArgumentException>(() => Ops.Add(a, b));
        Assert.Throws<ArgumentException>(() => Ops.AddInPlace(a, b));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void InPlaceAccumulateAndScale(string device)
    {
        var d = Dev(device);
        foreach (int n in new[] { 1, 7, 33, 45 * 65 })
        {
            var dt = Random(n, 25); var ds = Random(n, 26);
            using var t = Tensor.FromArray(dt, [n], d);
            using var s = Tensor.FromArray(ds, [n], d);
            Ops.AddInPlace(t, s);
            Ops.AddInPlace(t, s, -0.25f);
            Ops.ScaleInPlace(t, 3f);
            Close(dt.Select((v, i) => 3.0 * (v + ds[i] - 0.25 * ds[i])).ToArray(), t.ToArray(), 1e-5, 1e-5, $"in place n={n} on {device}");
        }
        using var x = Tensor.Zeros([3], d);
        using var y = Tensor.Zeros([4], d);
        Assert.Throws<ArgumentException>(() => Ops.AddInPlace(x, y));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void MaximumGradientMask(string device)
    {
        var d = Dev(device);
        using var a = Tensor.FromArray([1f, 5f, 3f, 3f], [4], d);
        using var b = Tensor.FromArray([2f, 4f, 3f, -1f], [4], d);
        using var mask = Ops.Zip<GreaterEqualOp>(a, b);
        Assert.Equal([0f, 1f, 1f, 1f], mask.ToArray());
        using var nan = Tensor.FromArray([float.NaN, 1f], [2], d);
        using var one = Tensor.FromArray([0f, float.NaN], [2], d);
        using var m = Ops.Maximum(nan, one);
        Assert.All(m.ToArray(), v => Assert.True(float.IsNaN(v)));
    }
}
