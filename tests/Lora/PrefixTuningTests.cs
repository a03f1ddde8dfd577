using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora.PrefixTuning;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

public class PrefixTuningTests
{
    static readonly PrefixTuningConfig Direct = new() { NumVirtualTokens = 3 };
    static readonly PrefixTuningConfig Projection = new() { NumVirtualTokens = 2, PrefixProjection = true, EncoderHiddenSize = 8 };

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void Lifecycle(string kind) => PeftMethodChecks.Lifecycle(kind, PrefixTuningModel.For, Direct, Projection, freshIsBase: false);

    /// <summary>The projection instance first: its save holds the MLP's output, and the loaded table reproduces it.</summary>
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void LifecycleWithTheProjectionFirst(string kind) => PeftMethodChecks.Lifecycle(kind, PrefixTuningModel.For, Projection,
        Direct with { PrefixSites = kind == "bert" ? null : [PrefixSite.Decoder] }, freshIsBase: false);

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void PrefixesGoToEveryAttentionModuleInTensorOrder(string kind)
    {
        using var s = TinySubject.Make(kind);
        var prefix = PrefixTuningModel.Inject(s.Model, Direct);
        string[] expected = kind == "bert" ? ["encoder.layer.0.attention", "encoder.layer.1.attention"]
            : ["encoder.layers.0.self_attn", "decoder.layers.0.self_attn", "decoder.layers.0.cross_attn"];
        Assert.Equal(expected, prefix.PrefixedModules("default"));
        Assert.Equal([3, expected.Length * 2 * 16], prefix.Encoders["default"].Table.Data.ShapeArray());
        Assert.Equal(3L * expected.Length * 2 * 16, prefix.Report().Trainable);
        var projected = PrefixTuningModel.For(new BertModel(TinySubject.BertTiny, Device.Cpu, pooler: false));
        projected.Add("p", Projection);
        // embedding [P, C], transform.0 C → H, transform.2 H → M·2·C: PEFT's PrefixEncoder with prefix_projection.
        Assert.Equal(["prompt_encoder.p.embedding.weight", "prompt_encoder.p.transform.0.weight", "prompt_encoder.p.transform.0.bias",
            "prompt_encoder.p.transform.2.weight", "prompt_encoder.p.transform.2.bias"], projected.InstanceParameters("p").Select(p => p.Name));
        Assert.Equal([2 * 2 * 16, 8], projected.Encoders["p"].GetModule("transform.2").NamedParameters().First().Parameter.Data.ShapeArray());
        projected.Base.Dispose();
        var e = Assert.Throws<ArgumentException>(() => prefix.Add("x", Direct with { PrefixSites = ["decoder", "lm_head"] }));
        Assert.Contains("prefix_sites", e.Message);
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void GradientsMatchFiniteDifferences(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        var prefix = PrefixTuningModel.Inject(s.Model, Direct);
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, prefix, "default");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void GradientsMatchFiniteDifferencesThroughTheProjection(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        var prefix = PrefixTuningModel.Inject(s.Model, Projection);
        Assert.Equal(5, prefix.InstanceParameters("default").Count());
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, prefix, "default");
    }

    /// <summary>
    /// What a prefix is: extra keys and values the mask always admits. With every real key masked out, the prefix is all a
    /// query can attend to, so with a zero value the attention output is o_proj's bias.
    /// </summary>
    [Fact]
    public void WithEveryRealKeyMaskedOnlyThePrefixIsAttended()
    {
        using var attention = new MultiHeadAttention(8, 2, new SeedSequence(3), Device.Cpu);
        using var x = Tensor.FromArray(Reference.Random(2 * 3 * 8, 11), [2, 3, 8], Device.Cpu);
        attention.ExtraKeyValues = b => (Variable.Constant(Tensor.Full([b, 1, 8], 0.5f, Device.Cpu)), Variable.Constant(Tensor.Zeros([b, 1, 8], Device.Cpu)));
        using var allMasked = Tensor.Full([2, 3], -1e9f, Device.Cpu);
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var y = attention.Forward(Variable.Constant(x), Variable.Constant(x), false, allMasked).Data.ToArray();
        var bias = ((Linear)attention.GetModule("o_proj")).Bias!.Data.ToArray();
        for (int i = 0; i < y.Length; i++) Assert.True(Math.Abs(y[i] - bias[i % 8]) < 1e-5, $"index {i}: {y[i]} vs bias {bias[i % 8]}");
    }

