using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class UnaryTests
{
    static readonly Dictionary<string, (Func<Tensor, Tensor> Op, Func<double, double> F, Func<double, double> dF)> Cases = new()
    {
        ["neg"] = (Ops.Neg, x => -x, x => -1),
        ["exp"] = (Ops.Exp, Math.Exp, Math.Exp),
        ["tanh"] = (Ops.Tanh, Math.Tanh, x => 1 - Math.Tanh(x) * Math.Tanh(x)),
        ["sigmoid"] = (Ops.Sigmoid, x => 1 / (1 + Math.Exp(-x)), x => { var s = 1 / (1 + Math.Exp(-x)); return s * (1 - s); }),
        ["relu"] = (Ops.Relu, x => Math.Max(x, 0), x => x > 0 ? 1 : 0),
        ["silu"] = (Ops.Silu, x => x / (1 + Math.Exp(-x)), x => { var s = 1 / (1 + Math.Exp(-x)); return s * (1 + x * (1 - s)); }),
        ["gelu_tanh"] = (Ops.GeluTanh, GeluTanhRef, x => (GeluTanhRef(x + 1e-6) - GeluTanhRef(x - 1e-6)) / 2e-6),
        ["gelu_erf"] = (Ops.GeluErf, x => 0.5 * x * (1 + ErfRef(x / Math.Sqrt(2))), x => 0.5 * (1 + ErfRef(x / Math.Sqrt(2))) + x * Math.Exp(-x * x / 2) / Math.Sqrt(2 * Math.PI)),
        ["scale"] = (x => Ops.Scale(x, -2.5f), x => -2.5 * x, x => -2.5),
        ["add_scalar"] = (x => Ops.AddScalar(x, 0.75f), x => x + 0.75, x => 1),
        ["pow3"] = (x => Ops.PowScalar(x, 3f), x => x * x * x, x => 3 * x * x),
    };

    static double GeluTanhRef(double x) => 0.5 * x * (1 + Math.Tanh(Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));

    // erf by its Maclaurin series, accurate in double for |x| < 3 (the test range).
    static double ErfRef(double x)
    {
        double sum = 0, term = x;
        for (int n = 0; n < 60; n++) { sum += term / (2 * n + 1); term *= -x * x / (n + 1); }
        return 2 / Math.Sqrt(Math.PI) * sum;
    }

    public static IEnumerable<object[]> Grid() =>
        from d in Devices() from name in Cases.Keys from n in new[] { 1, 7, 33, 45 * 65 } select new object[] { d[0], name, n };

    [Theory, MemberData(nameof(Grid))]
    public void ForwardMatchesDoubleReference(string device, string name, int n)
    {
        var (op, f, _) = Cases[name];
        var d = Dev(device);
        var data = Random(n, 11, -3f, 3f);
        using var x = Tensor.FromArray(data, [n], d);
        using var y = op(x);
        Close(data.Select(v => f(v)).ToArray(), y.ToArray(), 2e-6, 2e-5, $"{name} on {device}");
    }

    [Theory, MemberData(nameof(Grid))]
    public void BackwardMatchesDerivative(string device, string name, int n)
    {
        var d = Dev(device);
        var data = Random(n, 12, -3f, 3f);
        var grad = Random(n, 13);
        using var x = Tensor.FromArray(data, [n], d);
        using var dy = Tensor.FromArray(grad, [n], d);
        using var y = Cases[name].Op(x);
        using var dx = name switch
        {
            "neg" => Ops.MapBackward<NegOp>(x, y, dy),
            "exp" => Ops.MapBackward<ExpOp>(x, y, dy),
            "tanh" => Ops.MapBackward<TanhOp>(x, y, dy),
            "sigmoid" => Ops.MapBackward<SigmoidOp>(x, y, dy),
            "relu" => Ops.MapBackward<ReluOp>(x, y, dy),
            "silu" => Ops.MapBackward<SiluOp>(x, y, dy),
            "gelu_tanh" => Ops.MapBackward<GeluTanhOp>(x, y, dy),
            "gelu_erf" => Ops.MapBackward<GeluErfOp>(x, y, dy),
            "scale" => Ops.MapBackward(x, y, dy, new AffineOp(-2.5f, 0)),
            "add_scalar" => Ops.MapBackward(x, y, dy, new AffineOp(1, 0.75f)),
            _ => Ops.MapBackward(x, y, dy, new PowOp(3f)),
        };
        var df = Cases[name].dF;
        Close(data.Select((v, i) => grad[i] * df(v)).ToArray(), dx.ToArray(), 1e-5, 1e-4, $"{name}' on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void LogSqrtRsqrtOnPositiveInputs(string device)
    {
        var d = Dev(device);
        var data = Random(33, 5, 0.1f, 4f);
        using var x = Tensor.FromArray(data, [33], d);
        using var l = Ops.Log(x); using var s = Ops.Sqrt(x); using var r = Ops.Rsqrt(x);
        Close(data.Select(v => Math.Log(v)).ToArray(), l.ToArray(), what: "log");
        Close(data.Select(v => Math.Sqrt(v)).ToArray(), s.ToArray(), what: "sqrt");
        Close(data.Select(v => 1 / Math.Sqrt(v)).ToArray(), r.ToArray(), what: "rsqrt");
    }
}
