using Nanolora.Tensors;
using static Nanolora.Tests.FiniteDifference;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class EmbeddingTests
{
    static int[] Ids(int n, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
    }

    static double[] EmbeddingBackwardRef(double[] dy, int[] ids, int vocab, int c)
    {
        var dw = new double[vocab * c];
        for (int p = 0; p < ids.Length; p++)
            for (int j = 0; j < c; j++) dw[ids[p] * c + j] += dy[p * c + j];
        return dw;
    }

    public static IEnumerable<object[]> Cases() =>
        from d in Devices()
        from shape in new[] { new[] { 1 }, new[] { 7 }, new[] { 3, 11 }, new[] { 2, 3, 5 } }
        from width in new[] { 1, 7, 33, 65 }
        select new object[] { d[0], shape, width };

    [Theory, MemberData(nameof(Cases))]
    public void LookupAndScatterAddMatchReference(string device, int[] idsShape, int width)
    {
        var d = Dev(device);
        const int vocab = 13;
        int n = idsShape.Aggregate(1, (a, b) => a * b);
        var ids = Ids(n, vocab, 61);
        if (n > 2) ids[n - 1] = ids[0] = ids[1]; // guarantee repeats
        var w = Random(vocab * width, 62);
        var grad = Random(n * width, 63);
        using var weight = Tensor.FromArray(w, [vocab, width], d);
        using var y = Ops.Embedding(weight, ids, idsShape);
        Assert.Equal([.. idsShape, width], y.ShapeArray());
        var expected = ids.SelectMany(id => w.AsSpan(id * width, width).ToArray()).ToArray();
        Assert.Equal(expected, y.ToArray()); // a lookup copies bits exactly

        using var dy = Tensor.FromArray(grad, [.. idsShape, width], d);
        using var dw = Ops.EmbeddingBackward(dy, ids, vocab);
        Assert.Equal([vocab, width], dw.ShapeArray());
        Close(EmbeddingBackwardRef(grad.ToDouble(), ids, vocab, width), dw.ToArray(), 1e-6, 1e-5, $"embedding backward {string.Join('x', idsShape)}x{width} on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void RepeatedIdsAccumulateAndUnseenRowsAreZero(string device)
    {
        var d = Dev(device);
        int[] ids = [4, 1, 4, 4, 0];
        var grad = new float[] { 1, 2, 10, 20, 100, 200, 1000, 2000, 5, 6 };
        using var dy = Tensor.FromArray(grad, [5, 2], d);
        using var dw = Ops.EmbeddingBackward(dy, ids, 6);
        Assert.Equal(new float[] { 5, 6, 10, 20, 0, 0, 0, 0, 1101, 2202, 0, 0 }, dw.ToArray());
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void OutOfRangeIdThrowsNamingIdPositionAndVocabulary(string device)
    {
        var d = Dev(device);
        using var weight = Tensor.Zeros([10, 4], d);
        var e = Assert.Throws<ArgumentException>(() => Ops.Embedding(weight, [1, 2, 3, 10, 5, 6], [2, 3]));
        Assert.Contains("id 10", e.Message);
        Assert.Contains("position 3", e.Message);
        Assert.Contains("[1, 0]", e.Message);
        Assert.Contains("10)", e.Message);
        e = Assert.Throws<ArgumentException>(() => Ops.Embedding(weight, [-1], [1]));
        Assert.Contains("id -1", e.Message);
        Assert.Contains("position 0", e.Message);
        using var dy = Tensor.Zeros([2, 4], d);
        e = Assert.Throws<ArgumentException>(() => Ops.EmbeddingBackward(dy, [0, 10], 10));
        Assert.Contains("id 10", e.Message);
        Assert.Contains("position 1", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.Embedding(weight, [1, 2], [3]));
        Assert.Throws<ArgumentException>(() => Ops.EmbeddingBackward(dy, [0, 1, 2], 10));
    }

    [Fact]
    public void BackwardAgreesWithFiniteDifferences()
    {
        var d = Device.Cpu;
        int vocab = 5, c = 3;
        int[] ids = [2, 0, 2, 4, 2, 1];
        var w = Random(vocab * c, 64).ToDouble();
        var upstream = Random(ids.Length * c, 65).ToDouble();
        using var dy = Tensor.FromArray(upstream.Select(v => (float)v).ToArray(), [2, 3, c], d);
        using var dw = Ops.EmbeddingBackward(dy, ids, vocab);
        double Loss(double[] weight) => Weighted(upstream, ids.SelectMany(id => weight.AsSpan(id * c, c).ToArray()).ToArray());
        Close(Gradient(Loss, w), dw.ToArray(), 1e-6, 1e-4, "embedding dW vs finite differences");
    }
}
