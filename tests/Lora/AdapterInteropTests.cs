using System.Text.Json.Nodes;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>What PEFT writes is read as PEFT means it, or refused by name: nothing meaningful is dropped silently.</summary>
public class AdapterInteropTests
{
    static readonly TransformerConfig Config = TinyModels.Config;

    static string Saved(LoraConfig config, ulong baseSeed = 1)
    {
        using var m = new Seq2SeqTransformer(Config with { Seed = baseSeed }, Device.Cpu);
        var lora = LoraModel.Inject(m, config, "task");
        foreach (var (_, a) in lora.AdapterWeights("task")) a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, 9, -0.3f, 0.3f));
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "task", dir);
        return dir;
    }

    static void EditConfig(string dir, Action<JsonObject> edit)
    {
        var path = Path.Combine(dir, AdapterFiles.ConfigFile);
        var json = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    static void RewriteTensors(string dir, Func<List<(string Name, int[] Shape, float[] Data)>, List<(string, int[], float[])>> change)
    {
        var path = Path.Combine(dir, AdapterFiles.WeightsFile);
        var file = Safetensors.Read(path);
        var tensors = file.Entries.Select(e => (e.Name, e.Shape.ToArray(), file.ReadFloats(e.Name))).ToList();
        Safetensors.Write(path, change(tensors), file.Metadata);
    }

    static Exception LoadError(string dir, ulong baseSeed = 1, bool force = false)
    {
        using var fresh = new Seq2SeqTransformer(Config with { Seed = baseSeed }, Device.Cpu);
        return Assert.ThrowsAny<Exception>(() => AdapterFiles.Load(LoraModel.For(fresh), dir, "x", force, _ => { }));
    }

    [Fact]
    public void TrainedBiasOfAnAdaptedLayerUsesPeftsBaseLayerKeyAndTheOldKeyStillLoads()
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj"], Bias = LoraBias.LoraOnly });
        var names = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Entries.Select(e => e.Name).ToList();
        Assert.Contains("base_model.model.encoder.layers.0.self_attn.q_proj.base_layer.bias", names);
        Assert.DoesNotContain("base_model.model.encoder.layers.0.self_attn.q_proj.bias", names);
        // An adapter written by Nanolora before PEFT's key: <module>.bias.
        RewriteTensors(dir, t => t.Select(x => (x.Name.Replace(".base_layer.bias", ".bias"), x.Shape, x.Data)).ToList());
        using var m = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(m);
        AdapterFiles.Load(lora, dir, "old", warn: _ => { });
        var bias = m.NamedParameters().First(p => p.Name == "encoder.layers.0.self_attn.q_proj.base_layer.bias").Parameter.Data.ToArray();
        var stored = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).ReadFloats("base_model.model.encoder.layers.0.self_attn.q_proj.bias");
        Assert.Equal(stored, bias);
    }

    [Theory]
    [InlineData("fan_in_fan_out", "true", "Conv1D")]
    [InlineData("layer_replication", "[[0, 1]]", "replication")]
    [InlineData("lora_bias", "true", "lora_B")]
    [InlineData("init_lora_weights", "\"olora\"", "path_initial_model_for_weight_conversion")]
    [InlineData("r", "0", "'r'")]
    [InlineData("bias", "\"some\"", "'bias'")]
    public void FieldsThatChangeTheMathsAreRefusedByName(string field, string value, string why)
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        EditConfig(dir, j => j[field] = JsonNode.Parse(value));
        var e = LoadError(dir);
        Assert.Contains(field, e.Message);
        Assert.Contains(why, e.Message);
    }

    [Fact]
    public void UnknownFieldsWarnOnceAndBookkeepingDoesNot()
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        EditConfig(dir, j => { j["my_custom_field"] = 3; j["revision"] = "main"; j["megatron_core"] = "megatron.core"; });
        var warnings = new List<string>();
        using var m = new Seq2SeqTransformer(Config, Device.Cpu);
        AdapterFiles.Load(LoraModel.For(m), dir, "x", warn: warnings.Add);
        Assert.Single(warnings);
        Assert.Contains("my_custom_field", warnings[0]);
    }

    [Fact]
    public void TensorsWithoutAPlaceAreRefused()
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        // A DoRA magnitude, an untargeted module's LoRA pair, a bias the config does not train.
        foreach (var (name, shape, why) in new[]
        {
            ("base_model.model.encoder.layers.0.self_attn.q_proj.lora_magnitude_vector", new[] { Config.DModel }, "DoRA"),
            ("base_model.model.encoder.layers.0.self_attn.v_proj.lora_A.weight", new[] { 2, Config.DModel }, "do not select"),
            ("base_model.model.encoder.layers.0.ffn.fc1.bias", new[] { Config.DFF }, "no place"),
        })
        {
            var copy = Directory.CreateTempSubdirectory().FullName;
            foreach (var f in Directory.GetFiles(dir)) File.Copy(f, Path.Combine(copy, Path.GetFileName(f)));
            RewriteTensors(copy, t => [.. t, (name, shape, new float[shape.Aggregate(1, (a, b) => a * b)])]);
            var e = LoadError(copy);
            Assert.Contains(name, e.Message);
            Assert.Contains(why, e.Message);
        }
    }

    [Fact]
    public void APickleIsNeverLoaded()
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        File.Move(Path.Combine(dir, AdapterFiles.WeightsFile), Path.Combine(dir, AdapterFiles.PickleFile));
        var e = LoadError(dir);
        Assert.Contains("pickle", e.Message);
        Assert.Contains("safe_serialization", e.Message);
    }

    [Fact]
    public void AnAdapterKnowsItsBase()
    {
        var dir = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] }, baseSeed: 1);
        Assert.NotNull(BaseFingerprint.Parse(Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Metadata[BaseFingerprint.MetadataKey]));
        var e = LoadError(dir, baseSeed: 2);
        Assert.Contains("another base", e.Message);
        Assert.Contains("--force", e.Message);
        // Forced: it loads, with a warning.
        using var other = new Seq2SeqTransformer(Config with { Seed = 2 }, Device.Cpu);
        var warnings = new List<string>();
        AdapterFiles.Load(LoraModel.For(other), dir, "x", force: true, warn: warnings.Add);
        Assert.Contains(warnings, w => w.Contains("forced"));
        // The same base (a fresh copy with the same weights) loads without a word.
        using var same = new Seq2SeqTransformer(Config with { Seed = 1 }, Device.Cpu);
        warnings.Clear();
        AdapterFiles.Load(LoraModel.For(same), dir, "x", warn: warnings.Add);
        Assert.Empty(warnings);
    }

    [Fact]
    public void AllLinearExcludeAndLayersPatternSelectAsPeftDoes()
    {
        using var m = new Seq2SeqTransformer(Config with { TieEmbeddings = false, EncoderLayers = 2, DecoderLayers = 2 }, Device.Cpu);
        var linears = m.NamedModules().Where(x => x.Module is Linear).Select(x => x.Name).ToList();
        var all = new LoraConfig { TargetModules = [LoraConfig.AllLinear] };
        Assert.Contains("lm_head", linears);
        Assert.Equal(linears.Where(n => n != "lm_head"), linears.Where(all.Targets));
        var excluded = all with { ExcludeModules = ["fc1", "fc2"] };
        Assert.DoesNotContain(linears.Where(excluded.Targets), n => n.EndsWith("fc1") || n.EndsWith("fc2"));
        Assert.Contains(linears.Where(excluded.Targets), n => n.EndsWith("q_proj"));
        var decoderLayer1 = new LoraConfig { TargetModules = ["q_proj"], LayersToTransform = [1], LayersPattern = ["layers"] };
        Assert.Equal(["encoder.layers.1.self_attn.q_proj", "decoder.layers.1.self_attn.q_proj", "decoder.layers.1.cross_attn.q_proj"],
            linears.Where(decoderLayer1.Targets).ToArray());
        Assert.DoesNotContain(linears, (decoderLayer1 with { LayersPattern = ["blocks"] }).Targets);
        // "all-linear" and exclude_modules survive the file round trip.
        var dir = Saved(all with { ExcludeModules = ["o_proj"] });
        var config = AdapterFiles.ReadConfig(dir, _ => { });
        Assert.Equal([LoraConfig.AllLinear], config.TargetModules);
        Assert.Equal(["o_proj"], config.ExcludeModules);
        Assert.Equal("all-linear", (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!["target_modules"]);
    }
}
