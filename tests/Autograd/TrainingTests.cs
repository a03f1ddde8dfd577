using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests.Autograd;

public class TrainingTests
{
    /// <summary>A 1-16-1 tanh MLP fits y = sin(x) on [−π, π] in 150 AdamW steps to MSE &lt; 0.01 (the mean of sin² is 0.5).</summary>
    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void MlpLearnsSine(string device)
    {
        var d = Device.Get(device);
        const int n = 64;
        var xs = Enumerable.Range(0, n).Select(i => (float)(-Math.PI + 2 * Math.PI * i / (n - 1))).ToArray();
        using var x = new Variable(Tensor.FromArray(xs, [n, 1], d));
        using var y = new Variable(Tensor.FromArray(xs.Select(MathF.Sin).ToArray(), [n, 1], d));
        using var w1 = new Parameter("w1", TensorRandom.Normal([16, 1], 0, 1, 1, d));
        using var b1 = new Parameter("b1", Tensor.Zeros([16], d));
        using var w2 = new Parameter("w2", TensorRandom.Normal([1, 16], 0, 0.25f, 2, d));
        using var b2 = new Parameter("b2", Tensor.Zeros([1], d));
        using var opt = new AdamW([w1, b1, w2, b2], lr: 0.05f, weightDecay: 0);
        float loss = float.NaN;
        for (int step = 0; step < 150; step++)
        {
            using var scope = new GraphScope();
            var pred = F.Linear(F.Tanh(F.Linear(x, w1, b1)), w2, b2);
            var l = F.Mean(F.Pow(F.Sub(pred, y), 2f));
            loss = l.Data.Item();
            l.Backward();
            opt.Step();
            opt.ZeroGrad();
        }
        Assert.True(loss < 0.01f, $"MSE after 150 steps on {device}: {loss}");
    }

    [Fact]
    public void LiveActivationBytesReturnToBaselineEveryStep()
    {
        using var d = new CpuDevice(); // a private device, so tests running in parallel don't touch its ledger
        using var x = new Variable(Tensor.FromArray(Reference.Random(32 * 8, 1), [32, 8], d));
        using var w = new Parameter("w", TensorRandom.Normal([8, 8], 0, 0.3f, 3, d));
        using var opt = new AdamW([w]);
        long? baseline = null;
        for (int step = 0; step < 5; step++)
        {
            using (var scope = new GraphScope())
            {
                var h = F.LayerNorm(F.Relu(F.Linear(x, w, null)), Variable.Constant(Tensor.Full([8], 1f, d)), null);
                F.Mean(F.Softmax(h)).Backward();
            }
            opt.Step();
            opt.ZeroGrad();
            long live = d.Ledger.Live(MemoryCategory.Activation);
            baseline ??= live;
            Assert.Equal(baseline, live);
            Assert.Equal(0, d.Ledger.Live(MemoryCategory.Gradient));
            Assert.Equal(8 * 8 * 2 * sizeof(float), d.Ledger.Live(MemoryCategory.OptimizerState));
        }
    }
}
