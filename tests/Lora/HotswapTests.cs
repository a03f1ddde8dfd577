using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>PEFT's hotswap_adapter: another saved adapter's weights written into an existing slot in place.</summary>
public class HotswapTests
{
    static readonly TransformerConfig Config = TinyModels.Config;
    static Batch Data() => TinyModels.CopyBatch(new Random(4), 5);

    /// <summary>Saves an adapter of <paramref name="config"/> with random A and B (seeded) on the tiny model; returns its directory.</summary>
    static string Saved(LoraConfig config, int seed)
    {
        using var m = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(m, config, "x");
        foreach (var (_, a) in lora.AdapterWeights("x"))
        {
            a.A.Data.CopyFrom(Reference.Random((int)a.A.Count, seed++, -0.4f, 0.4f));
            a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -0.3f, 0.3f));
        }
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "x", dir);
        return dir;
    }

    static float[] LogitsOfFreshLoad(string dir, Batch batch)
    {
        using var m = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(m);
        AdapterFiles.Load(lora, dir, "default");
        lora.SetActiveAdapter("default");
        return TinyModels.Logits(m, batch);
    }

    static (LoraModel Lora, Seq2SeqTransformer Model) Loaded(string dir)
    {
        var m = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(m);
        AdapterFiles.Load(lora, dir, "default");
        lora.SetActiveAdapter("default");
        return (lora, m);
    }

    [Fact]
    public void SwapWritesIntoTheSameTensorsAndMatchesAFreshLoad()
    {
        var first = Saved(new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] }, 10);
        // Another alpha and rsLoRA: the scaling must follow the new adapter (alpha 12 / √4 = 6 instead of 8 / 4 = 2).
        var second = Saved(new LoraConfig { R = 4, Alpha = 12, UseRsLora = true, TargetModules = ["q_proj", "v_proj"] }, 100);
        var batch = Data();
        var (lora, model) = Loaded(first);
        using var _ = model;
        var before = TinyModels.Logits(model, batch);
        var slots = lora.AdapterWeights("default").Select(x => (x.Path, x.Adapter, x.Adapter.A, x.Adapter.B, AData: x.Adapter.A.Data, BData: x.Adapter.B.Data,
            AStore: x.Adapter.A.Data.Storage, BStore: x.Adapter.B.Data.Storage)).ToList();

        lora.HotswapAdapter(second, "default");

        foreach (var s in slots)
        {
            var now = lora.Layers[s.Path].Adapters["default"];
            Assert.Same(s.Adapter, now);
            Assert.Same(s.A, now.A);
            Assert.Same(s.B, now.B);
            Assert.Same(s.AData, now.A.Data);
            Assert.Same(s.BData, now.B.Data);
            Assert.Same(s.AStore, now.A.Data.Storage);
            Assert.Same(s.BStore, now.B.Data.Storage);
            Assert.Equal(6f, now.Scaling);
        }
        var after = TinyModels.Logits(model, batch);
        Reference.Close(LogitsOfFreshLoad(second, batch), after, 1e-6, 1e-6, "hotswapped vs freshly loaded");
        Assert.NotEqual(before, after);
        Assert.Equal(12f, lora.Adapters["default"].Alpha);
        Assert.True(lora.Adapters["default"].UseRsLora);
    }

    [Fact]
    public void IncompatibleAdaptersAreRefusedNamingTheModuleAndNothingChanges()
    {
        var first = Saved(new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"] }, 10);
        var batch = Data();
        var (lora, model) = Loaded(first);
        using var _ = model;
        var before = TinyModels.Logits(model, batch);

        var otherRank = Saved(new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] }, 20);
        var e = Assert.Throws<InvalidDataException>(() => lora.HotswapAdapter(otherRank, "default"));
        Assert.Contains("rank 2", e.Message);
        Assert.Contains("rank 4", e.Message);
        Assert.Contains("q_proj", e.Message);

        var fewer = Saved(new LoraConfig { R = 4, TargetModules = ["q_proj"] }, 30);
        e = Assert.Throws<InvalidDataException>(() => lora.HotswapAdapter(fewer, "default"));
        Assert.Contains("v_proj", e.Message);
        Assert.Contains("same target modules", e.Message);

        var more = Saved(new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj", "fc1"] }, 40);
        e = Assert.Throws<InvalidDataException>(() => lora.HotswapAdapter(more, "default"));
        Assert.Contains("fc1", e.Message);

        // DoRA: a magnitude vector in the file.
        var dora = Saved(new LoraConfig { R = 4, TargetModules = ["q_proj", "v_proj"] }, 50);
        var weights = Path.Combine(dora, AdapterFiles.WeightsFile);
        var file = Safetensors.Read(weights);
        var tensors = file.Entries.Select(x => (x.Name, x.Shape.ToArray(), file.ReadFloats(x.Name))).ToList();
        tensors.Add(("base_model.model.encoder.layers.0.self_attn.q_proj.lora_magnitude_vector", [16], new float[16]));
        Safetensors.Write(weights, tensors, new Dictionary<string, string>(file.Metadata));
        Assert.Contains("DoRA", Assert.Throws<NotSupportedException>(() => lora.HotswapAdapter(dora, "default")).Message);

        Assert.Contains("no adapter 'other'", Assert.Throws<KeyNotFoundException>(() => lora.HotswapAdapter(first, "other")).Message);
        lora.Merge();
        Assert.Contains("merged", Assert.Throws<InvalidOperationException>(() => lora.HotswapAdapter(first, "default")).Message);
        lora.Unmerge();
        Reference.Close(before, TinyModels.Logits(model, batch), 1e-5, 1e-5, "after the refusals");
    }
}
