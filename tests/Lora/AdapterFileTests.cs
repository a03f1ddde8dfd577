using System.Text.Json.Nodes;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>Adapters on disk in PEFT's layout: round trip, key names and shapes, config fields, refusals.</summary>
public class AdapterFileTests
{
    static readonly TransformerConfig Config = TinyModels.Config;

    /// <summary>A model with a trained-looking adapter (B random) saved to a fresh directory; returns its logits on a batch.</summary>
    static (string Dir, float[] Logits, Batch Batch) SaveAdapter(LoraConfig config, TransformerConfig? model = null)
    {
        using var m = new Seq2SeqTransformer(model ?? Config, Device.Cpu);
        var lora = LoraModel.Inject(m, config, "task");
        int seed = 50;
        foreach (var (_, a) in lora.AdapterWeights("task")) a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -0.3f, 0.3f));
        var batch = TinyModels.CopyBatch(new Random(4), 5);
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "task", dir);
        return (dir, TinyModels.Logits(m, batch), batch);
    }

    [Fact]
    public void SaveThenLoadIntoAFreshBaseGivesTheSameOutputs()
    {
        var (dir, expected, batch) = SaveAdapter(new LoraConfig { R = 4, Alpha = 16, TargetModules = ["q_proj", "v_proj", "fc1"], Bias = LoraBias.LoraOnly });
        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var baseOut = TinyModels.Logits(fresh, batch);
        var lora = LoraModel.For(fresh);
        AdapterFiles.Load(lora, dir, "loaded");
        lora.SetActiveAdapter("loaded");
        var actual = TinyModels.Logits(fresh, batch);
        Reference.Close(expected, actual, 1e-6, 1e-6, "loaded adapter");
        Assert.NotEqual(baseOut, actual);
        // A second adapter from the same directory loads next to the first (the base already has LoRA wrappers).
        AdapterFiles.Load(lora, dir, "again");
        lora.SetActiveAdapter("again");
        Reference.Close(expected, TinyModels.Logits(fresh, batch), 1e-6, 1e-6, "second load");
    }

    [Fact]
    public void BiasAllSavesAndLoadsTheLogitsBiasItTrains()
    {
        // bias "all" trains every parameter whose name ends in "bias", the model-level logits_bias included; the file
        // must hold all of them, or a loaded adapter silently loses what training changed.
        var config = Config with { LogitsBias = true };
        var lora = new LoraConfig { R = 4, Alpha = 16, TargetModules = ["q_proj", "v_proj"], Bias = LoraBias.All };
        using var m = new Seq2SeqTransformer(config, Device.Cpu);
        var lm = LoraModel.Inject(m, lora, "task");
        var logitsBias = m.NamedParameters().Single(p => p.Name == "logits_bias").Parameter;
        Assert.True(logitsBias.Trainable);
        Assert.Equal(m.NamedParameters().Count(p => p.Name.EndsWith("bias")), m.NamedParameters().Count(p => p.Name.EndsWith("bias") && p.Parameter.Trainable));
        logitsBias.Data.CopyFrom(Reference.Random((int)logitsBias.Count, 77, -0.5f, 0.5f));
        var batch = TinyModels.CopyBatch(new Random(4), 5);
        var expected = TinyModels.Logits(m, batch);
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lm, "task", dir);
        Assert.Contains("base_model.model.logits_bias", Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Entries.Select(e => e.Name));

        using var fresh = new Seq2SeqTransformer(config, Device.Cpu);
        var loaded = LoraModel.For(fresh);
        AdapterFiles.Load(loaded, dir, "loaded");
        loaded.SetActiveAdapter("loaded");
        Reference.Close(expected, TinyModels.Logits(fresh, batch), 1e-6, 1e-6, "adapter with its trained logits bias");
    }

    [Fact]
    public void FileUsesPeftKeysShapesAndConfig()
    {
        var (dir, _, _) = SaveAdapter(new LoraConfig { R = 4, Alpha = 16, TargetModules = ["q_proj", "v_proj"] });
        var file = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile));
        var shapes = file.Entries.ToDictionary(e => e.Name, e => e.Shape.ToArray());
        Assert.Equal(12, shapes.Count);   // 6 modules × (A, B); bias none: nothing else
        Assert.Equal([4, 16], shapes["base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.weight"]);
        Assert.Equal([16, 4], shapes["base_model.model.encoder.layers.0.self_attn.q_proj.lora_B.weight"]);
        Assert.Equal([16, 4], shapes["base_model.model.decoder.layers.0.cross_attn.v_proj.lora_B.weight"]);
        Assert.DoesNotContain(shapes.Keys, k => k.Contains("base_layer") || k.Contains(".task."));

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!;
        Assert.Equal("LORA", (string?)json["peft_type"]);
        Assert.Equal(4, (int?)json["r"]);
        Assert.Equal(16f, (float?)json["lora_alpha"]);
        Assert.Equal(["q_proj", "v_proj"], json["target_modules"]!.AsArray().Select(n => (string)n!).ToArray());
        Assert.Equal("none", (string?)json["bias"]);
        var back = AdapterFiles.ReadConfig(dir);
        Assert.Equal(4, back.R);
        Assert.Equal(16f, back.Alpha);
        Assert.Equal(LoraBias.None, back.Bias);
    }

    [Fact]
    public void BiasModeSavesTrainedBiases()
    {
        var (dir, _, _) = SaveAdapter(new LoraConfig { R = 2, Bias = LoraBias.LoraOnly });
        var names = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Entries.Select(e => e.Name).ToList();
        Assert.Contains("base_model.model.encoder.layers.0.self_attn.q_proj.base_layer.bias", names);   // PEFT's key for an adapted layer's bias
        Assert.DoesNotContain("base_model.model.encoder.layers.0.self_attn.k_proj.bias", names);
        Assert.Equal("lora_only", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!["bias"]);
    }

    [Fact]
    public void ReadsPeftConfigVariants()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        // As PEFT writes them: integer alpha, a regex for target_modules, a single layer index.
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile),
            """{"peft_type":"LORA","r":4,"lora_alpha":16,"target_modules":".*\\.(q|v)_proj","layers_to_transform":1,"bias":"all","use_rslora":true}""");
        var c = AdapterFiles.ReadConfig(dir);
        Assert.Equal([1], c.LayersToTransform!);
        Assert.Equal(".*\\.(q|v)_proj", c.TargetRegex);
        Assert.Equal(16f, c.Alpha);
        Assert.Equal(LoraBias.All, c.Bias);
        Assert.Equal(8f, c.ScalingFor("encoder.layers.1.self_attn.q_proj"));
        Assert.True(c.Targets("decoder.layers.1.cross_attn.v_proj"));
        Assert.False(c.Targets("decoder.layers.0.cross_attn.v_proj"));
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile), """{"peft_type":"PREFIX_TUNING","r":4}""");
        Assert.Throws<InvalidDataException>(() => AdapterFiles.ReadConfig(dir));
    }

    [Fact]
    public void LoadingOntoOtherDimsFailsNamingTheMismatch()
    {
        var (dir, _, _) = SaveAdapter(new LoraConfig { R = 4 });
        using var wider = new Seq2SeqTransformer(Config with { DModel = 24 }, Device.Cpu);
        var lora = LoraModel.For(wider);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.Load(lora, dir, "x"));
        Assert.Contains("lora_", e.Message);
        Assert.Contains("needs [", e.Message);
        Assert.Empty(lora.Adapters);   // refused before touching the model
        Assert.DoesNotContain(wider.NamedModules(), m => m.Module is LoraLinear);
    }

    [Fact]
    public void AdapterForAModuleTheBaseLacksFails()
    {
        var (dir, _, _) = SaveAdapter(new LoraConfig { R = 4 }, Config with { EncoderLayers = 2 });
        using var shallow = new Seq2SeqTransformer(Config, Device.Cpu);
        var e = Assert.Throws<InvalidDataException>(() => AdapterFiles.Load(LoraModel.For(shallow), dir, "x"));
        Assert.Contains("encoder.layers.1", e.Message);
    }

    [Fact]
    public void AdapterFileIsFarSmallerThanTheModel()
    {
        var config = Config with { DModel = 64, Heads = 4, DFF = 256, EncoderLayers = 2, DecoderLayers = 2, VocabSize = 500 };
        var (dir, _, _) = SaveAdapter(new LoraConfig { R = 4 }, config);
        var modelFile = Path.Combine(dir, "model.safetensors");
        using (var m = new Seq2SeqTransformer(config, Device.Cpu)) Checkpoint.SaveWeights(m, modelFile);
        long adapter = new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length, model = new FileInfo(modelFile).Length;
        Assert.True(adapter * 10 < model, $"adapter {adapter} bytes vs model {model} bytes");
    }
}