    [Fact]
    public void DecodingWithTheCacheEqualsDecodingWithout()
    {
        using var model = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu);
        PrefixTuningModel.Inject(model, Direct);   // encoder, decoder self- and cross-attention
        SoftPromptDecoding.CacheChangesNothing(model);
        using var projected = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu);
        PrefixTuningModel.Inject(projected, Projection);
        SoftPromptDecoding.CacheChangesNothing(projected);
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void MergeIsRefusedAndUnloadGivesTheBase(string kind)
    {
        using var s = TinySubject.Make(kind);
        var baseOut = s.Output();
        var prefix = PrefixTuningModel.Inject(s.Model, Projection);
        var e = Assert.Throws<NotSupportedException>(() => prefix.Merge());
        Assert.Contains("Prefix tuning cannot be merged", e.Message);
        Assert.Throws<NotSupportedException>(() => prefix.MergeAndUnload());
        prefix.Unload();
        Assert.DoesNotContain(s.Model.NamedParameters(), p => p.Name.StartsWith("prompt_encoder"));
        PeftMethodChecks.Bitwise(baseOut, s.Output(), "unloaded");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void FileHasPeftsLayoutAndAPeftFileLoadsWithPeftsPlacement(string kind)
    {
        using var s = TinySubject.Make(kind);
        // PEFT's own placement: the decoder self-attention on an encoder-decoder model, the self-attention on BERT.
        var sites = kind == "bert" ? [PrefixSite.Encoder] : new[] { PrefixSite.Decoder };
        var prefix = PrefixTuningModel.Inject(s.Model, Projection with { PrefixSites = sites });
        PeftMethodChecks.Perturb(prefix, "default");
        var adapted = s.Output();
        var dir = Directory.CreateTempSubdirectory("nanolora-prefix-").FullName;
        try
        {
            prefix.Save("default", dir);
            var file = Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors"));
            Assert.Equal(["prompt_embeddings"], file.Entries.Select(e => e.Name));
            int layers = kind == "bert" ? 2 : 1;
            Assert.Equal([2, layers * 2 * 16], file.Entry("prompt_embeddings").Shape);   // PEFT's [P, num_layers·2·token_dim]
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "adapter_config.json")))!.AsObject();
            Assert.Equal("PREFIX_TUNING", (string?)json["peft_type"]);
            Assert.True((bool)json["prefix_projection"]!);
            Assert.Equal(8, (int)json["encoder_hidden_size"]!);
            Assert.Equal(layers, (int)json["num_layers"]!);
            Assert.Equal(2, (int)json["num_attention_heads"]!);
            json.Remove("prefix_sites");   // as PEFT writes it
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString());
            using var fresh = TinySubject.Make(kind);
            var loaded = PrefixTuningModel.For(fresh.Model);
            loaded.Load(dir, "peft");
            loaded.SetActive("peft");
            Assert.False(loaded.Encoders["peft"].Projected);   // PEFT's inference-mode encoder: the saved table itself
            Assert.Equal(prefix.PrefixedModules("default"), loaded.PrefixedModules("peft"));
            PeftMethodChecks.Close(adapted, fresh.Output(), 1e-6, "loaded from a PEFT-style file");
            json["token_dim"] = 32;
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString());
            var e = Assert.Throws<InvalidDataException>(() => loaded.Load(dir, "x"));
            Assert.Contains("token_dim", e.Message);
            json["token_dim"] = 16;
            json["prefix_sites"] = new JsonArray("encoder", "decoder");   // needs a wider tensor than the file has
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), json.ToJsonString());
            e = Assert.Throws<InvalidDataException>(() => loaded.Load(dir, "y"));
            Assert.Contains(kind == "bert" ? "prefix_sites" : "prompt_embeddings", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
