using Nanolora.Autograd;
using Nanolora.Lora.Selective;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

public class SelectiveTests
{
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void BitFitLifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, SelectiveModel.For, SelectiveConfig.BitFit(), new SelectiveConfig { BiasOnly = true, LayersToTransform = [0] });

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void ChosenLayersLifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, SelectiveModel.For, SelectiveConfig.Layers(0), new SelectiveConfig { BiasOnly = true, LayersToTransform = [0] });

    [Fact]
    public void BitFitTrainsEveryBiasAndNothingElse()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config, Nanolora.Tensors.Device.Cpu);
        var bitfit = SelectiveModel.Inject(model, SelectiveConfig.BitFit());
        var trainable = model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList();
        Assert.All(trainable, n => Assert.EndsWith("bias", n));
        Assert.Equal(model.NamedParameters().Count(p => p.Name.EndsWith("bias")), trainable.Count);
        // 12 attention Linears (3 attention modules) + 2 fc1 (32 wide) + 2 fc2 + 5 layer norms + 2 final norms.
        long d = 16;
        Assert.Equal(12 * d + 2 * 32 + 2 * d + 7 * d, bitfit.Report().Trainable);
        Assert.Equal(0, bitfit.Report().AdapterParameters);   // no parameter is added
    }

    [Fact]
    public void ChosenLayersTrainWholeLayersByIndexOnBothModels()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config with { EncoderLayers = 2, DecoderLayers = 2 }, Nanolora.Tensors.Device.Cpu);
        SelectiveModel.Inject(model, SelectiveConfig.Layers(1));
        var trainable = model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList();
        Assert.All(trainable, n => Assert.Matches(@"^(encoder|decoder)\.layers\.1\.", n));
        Assert.Contains("encoder.layers.1.self_attn.q_proj.weight", trainable);
        Assert.Contains("decoder.layers.1.cross_attn.v_proj.bias", trainable);

        using var bert = new BertModel(TinySubject.BertTiny, Nanolora.Tensors.Device.Cpu);
        SelectiveModel.Inject(bert, SelectiveConfig.Layers(0) with { LayersPattern = ["layer"] });
        Assert.All(bert.NamedParameters().Where(p => p.Parameter.Trainable), p => Assert.StartsWith("encoder.layer.0.", p.Name));
        Assert.Equal(bert.GetModule("encoder.layer.0").ParameterCount(), bert.ParameterCount(trainableOnly: true));
    }

    // Nanolora's layout (PEFT has no such method): the config fields Load reads, and each trained parameter under PEFT's
    // key for it, nothing else.
    [Fact]
    public void FileHasTheDocumentedLayout()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config with { EncoderLayers = 2, DecoderLayers = 2 }, Nanolora.Tensors.Device.Cpu);
        var selective = SelectiveModel.Inject(model, new SelectiveConfig { BiasOnly = true, LayersToTransform = [1] });
        var dir = Directory.CreateTempSubdirectory("nanolora-selective-").FullName;
        try
        {
            selective.Save("default", dir);
            var file = Nanolora.Transformer.Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
            var expected = model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => "base_model.model." + p.Name).Order().ToList();
            Assert.Contains("base_model.model.decoder.layers.1.cross_attn.v_proj.bias", expected);
            Assert.Equal(expected, file.Entries.Select(e => e.Name).Order());
            Assert.Equal([16], file.Entry("base_model.model.encoder.layers.1.self_attn.q_proj.bias").Shape);
            var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!;
            Assert.Equal("SELECTIVE", (string?)config["peft_type"]);
            Assert.Equal("SEQ_2_SEQ_LM", (string?)config["task_type"]);
            Assert.True((bool)config["bias_only"]!);
            Assert.Equal("[1]", config["layers_to_transform"]!.ToJsonString());
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Fact]
    public void MergeAndUnloadKeepsTheActiveValuesAndUnloadPutsTheBaseBack()
    {
        using var s = TinySubject.Make("seq2seq");
        var baseOut = s.Output();
        var m = SelectiveModel.Inject(s.Model, SelectiveConfig.BitFit());
        s.Train(3);
        var trained = s.Output();
        Assert.True(m.CanMerge);
        m.Merge();   // nothing to fold: the values already are the weights
        PeftMethodChecks.Bitwise(trained, s.Output(), "merged");
        using (m.Disable()) PeftMethodChecks.Bitwise(baseOut, s.Output(), "disabled while merged");
        m.Unmerge();
        m.MergeAndUnload();
        Assert.Empty(m.Instances);
        PeftMethodChecks.Bitwise(trained, s.Output(), "merged and unloaded");

        using var t = TinySubject.Make("seq2seq");
        var n = SelectiveModel.Inject(t.Model, SelectiveConfig.Layers(0));
        t.Train(3);
        n.Unload();
        PeftMethodChecks.Bitwise(baseOut, t.Output(), "unloaded");
    }

    [Fact]
    public void RefusesConfigsThatSelectEverythingOrNothingAndFilesThatDoNotFit()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config, Nanolora.Tensors.Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => SelectiveModel.Inject(model, new SelectiveConfig()));
        Assert.Contains("BiasOnly", e.Message);
        e = Assert.Throws<ArgumentException>(() => SelectiveModel.Inject(model, SelectiveConfig.Layers(7)));
        Assert.Contains("selects no parameter", e.Message);

        var dir = Directory.CreateTempSubdirectory("nanolora-selective-").FullName;
        try
        {
            var m = SelectiveModel.Inject(model, SelectiveConfig.Layers(0));
            m.Save("default", dir);
            // The same file onto a model with wider layers: the shape is refused by name, and nothing is added.
            using var wider = new Seq2SeqTransformer(TinyModels.Config with { DFF = 48 }, Nanolora.Tensors.Device.Cpu);
            var other = SelectiveModel.For(wider);
            var bad = Assert.Throws<InvalidDataException>(() => other.Load(dir, "x"));
            Assert.Contains("ffn.fc1", bad.Message);
            Assert.Empty(other.Instances);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
