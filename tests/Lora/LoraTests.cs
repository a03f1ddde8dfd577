using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>A one-layer module named like an attention projection, for layer-level LoRA checks.</summary>
sealed class OneLinear : Module
{
    public OneLinear(int inF, int outF, Device device) => RegisterModule("q_proj", new Linear(inF, outF, true, new SeedSequence(5), device));
    public Variable Forward(Variable x) => ((ILayer)Child("q_proj")).Forward(x);
}

public class LoraTests
{
    static readonly TransformerConfig Config = TinyModels.Config;

    static Batch Data(int seed = 3) => TinyModels.CopyBatch(new Random(seed), 6);

    static void RandomizeB(LoraModel lora, string adapter, int seed = 40)
    {
        foreach (var (_, a) in lora.AdapterWeights(adapter))
            a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -0.3f, 0.3f));
    }

    static void Train(Seq2SeqTransformer model, int steps, int seed, out AdamW optimizer)
    {
        optimizer = new AdamW(model.TrainableParameters(), 1e-2f);
        var rng = new Random(seed);
        for (int i = 0; i < steps; i++) TinyModels.Step(model, optimizer, TinyModels.CopyBatch(rng, 8));
    }

    static void AssertBitwise(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}: index {i}: {expected[i]} vs {actual[i]}");
    }

    static void AssertRelative(float[] expected, float[] actual, double rel, string what)
    {
        double scale = expected.Max(x => Math.Abs((double)x));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= rel * scale, $"{what}: index {i}: {expected[i]} vs {actual[i]} (scale {scale})");
    }

    [Fact]
    public void FreshAdapterLeavesOutputsBitIdentical()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var b = Data();
        var before = TinyModels.Logits(model, b);
        var lora = LoraModel.Inject(model, new LoraConfig { TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"] });
        Assert.Equal(3 * 4 + 2 * 2, lora.Layers.Count);   // 3 attention modules × 4 projections, 2 FFNs × 2
        AssertBitwise(before, TinyModels.Logits(model, b), "B = 0");
    }

    [Fact]
    public void AdapterGradientsMatchFiniteDifferences()
    {
        // The fused node itself: x, W, b, A, B all checked (B nonzero, scaling 2).
        GradCheck.Check("cpu", v => LoraLinear.LowRankLinear(v[0], null, v[1], v[2], v[3], v[4], 2f), [[2, 3, 6], [5, 6], [5], [4, 6], [5, 4]]);
        // With a separate dropout input h (its gradient flows through A), and without a bias on 2-D input.
        GradCheck.Check("cpu", v => LoraLinear.LowRankLinear(v[0], v[5], v[1], v[2], v[3], v[4], 2f), [[2, 3, 6], [5, 6], [5], [4, 6], [5, 4], [2, 3, 6]]);
        GradCheck.Check("cpu", v => LoraLinear.LowRankLinear(v[0], null, v[1], null, v[2], v[3], 0.5f), [[7, 6], [5, 6], [4, 6], [5, 4]]);
        // And through an injected module: A's and B's Parameter.Grad against perturbed data.
        using var m = new OneLinear(6, 5, Device.Cpu);
        var lora = LoraModel.Inject(m, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj"] });
        RandomizeB(lora, "default");
        var adapter = lora.Layers["q_proj"].Adapters["default"];
        var x = Reference.Random(2 * 3 * 6, 9);
        Variable Loss() => TinyModels.WeightedSum(m.Forward(Variable.Constant(Tensor.FromArray(x, [2, 3, 6], Device.Cpu))));
        TinyModels.CheckParameterGradient(adapter.A, Loss, [0, 7, 13, 23]);
        TinyModels.CheckParameterGradient(adapter.B, Loss, [0, 6, 11, 19]);
        Assert.False(lora.Layers["q_proj"].BaseLayer.Weight.Trainable);
    }

    [Fact]
    public void TrainingLeavesFrozenWeightsBitIdenticalAndOptimizerStateMatches()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig());
        var frozen = model.NamedParameters().Where(p => !p.Parameter.Trainable).Select(p => (p.Name, Data: p.Parameter.Data.ToArray())).ToList();
        Train(model, 3, 1, out var opt);
        using (opt)
        {
            long adapterParams = lora.AdapterWeights("default").Sum(a => a.Adapter.Count);
            Assert.Equal(adapterParams, model.ParameterCount(trainableOnly: true));
            Assert.Equal(2 * 4 * adapterParams, opt.StateBytes);
        }
        var now = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        foreach (var (name, data) in frozen) AssertBitwise(data, now[name], name);
        Assert.Contains(lora.AdapterWeights("default"), a => a.Adapter.B.Data.ToArray().Any(v => v != 0));
    }

    public static IEnumerable<object[]> Counts()
    {
        long d = 16, r = 8, perModule = r * 2 * d;        // A [r, d] + B [d, r]
        // 1 encoder layer (self_attn) + 1 decoder layer (self_attn, cross_attn): 3 attention modules.
        yield return ["qv", new LoraConfig(), 6 * perModule];
        yield return ["all four", new LoraConfig { TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] }, 12 * perModule];
        yield return ["rank pattern", new LoraConfig { RankPattern = new Dictionary<string, int> { ["v_proj"] = 2 } }, 3 * perModule + 3 * 2 * 2 * d];
        yield return ["bias lora_only", new LoraConfig { Bias = LoraBias.LoraOnly }, 6 * perModule + 6 * d];
        // all: every bias, LayerNorm biases included (PEFT matches "bias" in the name): 8 attention Linears + 4 FFN Linears
        // (fc1 32, fc2 16) + 5 layer norms + 2 final norms.
        yield return ["bias all", new LoraConfig { Bias = LoraBias.All }, 6 * perModule + 12 * d + 2 * 32 + 2 * d + 7 * d];
    }

    [Theory]
    [MemberData(nameof(Counts))]
    public void TrainableCountFollowsTheFormula(string what, LoraConfig config, long expected)
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, config);
        Assert.True(expected == lora.Report().Trainable, $"{what}: expected {expected}, got {lora.Report().Trainable}");
        Assert.Equal(model.ParameterCount(), lora.Report().Total);
    }

    [Fact]
    public void LayersToTransformAndRsLoraScaling()
    {
        using var model = new Seq2SeqTransformer(Config with { EncoderLayers = 2, DecoderLayers = 2 }, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, LayersToTransform = [1] });
        Assert.All(lora.Layers.Keys, k => Assert.Contains(".layers.1.", k));
        Assert.Equal(6, lora.Layers.Count);
        Assert.Equal(6L * 4 * 2 * 16, lora.Report().Trainable);
        Assert.All(lora.AdapterWeights("default"), a => Assert.Equal(2f, a.Adapter.Scaling));

        lora.AddAdapter("rs", new LoraConfig { R = 4, Alpha = 8, UseRsLora = true }, seed: 2);
        Assert.All(lora.AdapterWeights("rs"), a => Assert.Equal(8f / MathF.Sqrt(4), a.Adapter.Scaling));
        lora.AddAdapter("pattern", new LoraConfig { R = 4, Alpha = 8, RankPattern = new Dictionary<string, int> { ["q_proj"] = 16 } }, seed: 3);
        Assert.All(lora.AdapterWeights("pattern"), a => Assert.Equal(a.Path.EndsWith("q_proj") ? 0.5f : 2f, a.Adapter.Scaling));
    }

    [Fact]
    public void MergeUnmergeAndUnload()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var b = Data();
        var lora = LoraModel.Inject(model, new LoraConfig { TargetModules = ["q_proj", "v_proj", "fc1"] });
        RandomizeB(lora, "default");
        var adapted = TinyModels.Logits(model, b);
        var baseW = lora.Layers.ToDictionary(l => l.Key, l => l.Value.BaseLayer.Weight.Data.ToArray());
        lora.Merge();
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, "merged");
        Assert.Throws<InvalidOperationException>(() => lora.Merge());
        lora.Unmerge();
        foreach (var (path, w) in baseW)
            Reference.Close(w, lora.Layers[path].BaseLayer.Weight.Data.ToArray(), 1e-6, 0, $"unmerged {path}");
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, "unmerged");

        var merged = lora.MergeAndUnload();
        Assert.DoesNotContain(merged.NamedModules(), m => m.Module is LoraLinear);
        Assert.DoesNotContain(merged.NamedParameters(), p => p.Name.Contains("lora_") || p.Name.Contains("base_layer"));
        Assert.Contains(merged.NamedParameters(), p => p.Name == "encoder.layers.0.self_attn.q_proj.weight");
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, "merged and unloaded");
    }

    [Fact]
    public void AdaptersSwitchDisableAndDelete()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var b = Data();
        var baseOut = TinyModels.Logits(model, b);
        var lora = LoraModel.Inject(model, new LoraConfig(), "first");
        Train(model, 3, 1, out var o1);
        o1.Dispose();
        var first = TinyModels.Logits(model, b);
        lora.AddAdapter("second", new LoraConfig { R = 4, TargetModules = ["q_proj", "o_proj"] }, seed: 2);
        lora.SetActiveAdapter("second");
        Assert.Equal(lora.AdapterWeights("second").Sum(a => a.Adapter.Count), lora.Report().Trainable);
        var firstB = lora.AdapterWeights("first").Select(a => a.Adapter.B.Data.ToArray()).ToList();
        Train(model, 3, 2, out var o2);
        o2.Dispose();
        var second = TinyModels.Logits(model, b);
        Assert.NotEqual(first, second);
        // Training "second" left "first" untouched.
        foreach (var (was, now) in firstB.Zip(lora.AdapterWeights("first").Select(a => a.Adapter.B.Data.ToArray()))) AssertBitwise(was, now, "first B");

        lora.SetActiveAdapter("first");
        AssertBitwise(first, TinyModels.Logits(model, b), "switch back to first");
        lora.SetActiveAdapter("second");
        AssertBitwise(second, TinyModels.Logits(model, b), "switch to second");
        using (lora.DisableAdapters()) AssertBitwise(baseOut, TinyModels.Logits(model, b), "disabled");
        AssertBitwise(second, TinyModels.Logits(model, b), "re-enabled");

        lora.DeleteAdapter("second");
        Assert.False(lora.Adapters.ContainsKey("second"));
        Assert.DoesNotContain(model.NamedParameters(), p => p.Name.Contains(".second."));
        Assert.Throws<KeyNotFoundException>(() => lora.SetActiveAdapter("second"));
        lora.SetActiveAdapter("first");
        AssertBitwise(first, TinyModels.Logits(model, b), "first after deleting second");
    }

    [Fact]
    public void DisablingAMergedAdapterGivesTheBaseAndMergesBackAfterwards()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var b = Data();
        var baseOut = TinyModels.Logits(model, b);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj", "fc1"] }, "task");
        RandomizeB(lora, "task");
        var adapted = TinyModels.Logits(model, b);
        // An adapter that changed nothing would make the comparisons below vacuous.
        Assert.True(baseOut.Zip(adapted).Max(p => Math.Abs(p.First - p.Second)) > 1e-3 * baseOut.Max(Math.Abs));
        lora.Merge();
        using (lora.DisableAdapters())
        {
            Assert.All(lora.Layers.Values, l => Assert.Null(l.MergedAdapter));
            AssertRelative(baseOut, TinyModels.Logits(model, b), 1e-5, "disabled while merged");
            Assert.Throws<InvalidOperationException>(() => lora.SetActiveAdapter("task"));   // would be undone wrongly on dispose
            Assert.Throws<InvalidOperationException>(() => lora.DeleteAdapter("task"));
            Assert.Throws<InvalidOperationException>(() => lora.DisableAdapters());
        }
        Assert.All(lora.Layers.Values, l => Assert.Equal("task", l.MergedAdapter));
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, "merged again");
    }

    [Fact]
    public void ModulesToSaveKeepOneCopyPerAdapterAcrossSwitchingDisablingAndFiles()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var b = Data();
        var baseOut = TinyModels.Logits(model, b);
        var fc2 = model.NamedParameters().First(p => p.Name.EndsWith(".ffn.fc2.weight")).Parameter;
        var originalFc2 = fc2.Data.ToArray();
        var config = new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"], ModulesToSave = ["fc2"] };
        var lora = LoraModel.Inject(model, config, "first");
        Assert.True(fc2.Trainable);
        Train(model, 3, 1, out var o1);
        o1.Dispose();
        var firstOut = TinyModels.Logits(model, b);
        var firstFc2 = fc2.Data.ToArray();
        Assert.NotEqual(originalFc2, firstFc2);

        lora.AddAdapter("second", config, seed: 2);
        lora.SetActiveAdapter("second");
        AssertBitwise(originalFc2, fc2.Data.ToArray(), "a new adapter's copy starts from the base");
        Train(model, 3, 2, out var o2);
        o2.Dispose();
        var secondOut = TinyModels.Logits(model, b);

        lora.SetActiveAdapter("first");
        AssertBitwise(firstFc2, fc2.Data.ToArray(), "first's copy is back");
        AssertBitwise(firstOut, TinyModels.Logits(model, b), "first's outputs are back");
        using (lora.DisableAdapters())
        {
            AssertBitwise(originalFc2, fc2.Data.ToArray(), "disabled: the base's fc2");
            AssertBitwise(baseOut, TinyModels.Logits(model, b), "disabled: the base's outputs");
        }
        AssertBitwise(firstOut, TinyModels.Logits(model, b), "re-enabled");

        // Saving "second" while "first" is live writes second's copy; loading it elsewhere reproduces second.
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "second", dir);
        using var other = new Seq2SeqTransformer(Config, Device.Cpu);
        var otherLora = LoraModel.Inject(other, config, "first");
        AdapterFiles.Load(otherLora, dir, "second");
        using (var fresh = new Seq2SeqTransformer(Config, Device.Cpu)) AssertBitwise(baseOut, TinyModels.Logits(fresh, b), "same seed, same base");
        otherLora.SetActiveAdapter("second");
        AssertBitwise(secondOut, TinyModels.Logits(other, b), "loaded second");

        lora.DeleteAdapter("first");
        AssertBitwise(originalFc2, fc2.Data.ToArray(), "deleting the live adapter puts the base's values back");
    }

    [Fact]
    public void AddingAnAdapterKeepsOnlyTheActiveOneTrainable()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig(), "first");
        long first = lora.Report().Trainable;
        lora.AddAdapter("second", new LoraConfig { R = 4, TargetModules = ["q_proj", "o_proj"] }, seed: 2);
        Assert.Equal(first, lora.Report().Trainable);
        Assert.All(lora.AdapterWeights("second"), a => Assert.False(a.Adapter.A.Trainable || a.Adapter.B.Trainable, a.Path));
        Assert.All(lora.Layers.Values, l => Assert.False(l.BaseLayer.Weight.Trainable));

        // A second LoRA view of the same (already wrapped) model adopts the wrappers instead of wrapping them again.
        var view = LoraModel.For(model);
        Assert.Equal(lora.Layers.Count, view.Layers.Count);
        view.AddAdapter("third", new LoraConfig { R = 2 }, seed: 3);
        view.SetActiveAdapter("third");
        Assert.Equal(view.AdapterWeights("third").Sum(a => a.Adapter.Count), view.Report().Trainable);
        Assert.All(model.NamedModules().Where(m => m.Module is LoraLinear), m => Assert.IsType<Linear>(((LoraLinear)m.Module).BaseLayer));
    }

    [Fact]
    public void DeletingAMergedAdapterIsRefusedAndChangesNothing()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig());
        RandomizeB(lora, "default");
        var b = Data();
        var adapted = TinyModels.Logits(model, b);
        lora.Merge();
        Assert.Throws<InvalidOperationException>(() => lora.DeleteAdapter("default"));
        Assert.True(lora.Adapters.ContainsKey("default"));
        Assert.All(lora.Layers.Values, l => Assert.True(l.Adapters.ContainsKey("default")));
        lora.Unmerge();
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, "after the refused delete");
        lora.DeleteAdapter("default");
        Assert.Empty(lora.Adapters);
    }

    [Fact]
    public void AdaptedModelDecodesTheSameWithAndWithoutCacheAndMerged()
    {
        using var model = new Seq2SeqTransformer(Config with { Dropout = 0 }, Device.Cpu);
        // Dropout on the adapter path: off in eval, so decoding must still be deterministic and cache-consistent.
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Dropout = 0.3f, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] });
        Train(model, 20, 7, out var opt);
        opt.Dispose();
        var seqs = TinyModels.RandomSequences(new Random(5), 5, minLength: 2, maxLength: 7);
        var b = TinyModels.MakeBatch(seqs, seqs);
        List<int[]> Decode(bool cache, int beam = 1) =>
            SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 9, BeamSize: beam, UseCache: cache));
        var cached = Decode(true);
        Assert.Equal(cached, Decode(false));
        Assert.Equal(Decode(true, 3), Decode(false, 3));
        Assert.True(cached.Any(o => o.Length > 0), "decodes nothing: vacuous comparison");
        model.Eval();
        var eval1 = TinyModels.Logits(model, b);
        AssertBitwise(eval1, TinyModels.Logits(model, b), "eval mode ignores LoRA dropout");
        lora.Merge();
        AssertRelative(eval1, TinyModels.Logits(model, b), 1e-5, "merged, eval");
        Assert.Equal(cached, Decode(true));
        model.Train();
    }

    [Theory, MemberData(nameof(Reference.KernelDevices), MemberType = typeof(Reference))]
    public void KernelDeviceIdentityAndMergeEquivalence(string id)
    {
        var device = Device.Get(id);
        using var m = new OneLinear(8, 6, device);
        var x = Reference.Random(3 * 8, 4);
        float[] Run()
        {
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            return m.Forward(Variable.Constant(Tensor.FromArray(x, [3, 8], device))).Data.ToArray();
        }
        var baseOut = Run();
        var lora = LoraModel.Inject(m, new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj"] });
        AssertBitwise(baseOut, Run(), $"{id} B = 0");
        RandomizeB(lora, "default");
        var adapted = Run();
        Assert.NotEqual(baseOut, adapted);
        lora.Merge();
        AssertRelative(adapted, Run(), 1e-5, $"{id} merged");
        lora.Unmerge();
        AssertRelative(adapted, Run(), 1e-5, $"{id} unmerged");
    }

    [Theory, MemberData(nameof(Reference.KernelDevices), MemberType = typeof(Reference))]
    public void KernelDeviceWholeModelAndAdapterGradients(string id)
    {
        var device = Device.Get(id);
        // The fused node's backward on this device's kernels (tiny: every element is two forwards).
        GradCheck.Check(id, v => LoraLinear.LowRankLinear(v[0], null, v[1], v[2], v[3], v[4], 2f), [[2, 3], [2, 3], [2], [1, 3], [2, 1]]);
        // The whole (tiny) model on this device, four forwards (each takes seconds on the simulator): B = 0 bitwise, merge equivalence.
        using var model = new Seq2SeqTransformer(Config with { VocabSize = 12, DModel = 8, Heads = 2, DFF = 16 }, device);
        var b = TinyModels.MakeBatch([[4, 5, 6], [7, 8]], [[4, 5], [9]]);
        var baseOut = TinyModels.Logits(model, b);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj", "v_proj", "fc1"] });
        AssertBitwise(baseOut, TinyModels.Logits(model, b), $"{id} model, B = 0");
        RandomizeB(lora, "default");
        var adapted = TinyModels.Logits(model, b);
        Assert.NotEqual(baseOut, adapted);
        lora.MergeAndUnload();
        AssertRelative(adapted, TinyModels.Logits(model, b), 1e-5, $"{id} model merged and unloaded");
    }
}
