using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>DoRA as PEFT computes it: the node's backward, the layer's formula, init, merge, files and training.</summary>
public class DoraTests
{
    static readonly TransformerConfig Config = TinyModels.Config;
    static readonly LoraConfig Dora = new() { R = 4, Alpha = 8, UseDora = true, TargetModules = ["q_proj", "v_proj", "fc1"] };

    /// <summary>B random and m moved off ‖W‖, so that the adapter changes the output and every term of the formula matters.</summary>
    static void Perturb(LoraModel lora, string adapter, int seed = 60)
    {
        foreach (var (_, a) in lora.AdapterWeights(adapter))
        {
            a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -0.3f, 0.3f));
            var m = a.Magnitude!.Data.ToArray();
            var noise = Reference.Random(m.Length, seed++, 0.7f, 1.3f);
            a.Magnitude.Data.CopyFrom(m.Zip(noise, (x, f) => x * f).ToArray());
        }
    }

    static void AssertRelative(float[] expected, float[] actual, double rel, string what)
    {
        double scale = expected.Max(x => Math.Abs((double)x));
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= rel * scale, $"{what}: index {i}: {expected[i]} vs {actual[i]} (scale {scale})");
    }

    /// <summary>GradCheck's inputs are Reference.Random(numel, seed + i); the norm is taken from those values and then held fixed.</summary>
    static Func<Tensor> FixedNorm(int[] w, int[] a, int[] b, int wIndex, int aIndex, int bIndex, float s, string device = "cpu")
    {
        var d = Device.Get(device);
        float[] Data(int[] shape, int index) => Reference.Random((int)ShapeMath.Numel(shape), 1 + index);
        using var wt = Tensor.FromArray(Data(w, wIndex), w, d);
        using var at = Tensor.FromArray(Data(a, aIndex), a, d);
        using var bt = Tensor.FromArray(Data(b, bIndex), b, d);
        using var norm = DoraLinear.WeightNorm(wt, at, bt, s);
        var values = norm.ToArray();
        return () => Tensor.FromArray(values, [values.Length], d);
    }

    [Fact]
    public void BackwardMatchesFiniteDifferencesWithTheNormHeldConstant()
    {
        // x [2,3,6], W [5,6], b [5], A [4,6], B [5,4], m [5]: every input's gradient, W's included (detached norm).
        var norm = FixedNorm([5, 6], [4, 6], [5, 4], 1, 3, 4, 2f);
        GradCheck.Check("cpu", v => DoraLinear.Forward(v[0], null, v[1], v[2], v[3], v[4], v[5], 2f, norm()), [[2, 3, 6], [5, 6], [5], [4, 6], [5, 4], [5]]);
        // A separate dropout input h (PEFT then uses h in both the (g − 1)·h·Wᵀ and the low-rank term), no bias, 2-D input.
        var norm2 = FixedNorm([5, 6], [3, 6], [5, 3], 1, 2, 3, 0.5f);
        GradCheck.Check("cpu", v => DoraLinear.Forward(v[0], v[5], v[1], null, v[2], v[3], v[4], 0.5f, norm2()), [[7, 6], [5, 6], [3, 6], [5, 3], [5], [7, 6]]);
    }

    [Fact]
    public void LayerComputesPeftsFormulaAndItsMagnitudeGradient()
    {
        using var m = new OneLinear(6, 5, Device.Cpu);
        var lora = LoraModel.Inject(m, Dora with { R = 3, Alpha = 6, TargetModules = ["q_proj"] });
        Perturb(lora, "default");
        var layer = lora.Layers["q_proj"];
        var adapter = layer.Adapters["default"];
        float[] w = layer.BaseLayer.Weight.Data.ToArray(), bias = layer.BaseLayer.Bias!.Data.ToArray();
        float[] a = adapter.A.Data.ToArray(), b = adapter.B.Data.ToArray(), mag = adapter.Magnitude!.Data.ToArray();
        float s = adapter.Scaling;
        var x = Reference.Random(4 * 6, 9);
        // In double: y = x·Wᵀ + b + (m/n − 1)·x·Wᵀ + (m/n)·s·x·Aᵀ·Bᵀ, n = ‖W + s·B·A‖ per row.
        var expected = new double[4 * 5];
        for (int o = 0; o < 5; o++)
        {
            double n2 = 0;
            for (int i = 0; i < 6; i++)
            {
                double wi = w[o * 6 + i];
                for (int k = 0; k < 3; k++) wi += s * b[o * 3 + k] * a[k * 6 + i];
                n2 += wi * wi;
            }
            double g = mag[o] / Math.Sqrt(n2);
            for (int row = 0; row < 4; row++)
            {
                double xw = 0, lowRank = 0;
                for (int i = 0; i < 6; i++) xw += x[row * 6 + i] * w[o * 6 + i];
                for (int k = 0; k < 3; k++)
                {
                    double xa = 0;
                    for (int i = 0; i < 6; i++) xa += x[row * 6 + i] * a[k * 6 + i];
                    lowRank += xa * b[o * 3 + k];
                }
                expected[row * 5 + o] = xw + bias[o] + (g - 1) * xw + g * s * lowRank;
            }
        }
        float[] actual;
        using (Graph.NoGrad())
        using (new GraphScope())
            actual = m.Forward(Variable.Constant(Tensor.FromArray(x, [4, 6], Device.Cpu))).Data.ToArray();
        Reference.Close(expected, actual, 1e-5, 1e-5, "DoRA layer vs formula");
        // Perturbing m leaves the norm alone, so its finite differences are exact; A and B are covered by the node check.
        Variable Loss() => TinyModels.WeightedSum(m.Forward(Variable.Constant(Tensor.FromArray(x, [4, 6], Device.Cpu))));
        TinyModels.CheckParameterGradient(adapter.Magnitude, Loss, [0, 2, 4]);
        Assert.True(adapter.Magnitude.Trainable && adapter.A.Trainable && adapter.B.Trainable);
        Assert.False(layer.BaseLayer.Weight.Trainable);
    }

    [Fact]
    public void FreshDoraAdapterStartsAtTheWeightNormsAndLeavesTheOutputUnchanged()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(3), 6);
        var before = TinyModels.Logits(model, batch);
        var lora = LoraModel.Inject(model, Dora);
        foreach (var (path, adapter) in lora.AdapterWeights("default"))
        {
            var w = lora.Layers[path].BaseLayer.Weight.Data.ToArray();
            int inF = lora.Layers[path].BaseLayer.InFeatures;
            var norms = Enumerable.Range(0, w.Length / inF).Select(o => Math.Sqrt(w.Skip(o * inF).Take(inF).Sum(v => (double)v * v))).ToArray();
            Reference.Close(norms, adapter.Magnitude!.Data.ToArray(), 1e-6, 1e-6, $"{path} m = ‖W‖");
        }
        Assert.True(ResidualChecks.MaxRelativeDifference(before, TinyModels.Logits(model, batch)) <= 1e-6, "a fresh DoRA adapter changed the output");
        long expected = lora.AdapterWeights("default").Sum(a => a.Adapter.A.Count + a.Adapter.B.Count + a.Adapter.Magnitude!.Count);
        Assert.Equal(expected, lora.Report().Trainable);
    }

    [Fact]
    public void MergeMatchesUnmergedAndUnmergeRestoresTheWeights()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(3), 6);
        var baseOut = TinyModels.Logits(model, batch);
        var lora = LoraModel.Inject(model, Dora);
        Perturb(lora, "default");
        var adapted = TinyModels.Logits(model, batch);
        Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, adapted) > 1e-3, "the perturbed adapter changes nothing: vacuous comparison");
        var weights = lora.Layers.ToDictionary(l => l.Key, l => l.Value.BaseLayer.Weight.Data.ToArray());
        lora.Merge();
        AssertRelative(adapted, TinyModels.Logits(model, batch), 1e-4, "merged");
        using (lora.DisableAdapters()) AssertRelative(baseOut, TinyModels.Logits(model, batch), 1e-5, "disabled while merged");
        lora.Unmerge();
        foreach (var (path, w) in weights) Reference.Close(w, lora.Layers[path].BaseLayer.Weight.Data.ToArray(), 1e-5, 0, $"unmerged {path}");
        AssertRelative(adapted, TinyModels.Logits(model, batch), 1e-5, "unmerged");
        lora.MergeAndUnload();
        Assert.DoesNotContain(model.NamedParameters(), p => p.Name.Contains("lora_"));
        AssertRelative(adapted, TinyModels.Logits(model, batch), 1e-4, "merged and unloaded");
    }

    [Fact]
    public void SaveThenLoadGivesTheSameLogitsWithPeftsMagnitudeKey()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(4), 5);
        var lora = LoraModel.Inject(model, Dora, "task");
        Perturb(lora, "task");
        var expected = TinyModels.Logits(model, batch);
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "task", dir);
        var shapes = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Entries.ToDictionary(e => e.Name, e => e.Shape.ToArray());
        Assert.Equal([Config.DModel], shapes["base_model.model.encoder.layers.0.self_attn.q_proj.lora_magnitude_vector"]);
        Assert.Equal([Config.DFF], shapes["base_model.model.encoder.layers.0.ffn.fc1.lora_magnitude_vector"]);
        Assert.Equal(3 * 8, shapes.Count);   // (3 attention modules × q, v + 2 fc1) × (A, B, m)
        Assert.True((bool)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!["use_dora"]!);

        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var loaded = LoraModel.For(fresh);
        AdapterFiles.Load(loaded, dir, "task");
        loaded.SetActiveAdapter("task");
        Reference.Close(expected, TinyModels.Logits(fresh, batch), 1e-6, 1e-6, "loaded DoRA adapter");
    }

    [Fact]
    public void ThreeOptimizerStepsChangeOnlyTheAdapterParameters()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, Dora);
        var frozen = model.NamedParameters().Where(p => !p.Parameter.Trainable).Select(p => (p.Name, Data: p.Parameter.Data.ToArray())).ToList();
        var start = lora.AdapterWeights("default").SelectMany(a => a.Adapter.Weights).ToDictionary(p => p, p => p.Data.ToArray());
        using (var optimizer = new AdamW(model.TrainableParameters(), 1e-2f))
        {
            var rng = new Random(1);
            for (int i = 0; i < 3; i++) TinyModels.Step(model, optimizer, TinyModels.CopyBatch(rng, 8));
        }
        var now = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        foreach (var (name, data) in frozen)
            Assert.True(data.AsSpan().SequenceEqual(now[name]), $"frozen {name} changed");
        foreach (var part in new[] { "lora_A", "lora_B", "lora_magnitude_vector" })
            Assert.True(start.Any(kv => kv.Key.Name == part && !kv.Value.AsSpan().SequenceEqual(kv.Key.Data.ToArray())), $"no {part} changed in 3 steps");
        Assert.Equal(start.Keys.Sum(p => p.Count), model.ParameterCount(trainableOnly: true));
    }

    [Fact]
    public void APeftStyleDoraAdapterLoads()
    {
        // What PEFT's save_pretrained writes for a DoRA LoRA: its full config, and A, B, m under its keys, no metadata.
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile), """
            {"alpha_pattern": {}, "auto_mapping": null, "base_model_name_or_path": "tiny", "bias": "none", "fan_in_fan_out": false,
             "inference_mode": true, "init_lora_weights": true, "layer_replication": null, "layers_pattern": null, "layers_to_transform": null,
             "loftq_config": {}, "lora_alpha": 4, "lora_bias": false, "lora_dropout": 0.05, "megatron_config": null, "megatron_core": "megatron.core",
             "modules_to_save": null, "peft_type": "LORA", "r": 2, "rank_pattern": {}, "revision": null, "target_modules": ["q_proj"],
             "task_type": "SEQ_2_SEQ_LM", "use_dora": true, "use_rslora": false}
            """);
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var reference = LoraModel.Inject(model, new LoraConfig { R = 2, Alpha = 4, Dropout = 0.05f, UseDora = true, TargetModules = ["q_proj"] });
        Perturb(reference, "default", seed: 80);
        var tensors = new List<(string, int[], float[])>();
        foreach (var (path, a) in reference.AdapterWeights("default"))
            foreach (var (key, p) in new[] { ("lora_A.weight", a.A), ("lora_B.weight", a.B), ("lora_magnitude_vector", a.Magnitude!) })
                tensors.Add(($"base_model.model.{path}.{key}", p.Data.ShapeArray(), p.Data.ToArray()));
        Safetensors.Write(Path.Combine(dir, AdapterFiles.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        model.Eval();
        var batch = TinyModels.CopyBatch(new Random(5), 4);
        var expected = TinyModels.Logits(model, batch);

        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var warnings = new List<string>();
        var lora = LoraModel.For(fresh);
        AdapterFiles.Load(lora, dir, "peft", warn: warnings.Add);
        lora.SetActiveAdapter("peft");
        fresh.Eval();   // after loading: the new wrappers start in training mode, where lora_dropout 0.05 applies
        Assert.Empty(warnings);
        Assert.True(lora.Adapters["peft"].UseDora);
        Reference.Close(expected, TinyModels.Logits(fresh, batch), 1e-6, 1e-6, "PEFT-style DoRA adapter");

        // The magnitudes are required when use_dora is true.
        var dir2 = Directory.CreateTempSubdirectory().FullName;
        File.Copy(Path.Combine(dir, AdapterFiles.ConfigFile), Path.Combine(dir2, AdapterFiles.ConfigFile));
        Safetensors.Write(Path.Combine(dir2, AdapterFiles.WeightsFile), tensors.Where(t => !t.Item1.EndsWith("magnitude_vector")).ToList(), new Dictionary<string, string>());
        using var other = new Seq2SeqTransformer(Config, Device.Cpu);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.Load(LoraModel.For(other), dir2, "x", warn: _ => { }));
        Assert.Contains("lora_magnitude_vector", e.Message);
    }

    [Theory, MemberData(nameof(Reference.KernelDevices), MemberType = typeof(Reference))]
    public void KernelDeviceBackwardAndMerge(string id)
    {
        // The node on this device's kernels, tiny (every element is two forwards on the simulator).
        var norm = FixedNorm([2, 3], [1, 3], [2, 1], 1, 3, 4, 2f, id);
        GradCheck.Check(id, v => DoraLinear.Forward(v[0], null, v[1], v[2], v[3], v[4], v[5], 2f, norm()), [[2, 3], [2, 3], [2], [1, 3], [2, 1], [2]]);
        var device = Device.Get(id);
        using var m = new OneLinear(8, 6, device);
        var lora = LoraModel.Inject(m, new LoraConfig { R = 2, Alpha = 4, UseDora = true, TargetModules = ["q_proj"] });
        Perturb(lora, "default");
        var x = Reference.Random(3 * 8, 4);
        float[] Run()
        {
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            return m.Forward(Variable.Constant(Tensor.FromArray(x, [3, 8], device))).Data.ToArray();
        }
        var adapted = Run();
        var w = lora.Layers["q_proj"].BaseLayer.Weight.Data.ToArray();
        lora.Merge();
        AssertRelative(adapted, Run(), 1e-4, $"{id} merged");
        lora.Unmerge();
        Reference.Close(w, lora.Layers["q_proj"].BaseLayer.Weight.Data.ToArray(), 1e-5, 0, $"{id} unmerged W");
    }
}
