using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests.Autograd;

public class OptimizerTests
{
    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void AdamWMatchesHandComputedReference(string device)
    {
        var d = Device.Get(device);
        float[] p0 = [0.5f, -1.5f, 2f];
        float[][] grads = [[0.1f, -0.2f, 0.3f], [0.05f, 0.4f, -0.1f], [-0.3f, 0.1f, 0.2f]];
        using var p = new Parameter("p", Tensor.FromArray(p0, [3], d));
        using var opt = new AdamW([p], lr: 0.1f, beta1: 0.9f, beta2: 0.999f, eps: 1e-8f, weightDecay: 0.01f);
        double[] rp = p0.Select(x => (double)x).ToArray(), m = new double[3], v = new double[3];
        for (int step = 1; step <= 3; step++)
        {
            p.Grad = Tensor.FromArray(grads[step - 1], [3], d);
            opt.Step();
            for (int i = 0; i < 3; i++)
            {
                double g = grads[step - 1][i];
                rp[i] -= 0.1 * 0.01 * rp[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                double mh = m[i] / (1 - Math.Pow(0.9, step)), vh = v[i] / (1 - Math.Pow(0.999, step));
                rp[i] -= 0.1 * mh / (Math.Sqrt(vh) + 1e-8);
            }
            Reference.Close(rp, p.Data.ToArray(), 1e-6, 1e-5, $"AdamW step {step}");
        }
        Assert.Equal(2 * 3 * sizeof(float), opt.StateBytes);
        Assert.True(d.Ledger.Live(MemoryCategory.OptimizerState) >= opt.StateBytes, "optimizer state is visible in the ledger");
    }

    [Fact]
    public void FrozenParameterIsBitIdenticalAndHasNoStateAfter100Steps()
    {
        var d = Device.Cpu;
        using var frozen = new Parameter("frozen", Tensor.FromArray(Reference.Random(24, 3), [6, 4], d), trainable: false);
        using var trained = new Parameter("trained", Tensor.FromArray(Reference.Random(20, 4), [4, 5], d));
        var before = frozen.Data.ToArray();
        using var x = new Variable(Tensor.FromArray(Reference.Random(15, 5), [3, 5], d));
        Assert.Throws<ArgumentException>(() => new AdamW([frozen, trained]));
        using var opt = new AdamW([trained], lr: 0.01f);
        for (int i = 0; i < 100; i++)
        {
            using var scope = new GraphScope();
            var y = F.Linear(F.Linear(x, trained, null), frozen, null);   // [3,5]→[3,4]→[3,6]
            F.Mean(F.Mul(y, y)).Backward();
            Assert.Null(frozen.Grad);
            opt.Step();
            opt.ZeroGrad();
        }
        Assert.Equal(before, frozen.Data.ToArray());
        Assert.Equal(20 * 2 * sizeof(float), opt.StateBytes); // state for the trained 4×5 only
    }

    [Fact]
    public void SgdMomentumMatchesReference()
    {
        var d = Device.Cpu;
        using var p = new Parameter("p", Tensor.FromArray([1f, -2f], [2], d));
        using var opt = new Sgd([p], lr: 0.1f, momentum: 0.9f, weightDecay: 0.1f, nesterov: true);
        double[] rp = [1, -2], buf = new double[2];
        float[][] grads = [[0.5f, 0.25f], [-0.5f, 1f]];
        for (int s = 0; s < 2; s++)
        {
            p.Grad = Tensor.FromArray(grads[s], [2], d);
            opt.Step();
            for (int i = 0; i < 2; i++)
            {
                double g = grads[s][i] + 0.1 * rp[i];
                buf[i] = s == 0 ? g : 0.9 * buf[i] + g;
                rp[i] -= 0.1 * (g + 0.9 * buf[i]);
            }
            Reference.Close(rp, p.Data.ToArray(), 1e-6, 1e-5, $"SGD step {s}");
        }
    }

    [Fact]
    public void ClipGradNormReturnsNormAndScales()
    {
        using var a = new Parameter("a", Tensor.FromArray([0f, 0f], [2], Device.Cpu));
        a.Grad = Tensor.FromArray([3f, 4f], [2], Device.Cpu);
        double norm = Optimizer.ClipGradNorm([a], 1.0);
        Assert.Equal(5.0, norm, 5);
        Reference.Close([0.6f, 0.8f], a.Grad!.ToArray(), 1e-5, 1e-4);
    }

    [Fact]
    public void SchedulesWarmUpThenDecay()
    {
        var cos = LearningRateSchedule.WarmupCosine(1f, 10, 110);
        Assert.Equal(0.1f, cos.At(1), 5);
        Assert.Equal(1f, cos.At(10), 5);
        Assert.Equal(0.5f, cos.At(60), 3);
        Assert.Equal(0f, cos.At(110), 5);
        var lin = LearningRateSchedule.WarmupLinear(2f, 0, 100);
        Assert.Equal(1f, lin.At(50), 5);
        Assert.Equal(3f, LearningRateSchedule.Constant(3f).At(1000));
    }

    [Fact]
    public void OptimizerStateRoundTrips()
    {
        var d = Device.Cpu;
        using var p = new Parameter("p", Tensor.FromArray([1f, 2f], [2], d));
        using var opt = new AdamW([p]);
        p.Grad = Tensor.FromArray([0.5f, -0.5f], [2], d);
        opt.Step();
        var state = opt.StateDict();
        using var q = new Parameter("p", Tensor.FromArray([1f, 2f], [2], d));
        using var opt2 = new AdamW([q]);
        opt2.LoadStateDict(state);
        Assert.Equal(1, opt2.StepCount);
        Assert.Equal(opt.StateDict().Select(s => s.Data).SelectMany(x => x), opt2.StateDict().Select(s => s.Data).SelectMany(x => x));
        Assert.Throws<InvalidDataException>(() => opt2.LoadStateDict([("0.exp_avg", [3], new float[3])]));
    }
}
