using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class OptimizerTests
{
    public static IEnumerable<object[]> Grid() =>
        from d in Devices() from n in new[] { 1, 7, 33, 45 * 65, 40_001 } select new object[] { d[0], n };

    [Theory, MemberData(nameof(Grid))]
    public void AdamWMatchesDoubleReferenceForThreeSteps(string device, int n)
    {
        var d = Dev(device);
        // The API takes float hyperparameters; the reference uses exactly those values (0.999f ≠ 0.999).
        const double lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
        var p0 = Random(n, 61);
        double[] p = p0.Select(x => (double)x).ToArray(), m = new double[n], v = new double[n];
        using var param = Tensor.FromArray(p0, [n], d);
        using var mt = Tensor.Zeros([n], d);
        using var vt = Tensor.Zeros([n], d);
        for (int step = 1; step <= 3; step++)
        {
            var g = Random(n, 61 + step, -2f, 2f);
            using var grad = Tensor.FromArray(g, [n], d);
            Ops.AdamWStep(param, grad, mt, vt, (float)lr, (float)b1, (float)b2, (float)eps, (float)wd, step);
            for (int i = 0; i < n; i++)
            {
                p[i] -= lr * wd * p[i];
                m[i] = b1 * m[i] + (1 - b1) * g[i];
                v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
                p[i] -= lr * (m[i] / (1 - Math.Pow(b1, step))) / (Math.Sqrt(v[i] / (1 - Math.Pow(b2, step))) + eps);
            }
            Close(p, param.ToArray(), 1e-6, 1e-5, $"AdamW param step {step} on {device}");
            Close(m, mt.ToArray(), 1e-7, 1e-5, $"AdamW m step {step} on {device}");
            Close(v, vt.ToArray(), 1e-8, 1e-5, $"AdamW v step {step} on {device}");
        }
    }

    public static IEnumerable<object[]> SgdGrid() =>
        from d in Devices()
        from c in new[] { (0.0, 0.0, false, 0.0), (0.9, 0.0, false, 0.01), (0.9, 0.1, false, 0.0), (0.9, 0.0, true, 0.01) }
        select new object[] { d[0], c.Item1, c.Item2, c.Item3, c.Item4 };

    [Theory, MemberData(nameof(SgdGrid))]
    public void SgdMatchesTorchSemantics(string device, double momentum, double dampening, bool nesterov, double wd)
    {
        var d = Dev(device);
        const int n = 45 * 65;
        const double lr = 0.05;
        var p0 = Random(n, 71);
        double[] p = p0.Select(x => (double)x).ToArray(), buf = new double[n];
        using var param = Tensor.FromArray(p0, [n], d);
        using var bufT = momentum != 0 ? Tensor.Zeros([n], d, MemoryCategory.OptimizerState) : null;
        for (int step = 1; step <= 3; step++)
        {
            var g = Random(n, 71 + step);
            using var grad = Tensor.FromArray(g, [n], d);
            Ops.SgdStep(param, grad, bufT, (float)lr, (float)momentum, (float)dampening, (float)wd, nesterov, step == 1);
            for (int i = 0; i < n; i++)
            {
                double dp = g[i] + wd * p[i];
                if (momentum != 0)
                {
                    buf[i] = step == 1 ? dp : momentum * buf[i] + (1 - dampening) * dp;
                    dp = nesterov ? dp + momentum * buf[i] : buf[i];
                }
                p[i] -= lr * dp;
            }
            Close(p, param.ToArray(), 1e-6, 1e-5, $"SGD step {step} on {device}");
            if (bufT != null) Close(buf, bufT.ToArray(), 1e-6, 1e-5, $"SGD buffer step {step} on {device}");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SgdValidatesItsArguments(string device)
    {
        var d = Dev(device);
        using var p = Tensor.Zeros([7], d);
        using var g = Tensor.Zeros([7], d);
        using var b = Tensor.Zeros([7], d);
        using var wrong = Tensor.Zeros([6], d);
        Assert.Throws<ArgumentException>(() => Ops.SgdStep(p, g, null, 0.1f, 0.9f, 0f, 0f, false, true));
        Assert.Throws<ArgumentException>(() => Ops.SgdStep(p, g, b, 0.1f, 0.9f, 0.1f, 0f, true, true));
        Assert.Throws<ArgumentException>(() => Ops.SgdStep(p, wrong, b, 0.1f, 0.9f, 0f, 0f, false, true));
        Assert.Throws<ArgumentException>(() => Ops.AdamWStep(p, g, b, wrong, 0.1f, 0.9f, 0.99f, 1e-8f, 0f, 1));
        Assert.Throws<ArgumentException>(() => Ops.AdamWStep(p, g, b, b, 0.1f, 0.9f, 0.99f, 1e-8f, 0f, 0));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void SumOfSquaresOverManyTensors(string device)
    {
        var d = Dev(device);
        var arrays = new[] { Random(1, 81), Random(7, 82), Random(33, 83), Random(45 * 65, 84), Random(100_003, 85, -3f, 3f) };
        var tensors = arrays.Select(a => Tensor.FromArray(a, [a.Length], d)).ToList();
        tensors.Add(Tensor.Zeros([0], d));
        try
        {
            double expected = arrays.Sum(a => a.Sum(x => (double)x * x));
            double actual = Ops.SumOfSquares(tensors);
            Assert.True(Math.Abs(expected - actual) <= 1e-5 * expected, $"SumOfSquares on {device}: expected {expected}, got {actual}");
            Assert.Equal(0.0, Ops.SumOfSquares([]));
        }
        finally { tensors.ForEach(t => t.Dispose()); }
    }
}
