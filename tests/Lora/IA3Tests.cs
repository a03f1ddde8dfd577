using Nanolora.Autograd;
using Nanolora.Lora.IA3;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

public class IA3Tests
{
    static IA3Config For(string kind) => kind == "bert" ? IA3Config.ForBert() : new IA3Config();

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void Lifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, IA3Model.For, For(kind), For(kind) with { TargetModules = For(kind).TargetModules.Skip(1).ToList() });

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void TargetsKeysValuesAndTheFeedForwardActivation(string kind)
    {
        using var s = TinySubject.Make(kind);
        var ia3 = IA3Model.Inject(s.Model, For(kind));
        var (key, value, ff) = kind == "bert"
            ? ("encoder.layer.0.attention.self.key", "encoder.layer.0.attention.self.value", "encoder.layer.0.output.dense")
            : ("encoder.layers.0.self_attn.k_proj", "decoder.layers.0.cross_attn.v_proj", "decoder.layers.0.ffn.fc2");
        Assert.False(ia3.Layers[key].IsFeedforward);
        Assert.Equal([16, 1], ia3.Layers[value].VectorShape);
        Assert.True(ia3.Layers[ff].IsFeedforward);
        Assert.Equal([1, 32], ia3.Layers[ff].VectorShape);   // the activation between fc1 and fc2 is 32 wide
        Assert.DoesNotContain(ia3.Layers.Keys, k => k.EndsWith("attention.output.dense"));
        // seq2seq: 3 attention modules × (k, v) + 2 fc2; BERT: 2 layers × (key, value, output.dense).
        Assert.Equal(kind == "bert" ? 6 : 8, ia3.Layers.Count);
        long expected = kind == "bert" ? 2 * (16 + 16 + 32) : 6 * 16 + 2 * 32;
        Assert.Equal(expected, ia3.Report().Trainable);
        Assert.Contains($"{ff}.ia3_l.default", ia3.InstanceParameters("default").Select(p => p.Name));
    }

    [Fact]
    public void FeedforwardScalesTheInputAndAttentionTheOutput()
    {
        using var m = new OneLinear(3, 2, Device.Cpu);
        var x = Reference.Random(2 * 3, 9);
        float[] Run()
        {
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            return m.Forward(Variable.Constant(Tensor.FromArray(x, [2, 3], Device.Cpu))).Data.ToArray();
        }
        var linear = (Linear)m.GetModule("q_proj");
        var w = linear.Weight.Data.ToArray();
        var b = linear.Bias!.Data.ToArray();
        var ia3 = IA3Model.Inject(m, new IA3Config { TargetModules = ["q_proj"], FeedforwardModules = [] });
        ia3.Layers["q_proj"].Vectors["default"].Data.CopyFrom([2f, -0.5f]);
        var outScaled = Run();
        for (int r = 0; r < 2; r++)
            for (int o = 0; o < 2; o++)
            {
                double y = b[o];
                for (int i = 0; i < 3; i++) y += x[r * 3 + i] * w[o * 3 + i];
                Assert.Equal(y * (o == 0 ? 2 : -0.5), outScaled[r * 2 + o], 5);
            }
        using var m2 = new OneLinear(3, 2, Device.Cpu);
        var ff = IA3Model.Inject(m2, new IA3Config { TargetModules = ["q_proj"], FeedforwardModules = ["q_proj"] });
        ff.Layers["q_proj"].Vectors["default"].Data.CopyFrom([2f, 0f, -1f]);
        using (var noGrad = Graph.NoGrad())
        using (var scope = new GraphScope())
        {
            var y = m2.Forward(Variable.Constant(Tensor.FromArray(x, [2, 3], Device.Cpu))).Data.ToArray();
            for (int r = 0; r < 2; r++)
                for (int o = 0; o < 2; o++)
                    Assert.Equal(b[o] + 2 * x[r * 3] * w[o * 3] - x[r * 3 + 2] * w[o * 3 + 2], y[r * 2 + o], 5);
        }
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void GradientsMatchFiniteDifferences(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        var ia3 = IA3Model.Inject(s.Model, For(kind));
        PeftMethodChecks.Perturb(ia3, "default");
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, ia3, "default");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void MergeMatchesTheUnmergedOutputsAndUnmergeRestoresTheWeights(string kind)
    {
        using var s = TinySubject.Make(kind);
        var baseOut = s.Output();
        var ia3 = IA3Model.Inject(s.Model, For(kind));
        PeftMethodChecks.Perturb(ia3, "default");
        var adapted = s.Output();
        var weights = ia3.Layers.ToDictionary(l => l.Key, l => (W: l.Value.BaseLayer.Weight.Data.ToArray(), B: l.Value.BaseLayer.Bias!.Data.ToArray()));
        ia3.Merge();
        PeftMethodChecks.Close(adapted, s.Output(), 1e-4, "merged");
        Assert.Throws<InvalidOperationException>(() => ia3.Merge());
        using (ia3.Disable()) PeftMethodChecks.Close(baseOut, s.Output(), 1e-5, "disabled while merged");
        PeftMethodChecks.Close(adapted, s.Output(), 1e-4, "merged again");
        ia3.Unmerge();
        foreach (var (path, (w, b)) in weights)
        {
            PeftMethodChecks.Close(w, ia3.Layers[path].BaseLayer.Weight.Data.ToArray(), 1e-6, $"unmerged {path}.weight");
            PeftMethodChecks.Close(b, ia3.Layers[path].BaseLayer.Bias!.Data.ToArray(), 1e-6, $"unmerged {path}.bias");
        }
        PeftMethodChecks.Close(adapted, s.Output(), 1e-5, "unmerged");
        ia3.MergeAndUnload();
        Assert.DoesNotContain(s.Model.NamedModules(), m => m.Module is IA3Linear);
        Assert.DoesNotContain(s.Model.NamedParameters(), p => p.Name.Contains("ia3_l") || p.Name.Contains("base_layer"));
        PeftMethodChecks.Close(adapted, s.Output(), 1e-4, "merged and unloaded");
    }

    [Fact]
    public void UnmergingAZeroIsRefusedAndChangesNothing()
    {
        using var s = TinySubject.Make("seq2seq");
        var ia3 = IA3Model.Inject(s.Model, new IA3Config());
        var l = ia3.Layers["encoder.layers.0.self_attn.k_proj"].Vectors["default"];
        var data = l.Data.ToArray();
        data[3] = 0;
        l.Data.CopyFrom(data);
        ia3.Merge();
        var merged = s.Output();
        var e = Assert.Throws<InvalidOperationException>(() => ia3.Unmerge());
        Assert.Contains("ia3_l[3] is 0", e.Message);
        Assert.Equal("default", ia3.MergedInstance);
        PeftMethodChecks.Bitwise(merged, s.Output(), "still merged");
    }

    [Fact]
    public void FileHasPeftsLayoutAndRefusesWhatItCannotLoad()
    {
        using var s = TinySubject.Make("seq2seq");
        var ia3 = IA3Model.Inject(s.Model, new IA3Config());
        var dir = Directory.CreateTempSubdirectory("nanolora-ia3-").FullName;
        try
        {
            ia3.Save("default", dir);
            var file = Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.Equal([16, 1], file.Entry("base_model.model.encoder.layers.0.self_attn.k_proj.ia3_l").Shape);
            Assert.Equal([1, 32], file.Entry("base_model.model.decoder.layers.0.ffn.fc2.ia3_l").Shape);
            var config = File.ReadAllText(Path.Combine(dir, "adapter_config.json"));
            foreach (var field in new[] { "\"peft_type\": \"IA3\"", "\"target_modules\"", "\"feedforward_modules\"", "\"init_ia3_weights\": true", "\"task_type\": \"SEQ_2_SEQ_LM\"" })
                Assert.Contains(field, config);
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), config.Replace("\"fan_in_fan_out\": false", "\"fan_in_fan_out\": true"));
            var e = Assert.Throws<InvalidDataException>(() => IA3Model.For(s.Model).Load(dir, "x"));
            Assert.Contains("fan_in_fan_out", e.Message);
            // A feed-forward module the targets do not include: PEFT's subset rule.
            var json = System.Text.Json.Nodes.JsonNode.Parse(config)!;
            json["feedforward_modules"] = new System.Text.Json.Nodes.JsonArray("fc1");
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString());
            e = Assert.Throws<InvalidDataException>(() => IA3Model.For(s.Model).Load(dir, "x"));
            Assert.Contains("feedforward_modules", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
        Assert.Throws<ArgumentException>(() => IA3Model.Inject(s.Model, new IA3Config { TargetModules = ["k_proj"] }, "bad"));
    }
}
