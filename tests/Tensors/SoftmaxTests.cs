using Nanolora.Tensors;
using static Nanolora.Tests.FiniteDifference;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class SoftmaxTests
{
    // ---- double references ------------------------------------------------------------------------

    /// <summary>Softmax over the last axis with the op's causal and key-mask rules (mask ≤ −1e9 drops a key).</summary>
    static double[] SoftmaxRef(double[] x, int[] shape, bool causal = false, double[]? mask = null)
    {
        int s = shape[^1], t = shape.Length >= 2 ? shape[^2] : 1, rows = x.Length / s, perBatch = rows / shape[0];
        var y = new double[x.Length];
        for (int r = 0; r < rows; r++)
        {
            var logit = new double[s];
            for (int j = 0; j < s; j++)
            {
                double v = x[r * s + j];
                if (causal && j > r % t + s - t) v = double.NegativeInfinity;
                if (mask != null) v = mask[r / perBatch * s + j] <= -1e9 ? double.NegativeInfinity : v + mask[r / perBatch * s + j];
                logit[j] = v;
            }
            double max = logit.Max();
            if (double.IsNegativeInfinity(max)) continue;
            double sum = logit.Sum(v => Math.Exp(v - max));
            for (int j = 0; j < s; j++) y[r * s + j] = Math.Exp(logit[j] - max) / sum;
        }
        return y;
    }

    static double[] LogSoftmaxRef(double[] x, int s)
    {
        var y = new double[x.Length];
        for (int r = 0; r < x.Length / s; r++)
        {
            var row = x.AsSpan(r * s, s).ToArray();
            double max = row.Max(), lse = max + Math.Log(row.Sum(v => Math.Exp(v - max)));
            for (int j = 0; j < s; j++) y[r * s + j] = row[j] - lse;
        }
        return y;
    }

    static double[] SoftmaxBackwardRef(double[] y, double[] dy, int s)
    {
        var dx = new double[y.Length];
        for (int r = 0; r < y.Length / s; r++)
        {
            double dot = 0;
            for (int j = 0; j < s; j++) dot += dy[r * s + j] * y[r * s + j];
            for (int j = 0; j < s; j++) dx[r * s + j] = y[r * s + j] * (dy[r * s + j] - dot);
        }
        return dx;
    }

    static double[] LogSoftmaxBackwardRef(double[] y, double[] dy, int s)
    {
        var dx = new double[y.Length];
        for (int r = 0; r < y.Length / s; r++)
        {
            double sum = 0;
            for (int j = 0; j < s; j++) sum += dy[r * s + j];
            for (int j = 0; j < s; j++) dx[r * s + j] = dy[r * s + j] - Math.Exp(y[r * s + j]) * sum;
        }
        return dx;
    }

    // ---- cases --------------------------------------------------------------------------------------

    public static IEnumerable<object[]> Shapes() =>
        from d in Devices() from rows in new[] { 1, 7, 33 } from width in new[] { 1, 7, 33, 65 } select new object[] { d[0], rows, width };

    [Theory, MemberData(nameof(Shapes))]
    public void SoftmaxAndBackwardMatchDoubleReference(string device, int rows, int width)
    {
        var d = Dev(device);
        var data = Random(rows * width, 21, -4f, 4f);
        var grad = Random(rows * width, 22);
        using var x = Tensor.FromArray(data, [rows, width], d);
        using var dy = Tensor.FromArray(grad, [rows, width], d);
        using var y = Ops.Softmax(x);
        var expected = SoftmaxRef(data.ToDouble(), [rows, width]);
        Close(expected, y.ToArray(), 1e-6, 1e-5, $"softmax [{rows}, {width}] on {device}");
        using var dx = Ops.SoftmaxBackward(y, dy);
        Close(SoftmaxBackwardRef(expected, grad.ToDouble(), width), dx.ToArray(), 1e-6, 1e-4, $"softmax backward [{rows}, {width}] on {device}");
    }

    [Theory, MemberData(nameof(Shapes))]
    public void LogSoftmaxAndBackwardMatchDoubleReference(string device, int rows, int width)
    {
        var d = Dev(device);
        var data = Random(rows * width, 23, -4f, 4f);
        var grad = Random(rows * width, 24);
        using var x = Tensor.FromArray(data, [rows, width], d);
        using var dy = Tensor.FromArray(grad, [rows, width], d);
        using var y = Ops.LogSoftmax(x);
        var expected = LogSoftmaxRef(data.ToDouble(), width);
        Close(expected, y.ToArray(), 2e-6, 2e-6, $"log-softmax [{rows}, {width}] on {device}");
        using var dx = Ops.LogSoftmaxBackward(y, dy);
        Close(LogSoftmaxBackwardRef(expected, grad.ToDouble(), width), dx.ToArray(), 2e-6, 1e-4, $"log-softmax backward [{rows}, {width}] on {device}");
    }

    public static IEnumerable<object[]> MaskCases() =>
        from d in Devices() from causal in new[] { false, true } from masked in new[] { false, true } select new object[] { d[0], causal, masked };

    /// <summary>
    /// x [2, 3, 5, 7]: T = 5 queries over S = 7 keys. Batch 0 drops keys 0..2 (one by −∞), so with causal
    /// its query 0 (which sees keys 0..2) is fully masked; batch 1 has soft biases and drops key 6.
    /// </summary>
    static readonly float[] KeyMask = [-1e9f, float.NegativeInfinity, -1e30f, 0f, 0f, 0f, 0f, 0.5f, -1f, 0f, -2f, 0f, 0f, -1e9f];

    /// <summary>
    /// Rows of 37 keys, 5 causal queries (33…37 kept) with a key mask: the CPU path runs full vectors plus an
    /// overlapping partial one, in place over the masked row — every tail length from 1 to 5 occurs.
    /// </summary>
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void WideMaskedCausalRowsMatchDoubleReference(string device)
    {
        var d = Dev(device);
        int[] shape = [2, 3, 5, 37];
        var data = Random(2 * 3 * 5 * 37, 27, -3f, 3f);
        var maskValues = Random(2 * 37, 28, -2f, 0.5f);
        maskValues[3] = float.NegativeInfinity;
        maskValues[37 + 36] = -1e9f;
        using var x = Tensor.FromArray(data, shape, d);
        using var mask = Tensor.FromArray(maskValues, [2, 37], d);
        using var y = Ops.Softmax(x, causal: true, mask);
        Close(SoftmaxRef(data.ToDouble(), shape, true, maskValues.ToDouble()), y.ToArray(), 1e-6, 1e-5, $"wide masked causal softmax on {device}");
    }

    [Theory, MemberData(nameof(MaskCases))]
    public void CausalAndKeyMaskMatchDoubleReference(string device, bool causal, bool masked)
    {
        var d = Dev(device);
        int[] shape = [2, 3, 5, 7];
        var data = Random(2 * 3 * 5 * 7, 25, -3f, 3f);
        var grad = Random(data.Length, 26);
        using var x = Tensor.FromArray(data, shape, d);
        using var mask = Tensor.FromArray(KeyMask, [2, 7], d);
        using var dy = Tensor.FromArray(grad, shape, d);
        using var y = Ops.Softmax(x, causal, masked ? mask : null);
        var expected = SoftmaxRef(data.ToDouble(), shape, causal, masked ? KeyMask.ToDouble() : null);
        var actual = y.ToArray();
        Close(expected, actual, 1e-6, 1e-5, $"softmax causal={causal} masked={masked} on {device}");
        Assert.DoesNotContain(actual, float.IsNaN);
        if (causal && masked)
            for (int b = 0; b < 3; b++) // batch 0, head b, query 0: every key dropped
                Assert.All(actual.AsSpan(b * 35, 7).ToArray(), v => Assert.Equal(0f, v));
        using var dx = Ops.SoftmaxBackward(y, dy);
        Close(SoftmaxBackwardRef(expected, grad.ToDouble(), 7), dx.ToArray(), 1e-6, 1e-4, $"masked softmax backward on {device}");
    }

    [Theory, MemberData(nameof(MaskCases))]
    public void InPlaceForwardAndBackwardAreTheSameBitForBit(string device, bool causal, bool masked)
    {
        // Attention writes its probabilities over the scores and backward's dx over dy: every row must be read whole
        // before any of it is written, on every device. Width 67 spans several of a GPU group's strides.
        var d = Dev(device);
        int[] shape = [2, 3, 5, 67];
        var data = Random(2 * 3 * 5 * 67, 27, -3f, 3f);
        var grad = Random(data.Length, 28);
        var maskValues = Random(2 * 67, 29, -2f, 2f);
        for (int j = 0; j < 67; j += 5) maskValues[j] = -1e9f;
        using var mask = Tensor.FromArray(maskValues, [2, 67], d);
        using var x = Tensor.FromArray(data, shape, d);
        using var y = Ops.Softmax(x, causal, masked ? mask : null);
        var inPlace = Ops.Softmax(x, causal, masked ? mask : null, output: x);
        Assert.Same(x, inPlace);
        Assert.Equal(y.ToArray(), x.ToArray());

        using var dy = Tensor.FromArray(grad, shape, d);
        using var dx = Ops.SoftmaxBackward(y, dy);
        Assert.Same(dy, Ops.SoftmaxBackward(y, dy, output: dy));
        Assert.Equal(dx.ToArray(), dy.ToArray());
    }

    [Fact]
    public void InPlaceOutputOfAnotherShapeIsRefused()
    {
        using var x = Tensor.FromArray(Random(12, 30), [3, 4]);
        using var other = Tensor.Zeros([4, 3]);
        var e = Assert.Throws<ArgumentException>(() => Ops.Softmax(x, output: other));
        Assert.Contains("Softmax", e.Message);
        using var dy = Tensor.FromArray(Random(12, 31), [3, 4]);
        Assert.Throws<ArgumentException>(() => Ops.SoftmaxBackward(x, dy, output: other));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void CausalWithFewerQueriesThanKeysAndMoreQueriesThanKeys(string device)
    {
        var d = Dev(device);
        foreach (var shape in new[] { new[] { 1, 2, 7 }, new[] { 1, 4, 3 } })
        {
            var data = Random(shape.Aggregate(1, (a, b) => a * b), 27);
            using var x = Tensor.FromArray(data, shape, d);
            using var y = Ops.Softmax(x, causal: true);
            Close(SoftmaxRef(data.ToDouble(), shape, causal: true), y.ToArray(), 1e-6, 1e-5, $"causal {string.Join('x', shape)} on {device}");
        }
    }

    [Fact]
    public void BackwardRulesAgreeWithFiniteDifferences()
    {
        var d = Device.Cpu;
        int[] shape = [2, 3, 4, 5];
        var data = Random(120, 31, -2f, 2f);
        var w = Random(120, 32).ToDouble();
        var maskD = new double[] { 0, 0, -1e9, 0, 0, 0.3, 0, 0, -0.7, 0 };
        using var x = Tensor.FromArray(data, shape, d);
        using var mask = Tensor.FromArray(maskD.Select(v => (float)v).ToArray(), [2, 5], d);
        using var dy = Tensor.FromArray(w.Select(v => (float)v).ToArray(), shape, d);

        using (var y = Ops.Softmax(x, causal: true, keyMask: mask))
        using (var dx = Ops.SoftmaxBackward(y, dy))
        {
            var numeric = Gradient(v => Weighted(w, SoftmaxRef(v, shape, causal: true, mask: maskD)), data.ToDouble());
            Close(numeric, dx.ToArray(), 1e-5, 1e-3, "softmax backward vs finite differences");
        }
        using (var y = Ops.LogSoftmax(x))
        using (var dx = Ops.LogSoftmaxBackward(y, dy))
        {
            var numeric = Gradient(v => Weighted(w, LogSoftmaxRef(v, 5)), data.ToDouble());
            Close(numeric, dx.ToArray(), 1e-5, 1e-3, "log-softmax backward vs finite differences");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BadShapesThrowNamingBoth(string device)
    {
        var d = Dev(device);
        using var x = Tensor.Zeros([2, 3, 5], d);
        using var v = Tensor.Zeros([5], d);
        using var wrongMask = Tensor.Zeros([3, 5], d);
        var e = Assert.Throws<ArgumentException>(() => Ops.Softmax(x, keyMask: wrongMask));
        Assert.Contains("[2, 5]", e.Message);
        Assert.Contains("[3, 5]", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.Softmax(v, causal: true));
        using var dy = Tensor.Zeros([2, 3, 4], d);
        Assert.Throws<ArgumentException>(() => Ops.SoftmaxBackward(x, dy));
        Assert.Throws<ArgumentException>(() => Ops.LogSoftmaxBackward(x, dy));
    }
}
