using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests;

/// <summary>
/// Finite-difference gradient checks: the analytic gradient from Backward() against central differences
/// of the same float32 forward. The loss is Σ w ⊙ f(inputs) with fixed random w, so every output element matters.
/// </summary>
public static class GradCheck
{
    public static void Check(string device, Func<Variable[], Variable> f, int[][] shapes, int seed = 1, double eps = 1e-2, double atol = 3e-3, double rtol = 3e-2,
        Func<int, float[]>? init = null)
    {
        var d = Device.Get(device);
        var data = shapes.Select((s, i) => init?.Invoke(i) ?? Reference.Random((int)ShapeMath.Numel(s), seed + i)).ToArray();
        float[]? weights = null;

        double Loss(float[][] values, out float[][]? grads)
        {
            using var scope = new GraphScope();
            var inputs = values.Select((v, i) => new Variable(Tensor.FromArray(v, shapes[i], d), requiresGrad: true)).ToArray();
            try
            {
                var y = f(inputs);
                weights ??= Reference.Random((int)y.Data.Length, seed + 100);
                var w = Variable.Constant(Tensor.FromArray(weights, y.Data.Shape, d));
                var loss = F.Sum(F.Mul(y, w));
                double value = loss.Data.Item();
                grads = null;
                if (values == data)
                {
                    loss.Backward();
                    grads = inputs.Select(v => v.Grad?.ToArray() ?? new float[v.Data.Length]).ToArray();
                }
                return value;
            }
            finally { foreach (var v in inputs) v.Dispose(); }
        }

        Loss(data, out var analytic);
        for (int i = 0; i < data.Length; i++)
        {
            var numeric = new double[data[i].Length];
            for (int j = 0; j < data[i].Length; j++)
            {
                var plus = data.Select(a => (float[])a.Clone()).ToArray();
                var minus = data.Select(a => (float[])a.Clone()).ToArray();
                plus[i][j] += (float)eps;
                minus[i][j] -= (float)eps;
                numeric[j] = (Loss(plus, out _) - Loss(minus, out _)) / (2 * eps);
            }
            Reference.Close(numeric, analytic![i], atol, rtol, $"gradient of input {i} on {device}");
        }
    }
}
