using Nanolora.Autograd;
using Nanolora.Lora.Bottleneck;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

public class BottleneckTests
{
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void HoulsbyLifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, BottleneckModel.For, BottleneckConfig.Houlsby(4), BottleneckConfig.Pfeiffer(8));

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void PfeifferLifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, BottleneckModel.For, BottleneckConfig.Pfeiffer(4), BottleneckConfig.Pfeiffer(2) with { NonLinearity = "gelu", CrossAdapter = true });

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void AdaptersSitWhereAdapterHubPutsThemWithTheSizeTheFactorGives(string kind)
    {
        using var s = TinySubject.Make(kind);
        var houlsby = BottleneckModel.Inject(s.Model, BottleneckConfig.Houlsby(4));
        var hosts = houlsby.Hosts.Keys.Order().ToList();
        Assert.Equal(kind == "bert"
            ? ["encoder.layer.0.attention.output.adapters", "encoder.layer.0.output.adapters", "encoder.layer.1.attention.output.adapters", "encoder.layer.1.output.adapters"]
            : ["decoder.layers.0.attention_adapters.adapters", "decoder.layers.0.output_adapters.adapters", "encoder.layers.0.attention_adapters.adapters", "encoder.layers.0.output_adapters.adapters"],
            hosts);
        // Each adapter: down [4, 16] + 4, up [16, 4] + 16.
        long perAdapter = 4 * 16 + 4 + 16 * 4 + 16;
        Assert.Equal(4 * perAdapter, houlsby.Report().Trainable);
        Assert.Equal(s.Model.ParameterCount() - 4 * perAdapter, houlsby.Report().BaseParameters);
        var names = houlsby.InstanceParameters("default").Select(p => p.Name).ToList();
        Assert.Contains(hosts[1] + ".default.adapter_down.0.weight", names);
        Assert.Contains(hosts[1] + ".default.adapter_up.bias", names);
        Assert.Equal(names.Order(), s.Model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).Order());

        houlsby.Add("pfeiffer", BottleneckConfig.Pfeiffer(4) with { CrossAdapter = true });
        var pfeifferHosts = houlsby.Hosts.Where(h => h.Value.Items.ContainsKey("pfeiffer")).Select(h => h.Key).ToList();
        Assert.All(pfeifferHosts, h => Assert.True(h.EndsWith("output_adapters.adapters") || h.EndsWith(".output.adapters") || h.Contains("cross_attention_adapters"), h));
        Assert.Equal(kind == "bert" ? 2 : 3, pfeifferHosts.Count);   // the decoder's cross-attention gets one too
    }

    // The layout of our own (PEFT has no bottleneck adapters), after the adapters library's names: the config fields its
    // loader reads, and each adapter's four tensors under its host's path.
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void FileHasTheDocumentedLayout(string kind)
    {
        using var s = TinySubject.Make(kind);
        var adapters = BottleneckModel.Inject(s.Model, BottleneckConfig.Pfeiffer(4));
        var dir = Directory.CreateTempSubdirectory("nanolora-bottleneck-").FullName;
        try
        {
            adapters.Save("default", dir);
            var file = Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
            string host = kind == "bert" ? "encoder.layer.0.output.adapters" : "decoder.layers.0.output_adapters.adapters";
            foreach (var (tensor, shape) in new (string, int[])[] { ("adapter_down.0.weight", [4, 16]), ("adapter_down.0.bias", [4]), ("adapter_up.weight", [16, 4]), ("adapter_up.bias", [16]) })
                Assert.Equal(shape, file.Entry($"base_model.model.{host}.{tensor}").Shape);
            // One adapter after each layer's feed-forward block: BERT's 2 layers, or the seq2seq model's encoder and decoder layer.
            Assert.Equal(4 * 2, file.Entries.Count);
            Assert.All(file.Entries, e => Assert.DoesNotContain(".default.", e.Name));   // the instance name is not in the keys, as PEFT does
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.Equal("BOTTLENECK", (string?)config["peft_type"]);
            Assert.Equal(kind == "bert" ? "FEATURE_EXTRACTION" : "SEQ_2_SEQ_LM", (string?)config["task_type"]);
            Assert.Equal(4, (int)config["reduction_factor"]!);
            Assert.Equal("relu", (string?)config["non_linearity"]);
            Assert.False((bool)config["mh_adapter"]!);
            Assert.True((bool)config["output_adapter"]!);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void GradientsMatchFiniteDifferences(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        var adapters = BottleneckModel.Inject(s.Model, BottleneckConfig.Houlsby(4));
        PeftMethodChecks.Perturb(adapters, "default");   // up ≠ 0, or down's gradient would be 0 and vacuous
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, adapters, "default");
    }

    [Theory]
    [InlineData("relu")]
    [InlineData("swish")]
    [InlineData("gelu")]
    [InlineData("tanh")]
    public void AdapterModuleIsResidualAndItsBackwardMatchesFiniteDifferences(string activation)
    {
        using var adapter = new BottleneckAdapter(6, 3, activation, 5, Device.Cpu);
        var h = Reference.Random(2 * 3 * 6, 9);
        Variable Input() => Variable.Constant(Tensor.FromArray(h, [2, 3, 6], Device.Cpu));
        using (Graph.NoGrad())
        using (new GraphScope())
            PeftMethodChecks.Bitwise(h, adapter.Forward(Input()).Data.ToArray(), "up = 0: the adapter is the identity");
        adapter.Up.Weight.Data.CopyFrom(Reference.Random(18, 11, -0.5f, 0.5f));
        adapter.Up.Bias!.Data.CopyFrom(Reference.Random(6, 12, -0.5f, 0.5f));
        foreach (var p in new[] { adapter.Down.Weight, adapter.Down.Bias!, adapter.Up.Weight, adapter.Up.Bias! })
            TinyModels.CheckParameterGradient(p, () => TinyModels.WeightedSum(adapter.Forward(Input())), [0, (int)p.Count / 2, (int)p.Count - 1]);
        GradCheck.Check("cpu", v => adapter.Forward(v[0]), [[2, 3, 6]]);
    }

    [Fact]
    public void MergeIsRefusedWithTheReasonAndUnloadGivesTheBaseBack()
    {
        using var s = TinySubject.Make("seq2seq");
        var baseOut = s.Output();
        var adapters = BottleneckModel.Inject(s.Model, BottleneckConfig.Pfeiffer(4));
        Assert.False(adapters.CanMerge);
        var e = Assert.Throws<NotSupportedException>(() => adapters.Merge());
        Assert.Contains("nonlinearity", e.Message);
        Assert.Throws<NotSupportedException>(() => adapters.MergeAndUnload());
        PeftMethodChecks.Perturb(adapters, "default");
        Assert.NotEqual(baseOut, s.Output());
        adapters.Unload();
        Assert.DoesNotContain(s.Model.NamedParameters(), p => p.Name.Contains("adapters"));
        PeftMethodChecks.Bitwise(baseOut, s.Output(), "unloaded");
        Assert.Throws<ArgumentException>(() => BottleneckModel.Inject(s.Model, BottleneckConfig.Pfeiffer(32)));   // 16 / 32 = 0 units
    }
}
