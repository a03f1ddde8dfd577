using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>LoRA+ (PEFT's create_loraplus_optimizer): B at ratio × the learning rate of A, through optimizer parameter groups.</summary>
public class LoraPlusTests
{
    /// <summary>One AdamW step on a one-layer LoRA model from zero moments; returns how far A and B moved.</summary>
    static (float[] DeltaA, float[] DeltaB, IReadOnlyList<ParameterGroup> Groups) OneStep(float? ratio)
    {
        using var m = new OneLinear(6, 5, Device.Cpu);
        var lora = LoraModel.Inject(m, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj"] });
        var adapter = lora.Layers["q_proj"].Adapters["default"];
        adapter.B.Data.CopyFrom(Reference.Random((int)adapter.B.Count, 40, -0.3f, 0.3f));   // B ≠ 0, so A has a gradient too
        float[] a0 = adapter.A.Data.ToArray(), b0 = adapter.B.Data.ToArray();
        using var optimizer = ratio is float r ? LoraPlus.CreateOptimizer(m, 1e-3f, r) : new AdamW(m.TrainableParameters(), 1e-3f);
        var x = Variable.Constant(Tensor.FromArray(Reference.Random(3 * 6, 9), [3, 6], Device.Cpu));
        TinyModels.WeightedSum(m.Forward(x)).Backward();
        optimizer.Step();
        return (adapter.A.Data.ToArray().Zip(a0, (n, o) => n - o).ToArray(), adapter.B.Data.ToArray().Zip(b0, (n, o) => n - o).ToArray(), optimizer.Groups);
    }

    [Fact]
    public void RatioScalesBsFirstStepAndLeavesAs()
    {
        var (plainA, plainB, _) = OneStep(null);
        var (oneA, oneB, _) = OneStep(1f);
        var (fastA, fastB, groups) = OneStep(16f);
        Assert.Equal(plainA, oneA);   // ratio 1 is plain AdamW, bit for bit
        Assert.Equal(plainB, oneB);
        Assert.Equal(plainA, fastA);  // A keeps the base rate
        Assert.True(plainB.Max(Math.Abs) > 1e-4f, "B moved");
        // AdamW's first step is lr·(ĝ/(|ĝ|+ε)) plus decay lr·wd·p, all linear in lr: B moves exactly 16× as far.
        Reference.Close(plainB.Select(d => 16.0 * d).ToArray(), fastB, 1e-7, 1e-4, "B's step at ratio 16");
        Assert.Equal([LoraPlus.GroupA, LoraPlus.GroupB], groups.Select(g => g.Name));
        Assert.Equal([1f, 16f], groups.Select(g => g.LearningRateScale));
        Assert.All(groups[1].Parameters, p => Assert.Equal("lora_B", p.Name));
        Assert.All(groups[0].Parameters, p => Assert.Equal("lora_A", p.Name));
    }

    [Fact]
    public void GroupsAreChecked()
    {
        using var m = new OneLinear(6, 5, Device.Cpu);
        LoraModel.Inject(m, new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        var ps = m.TrainableParameters().ToList();
        var e = Assert.Throws<ArgumentException>(() => new AdamW([new ParameterGroup("x", ps), new ParameterGroup("y", ps.Take(1).ToList())]));
        Assert.Contains("two parameter groups", e.Message);
        Assert.Contains("'y'", e.Message);
        Assert.Contains("scale is NaN", Assert.Throws<ArgumentException>(() => new AdamW([new ParameterGroup("x", ps, float.NaN)])).Message);
        Assert.Contains("loraplus_lr_ratio is 0", Assert.Throws<ArgumentException>(() => LoraPlus.Groups(m, 0f)).Message);
    }
}
