using Nanolora.Tensors;
using static Nanolora.Tests.FiniteDifference;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class LayerNormTests
{
    const float Eps = 1e-5f;

    // ---- double references ------------------------------------------------------------------------

    /// <summary>LayerNorm (rms: false) or RMSNorm (rms: true) over rows of width c; also returns mean and rstd.</summary>
    static double[] NormRef(double[] x, double[] gamma, double[]? beta, int c, bool rms, out double[] mean, out double[] rstd)
    {
        int rows = x.Length / c;
        var y = new double[x.Length];
        mean = new double[rows]; rstd = new double[rows];
        for (int r = 0; r < rows; r++)
        {
            var row = x.AsSpan(r * c, c).ToArray();
            double mu = rms ? 0 : row.Average();
            double v = row.Sum(e => (e - mu) * (e - mu)) / c;
            double rs = 1 / Math.Sqrt(v + Eps);
            for (int j = 0; j < c; j++) y[r * c + j] = (row[j] - mu) * rs * gamma[j] + (beta?[j] ?? 0);
            mean[r] = mu; rstd[r] = rs;
        }
        return y;
    }

    static double[] NormBackwardRef(double[] dy, double[] x, double[] gamma, double[] mean, double[] rstd, int c, bool rms,
        out double[] dGamma, out double[] dBeta)
    {
        int rows = x.Length / c;
        var dx = new double[x.Length];
        dGamma = new double[c]; dBeta = new double[c];
        for (int r = 0; r < rows; r++)
        {
            double sg = 0, sgx = 0;
            for (int j = 0; j < c; j++)
            {
                double xh = (x[r * c + j] - mean[r]) * rstd[r], g = dy[r * c + j] * gamma[j];
                sg += g; sgx += g * xh;
                dGamma[j] += dy[r * c + j] * xh;
                dBeta[j] += dy[r * c + j];
            }
            sg = rms ? 0 : sg / c; sgx /= c;
            for (int j = 0; j < c; j++)
            {
                double xh = (x[r * c + j] - mean[r]) * rstd[r];
                dx[r * c + j] = rstd[r] * (dy[r * c + j] * gamma[j] - sg - xh * sgx);
            }
        }
        return dx;
    }

    // ---- cases --------------------------------------------------------------------------------------

    public static IEnumerable<object[]> Shapes() =>
        from d in Devices() from rows in new[] { 1, 7, 33 } from width in new[] { 1, 7, 25, 33, 65 } from rms in new[] { false, true }
        select new object[] { d[0], rows, width, rms };

    [Theory, MemberData(nameof(Shapes))]
    public void ForwardAndBackwardMatchDoubleReference(string device, int rows, int width, bool rms)
    {
        var d = Dev(device);
        string what = $"{(rms ? "rmsnorm" : "layernorm")} [{rows}, {width}] on {device}";
        // An offset so that the mean matters, and widths where C is not a multiple of any vector size.
        var data = Random(rows * width, 41, -2f, 3f);
        var g = Random(width, 42, 0.5f, 1.5f);
        var b = Random(width, 43);
        var grad = Random(rows * width, 44);
        using var x = Tensor.FromArray(data, [rows, width], d);
        using var gamma = Tensor.FromArray(g, [width], d);
        using var beta = Tensor.FromArray(b, [width], d);
        using var dy = Tensor.FromArray(grad, [rows, width], d);

        Tensor? mean = null;
        Tensor rstd;
        using var y = rms ? Ops.RmsNorm(x, gamma, Eps, out rstd) : Ops.LayerNorm(x, gamma, beta, Eps, out mean, out rstd);
        using var _m = mean; using var _r = rstd;
        var expected = NormRef(data.ToDouble(), g.ToDouble(), rms ? null : b.ToDouble(), width, rms, out var mu, out var rs);
        Close(expected, y.ToArray(), 1e-5, 1e-4, what);
        Close(rs, rstd.ToArray(), 1e-5, 1e-4, what + " rstd");
        Assert.Equal([rows], rstd.ShapeArray());
        if (mean != null) Close(mu, mean.ToArray(), 1e-6, 1e-5, what + " mean");

        var dxRef = NormBackwardRef(grad.ToDouble(), data.ToDouble(), g.ToDouble(), mu, rs, width, rms, out var dgRef, out var dbRef);
        foreach (var withParams in new[] { true, false })
        {
            Tensor? dGamma, dBeta = null;
            using var dx = rms
                ? Ops.RmsNormBackward(dy, x, gamma, rstd, withParams, out dGamma)
                : Ops.LayerNormBackward(dy, x, gamma, mean!, rstd, withParams, out dGamma, out dBeta);
            using var _g = dGamma; using var _b = dBeta;
            Close(dxRef, dx.ToArray(), 2e-5, 2e-4, what + " dx");
            if (!withParams) { Assert.Null(dGamma); Assert.Null(dBeta); continue; }
            Close(dgRef, dGamma!.ToArray(), 2e-5, 2e-4, what + " dGamma");
            if (rms) Assert.Null(dBeta);
            else Close(dbRef, dBeta!.ToArray(), 2e-5, 2e-4, what + " dBeta");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void LayerNormWithoutBetaAndHigherRank(string device)
    {
        var d = Dev(device);
        var data = Random(2 * 3 * 9, 45, -1f, 2f);
        var g = Random(9, 46, 0.5f, 1.5f);
        using var x = Tensor.FromArray(data, [2, 3, 9], d);
        using var gamma = Tensor.FromArray(g, [9], d);
        using var y = Ops.LayerNorm(x, gamma, null, Eps, out var mean, out var rstd);
        using var _m = mean; using var _r = rstd;
        Assert.Equal([2, 3, 9], y.ShapeArray());
        Assert.Equal([6], mean.ShapeArray());
        Close(NormRef(data.ToDouble(), g.ToDouble(), null, 9, false, out _, out _), y.ToArray(), 1e-5, 1e-4, $"layernorm no beta on {device}");
    }

    [Theory, InlineData(false), InlineData(true)]
    public void BackwardRulesAgreeWithFiniteDifferences(bool rms)
    {
        var d = Device.Cpu;
        int rows = 3, c = 5;
        var data = Random(rows * c, 51, -2f, 2f).ToDouble();
        var g = Random(c, 52, 0.5f, 1.5f).ToDouble();
        var b = Random(c, 53).ToDouble();
        var w = Random(rows * c, 54).ToDouble();
        double[]? beta = rms ? null : b;
        using var x = Tensor.FromArray(data.Select(v => (float)v).ToArray(), [rows, c], d);
        using var gamma = Tensor.FromArray(g.Select(v => (float)v).ToArray(), [c], d);
        using var betaT = Tensor.FromArray(b.Select(v => (float)v).ToArray(), [c], d);
        using var dy = Tensor.FromArray(w.Select(v => (float)v).ToArray(), [rows, c], d);
        Tensor? mean = null;
        Tensor rstd;
        using var y = rms ? Ops.RmsNorm(x, gamma, Eps, out rstd) : Ops.LayerNorm(x, gamma, betaT, Eps, out mean, out rstd);
        Tensor? dGamma, dBeta = null;
        using var dx = rms ? Ops.RmsNormBackward(dy, x, gamma, rstd, true, out dGamma)
            : Ops.LayerNormBackward(dy, x, gamma, mean!, rstd, true, out dGamma, out dBeta);
        using var _m = mean; using var _r = rstd; using var _g = dGamma; using var _b = dBeta;

        Close(Gradient(v => Weighted(w, NormRef(v, g, beta, c, rms, out _, out _)), data), dx.ToArray(), 1e-5, 1e-3, "dx vs finite differences");
        Close(Gradient(v => Weighted(w, NormRef(data, v, beta, c, rms, out _, out _)), g), dGamma!.ToArray(), 1e-5, 1e-3, "dGamma vs finite differences");
        if (!rms) Close(Gradient(v => Weighted(w, NormRef(data, g, v, c, rms, out _, out _)), b), dBeta!.ToArray(), 1e-5, 1e-3, "dBeta vs finite differences");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BadShapesThrowNamingBoth(string device)
    {
        var d = Dev(device);
        using var x = Tensor.Zeros([4, 6], d);
        using var gamma = Tensor.Full([6], 1f, d);
        using var wrong = Tensor.Zeros([5], d);
        var e = Assert.Throws<ArgumentException>(() => Ops.LayerNorm(x, wrong, null, Eps, out _, out _));
        Assert.Contains("[6]", e.Message);
        Assert.Contains("[5]", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.LayerNorm(x, gamma, wrong, Eps, out _, out _));
        Assert.Throws<ArgumentException>(() => Ops.RmsNorm(x, wrong, Eps, out _));
        using var rstd = Tensor.Zeros([3], d);
        Assert.Throws<ArgumentException>(() => Ops.RmsNormBackward(x, x, gamma, rstd, true, out _));
    }
}

