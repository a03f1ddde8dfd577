using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>PiSSA as PEFT does it: SVD init with the residual as base, and saving converted to plain LoRA for the original base.</summary>
public class PissaTests
{
    static readonly TransformerConfig Config = TinyModels.Config;
    static readonly LoraConfig Principal = new() { R = 4, Alpha = 8, Init = LoraInit.Pissa, TargetModules = ["q_proj", "v_proj", "fc1"] };

    static void Train(Seq2SeqTransformer model, int steps) => ResidualChecks.Train(model, steps);

    [Fact]
    public void InitSplitsWIntoItsTopRankPartAndTheResidualAndKeepsTheOutput()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(3), 6);
        var before = TinyModels.Logits(model, batch);
        var original = model.NamedParameters().Where(p => p.Name.EndsWith(".weight")).ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        var lora = LoraModel.Inject(model, Principal);
        Assert.True(ResidualChecks.MaxRelativeDifference(before, TinyModels.Logits(model, batch)) <= 1e-4, "PiSSA init changed the output");
        foreach (var (path, adapter) in lora.AdapterWeights("default"))
        {
            var layer = lora.Layers[path];
            int outF = layer.BaseLayer.OutFeatures, inF = layer.BaseLayer.InFeatures, r = adapter.Rank;
            var w = original[path + ".weight"];
            // s·B·A must be the rank-r truncation U_r·S_r·V_rᵀ of W, and the base now holds the rest.
            var svd = Svd.Decompose(w, outF, inF);
            var top = new double[outF * inF];
            for (int i = 0; i < outF; i++)
                for (int j = 0; j < inF; j++)
                    for (int k = 0; k < r; k++) top[i * inF + j] += svd.U[i * svd.K + k] * svd.S[k] * svd.Vt[k * inF + j];
            Reference.Close(top, ResidualChecks.Product(adapter), 1e-4, 1e-4, $"{path}: s·B·A vs the top-{r} SVD part");
            ResidualChecks.ResidualRebuilds(w, layer, adapter, path);
            Assert.True(layer.Residual is { } p && p.Adapter == "default");
        }
        // Adapters off: the original base, not the residual.
        using (lora.DisableAdapters()) Assert.True(ResidualChecks.MaxRelativeDifference(before, TinyModels.Logits(model, batch)) <= 1e-4, "disabled PiSSA is not the base");
    }

    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void SavedAdapterIsConvertedAndReproducesTheModelOnTheOriginalBase(bool rsLora, bool dora)
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(4), 5);
        var baseOut = TinyModels.Logits(model, batch);
        var config = Principal with { UseRsLora = rsLora, UseDora = dora, RankPattern = new Dictionary<string, int> { ["fc1"] = 2 } };
        var lora = LoraModel.Inject(model, config, "task");
        Train(model, 3);
        var trained = TinyModels.Logits(model, batch);
        Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, trained) > 1e-3, "training changed nothing: vacuous comparison");
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "task", dir);

        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!;
        Assert.Equal(8, (int)json["r"]!);
        Assert.Equal(rsLora ? 8 * Math.Sqrt(2) : 16, (double)json["lora_alpha"]!, 4);
        Assert.Equal(4, (int)json["rank_pattern"]!["fc1"]!);
        Assert.True((bool)json["init_lora_weights"]!);
        var file = Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile));
        Assert.Equal([8, Config.DModel], file.Entries.First(e => e.Name == "base_model.model.encoder.layers.0.self_attn.q_proj.lora_A.weight").Shape.ToArray());
        Assert.Equal([Config.DFF, 4], file.Entries.First(e => e.Name == "base_model.model.encoder.layers.0.ffn.fc1.lora_B.weight").Shape.ToArray());
        Assert.Equal(dora, (bool)json["use_dora"]!);
        Assert.Equal(dora, file.Entries.Any(e => e.Name == "base_model.model.encoder.layers.0.ffn.fc1.lora_magnitude_vector"));

        // Onto the base as it is on disk, without --force: its fingerprint is the one the file names.
        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var plain = LoraModel.For(fresh);
        Assert.Equal(BaseFingerprint.Of(plain, config)!.Serialize(), file.Metadata[BaseFingerprint.MetadataKey]);
        AdapterFiles.Load(plain, dir, "task");
        plain.SetActiveAdapter("task");
        Assert.All(plain.Layers.Values, l => Assert.Null(l.Residual));
        Assert.True(ResidualChecks.MaxRelativeDifference(trained, TinyModels.Logits(fresh, batch)) <= 1e-4, "converted adapter on the original base differs");
    }

    [Fact]
    public void MergeDisableDeleteAndUnloadKeepTheOriginalBaseInView()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(5), 5);
        var baseOut = TinyModels.Logits(model, batch);
        var weights = model.NamedParameters().ToDictionary(p => p.Name.Replace(".base_layer.", "."), p => p.Parameter.Data.ToArray());
        var lora = LoraModel.Inject(model, Principal);
        Train(model, 3);
        var trained = TinyModels.Logits(model, batch);
        lora.Merge();
        Assert.True(ResidualChecks.MaxRelativeDifference(trained, TinyModels.Logits(model, batch)) <= 1e-4, "merged");
        using (lora.DisableAdapters()) Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, TinyModels.Logits(model, batch)) <= 1e-4, "disabled while merged");
        lora.Unmerge();
        Assert.True(ResidualChecks.MaxRelativeDifference(trained, TinyModels.Logits(model, batch)) <= 1e-4, "unmerged");

        // Another adapter cannot share the residual base.
        Assert.Throws<InvalidOperationException>(() => lora.AddAdapter("other", new LoraConfig { R = 2 }));
        lora.DeleteAdapter("default");
        foreach (var (name, p) in model.NamedParameters().Select(p => (p.Name.Replace(".base_layer.", "."), p.Parameter)))
            Reference.Close(weights[name], p.Data.ToArray(), 1e-5, 1e-5, $"{name} after deleting the PiSSA adapter");
        Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, TinyModels.Logits(model, batch)) <= 1e-4, "deleted");

        // A new PiSSA adapter on the restored base; merge-and-unload leaves the fine-tuned model with no LoRA in it.
        lora.AddAdapter("again", Principal);
        lora.SetActiveAdapter("again");
        Train(model, 3);
        var again = TinyModels.Logits(model, batch);
        lora.MergeAndUnload();
        Assert.DoesNotContain(model.NamedModules(), m => m.Module is LoraLinear);
        Assert.True(ResidualChecks.MaxRelativeDifference(again, TinyModels.Logits(model, batch)) <= 1e-4, "merged and unloaded");
    }

    [Fact]
    public void APeftPissaAdapterSavedUnconvertedLoadsByRebuildingTheResidual()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(6), 5);
        var lora = LoraModel.Inject(model, Principal);
        Train(model, 3);
        var trained = TinyModels.Logits(model, batch);
        // PEFT's default save of a PiSSA adapter: the trained A, B as they are, init_lora_weights "pissa_niter_4".
        var dir = Directory.CreateTempSubdirectory().FullName;
        var tensors = lora.AdapterWeights("default").SelectMany(a => new[]
        {
            ($"base_model.model.{a.Path}.lora_A.weight", a.Adapter.A.Data.ShapeArray(), a.Adapter.A.Data.ToArray()),
            ($"base_model.model.{a.Path}.lora_B.weight", a.Adapter.B.Data.ShapeArray(), a.Adapter.B.Data.ToArray()),
        }).ToList();
        Safetensors.Write(Path.Combine(dir, AdapterFiles.WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile),
            """{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "fc1"], "init_lora_weights": "pissa_niter_4", "use_dora": false}""");
        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var warnings = new List<string>();
        var loaded = LoraModel.For(fresh);
        AdapterFiles.Load(loaded, dir, "peft", warn: warnings.Add);
        loaded.SetActiveAdapter("peft");
        Assert.Contains(warnings, w => w.Contains("pissa_niter_4") && w.Contains("exact SVD"));
        Assert.True(ResidualChecks.MaxRelativeDifference(trained, TinyModels.Logits(fresh, batch)) <= 1e-4, "unconverted PiSSA adapter on the rebuilt residual");
    }

    [Fact]
    public void ConfigJsonRoundTripsUseDoraAndPissa()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var path = Path.Combine(dir, AdapterFiles.ConfigFile);
        foreach (var config in new[] { new LoraConfig { R = 4, UseDora = true }, new LoraConfig { R = 4, Init = LoraInit.Pissa }, new LoraConfig { Init = LoraInit.Gaussian } })
        {
            File.WriteAllText(path, AdapterFiles.ConfigJson(config));
            var json = JsonNode.Parse(File.ReadAllText(path))!;
            Assert.Equal(config.UseDora, (bool)json["use_dora"]!);
            var back = AdapterFiles.ReadConfig(dir, _ => Assert.Fail("no warning expected"));
            Assert.Equal(config.UseDora, back.UseDora);
            Assert.Equal(config.Init, back.Init);
            Assert.Equal(config.R, back.R);
        }
        Assert.Equal("pissa", (string?)JsonNode.Parse(AdapterFiles.ConfigJson(new LoraConfig { Init = LoraInit.Pissa }))!["init_lora_weights"]);
        File.WriteAllText(path, """{"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "use_dora": "yes"}""");
        Assert.Contains("use_dora", Assert.Throws<InvalidDataException>(() => AdapterFiles.ReadConfig(dir)).Message);
        new LoraConfig { UseDora = true, Init = LoraInit.Pissa }.Validate();   // DoRA's magnitude survives the conversion
    }

    [Fact]
    public void PissaRefusesARankAboveTheWeightsAndAModelWithOtherAdapters()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => LoraModel.Inject(model, Principal with { R = Config.DModel + 1 }));
        Assert.Contains("min(out, in)", e.Message);
        Assert.DoesNotContain(model.NamedModules(), m => m.Module is LoraLinear l && l.Adapters.Count > 0);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 2 }, "plain");
        Assert.Throws<InvalidOperationException>(() => lora.AddAdapter("pissa", Principal));
    }
}
