using Nanolora.Autograd;
using Nanolora.Lora.LnTuning;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

public class LnTuningTests
{
    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void Lifecycle(string kind) =>
        PeftMethodChecks.Lifecycle(kind, LnTuningModel.For, new LnTuningConfig(), new LnTuningConfig { TargetModules = [kind == "bert" ? "output.LayerNorm" : "ffn_norm"] });

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void WrapsEveryLayerNormAndGradientsMatchFiniteDifferences(string kind)
    {
        using var s = TinySubject.Make(kind, smooth: true);
        int norms = s.Model.NamedModules().Count(m => m.Module is LayerNorm);
        var ln = LnTuningModel.Inject(s.Model, new LnTuningConfig());
        Assert.Equal(norms, ln.Layers.Count);
        Assert.Equal(2L * 16 * norms, ln.Report().Trainable);
        Assert.Equal(ln.Report().Trainable, ln.Report().AdapterParameters);
        var names = ln.InstanceParameters("default").Select(p => p.Name).ToList();
        Assert.Contains(kind == "bert" ? "encoder.layer.0.output.LayerNorm.ln_tuning_layers.default.weight" : "encoder.layers.0.ffn_norm.ln_tuning_layers.default.bias", names);
        Assert.True(s.Model.NamedParameters().Where(p => p.Name.EndsWith(".base_layer.weight")).All(p => !p.Parameter.Trainable));
        PeftMethodChecks.Perturb(ln, "default", scale: 0.2f);
        PeftMethodChecks.GradientsMatchFiniteDifferences(s, ln, "default");
    }

    [Theory, MemberData(nameof(TinySubject.Both), MemberType = typeof(TinySubject))]
    public void MergeIsExactAndUnmergeRestoresTheBase(string kind)
    {
        using var s = TinySubject.Make(kind);
        var baseOut = s.Output();
        var ln = LnTuningModel.Inject(s.Model, new LnTuningConfig());
        var baseGammas = ln.Layers.ToDictionary(l => l.Key, l => l.Value.BaseLayer.Gamma.Data.ToArray());
        s.Train(3);
        var trained = s.Output();
        ln.Merge();
        PeftMethodChecks.Bitwise(trained, s.Output(), "merged");
        using (ln.Disable()) PeftMethodChecks.Bitwise(baseOut, s.Output(), "disabled while merged");
        PeftMethodChecks.Bitwise(trained, s.Output(), "merged again after the disable block");
        ln.Unmerge();
        foreach (var (path, gamma) in baseGammas) PeftMethodChecks.Bitwise(gamma, ln.Layers[path].BaseLayer.Gamma.Data.ToArray(), path);
        ln.MergeAndUnload();
        Assert.DoesNotContain(s.Model.NamedModules(), m => m.Module is LnTuningLayer);
        Assert.DoesNotContain(s.Model.NamedParameters(), p => p.Name.Contains("ln_tuning_layers") || p.Name.Contains("base_layer"));
        PeftMethodChecks.Bitwise(trained, s.Output(), "merged and unloaded");
    }

    [Fact]
    public void FileHasPeftsKeysAndRefusesWhatItCannotLoad()
    {
        using var s = TinySubject.Make("seq2seq");
        var ln = LnTuningModel.Inject(s.Model, new LnTuningConfig { TargetModules = ["ffn_norm"] });
        var dir = Directory.CreateTempSubdirectory("nanolora-ln-").FullName;
        try
        {
            ln.Save("default", dir);
            var keys = Safetensors.Read(Path.Combine(dir, "adapter_model.safetensors")).Entries.Select(e => e.Name).ToList();
            Assert.Equal(["base_model.model.decoder.layers.0.ffn_norm.ln_tuning_layers.bias", "base_model.model.decoder.layers.0.ffn_norm.ln_tuning_layers.weight",
                "base_model.model.encoder.layers.0.ffn_norm.ln_tuning_layers.bias", "base_model.model.encoder.layers.0.ffn_norm.ln_tuning_layers.weight"], keys);
            var config = File.ReadAllText(Path.Combine(dir, "adapter_config.json"));
            Assert.Contains("\"peft_type\": \"LN_TUNING\"", config);
            Assert.Contains("\"task_type\": \"SEQ_2_SEQ_LM\"", config);
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), config.Replace("\"modules_to_save\": null", "\"modules_to_save\": [\"lm_head\"]"));
            var e = Assert.Throws<InvalidDataException>(() => LnTuningModel.For(s.Model).Load(dir, "x"));
            Assert.Contains("modules_to_save", e.Message);
            File.WriteAllText(Path.Combine(dir, "adapter_config.json"), config.Replace("LN_TUNING", "IA3"));
            e = Assert.Throws<InvalidDataException>(() => LnTuningModel.For(s.Model).Load(dir, "x"));
            Assert.Contains("peft_type", e.Message);
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
