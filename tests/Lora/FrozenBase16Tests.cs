using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>A frozen base stored in bfloat16 (FrozenWeights.ToBFloat16) under LoRA.</summary>
public class FrozenBase16Tests
{
    // Wide enough (C 64, B·T 48 rows) that the linears take the packed GEMM, whose packing widens the weight.
    static readonly TransformerConfig Config = TinyModels.Config with { DModel = 64, DFF = 128, Heads = 2 };
    static readonly LoraConfig Lora = new() { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj", "fc1"] };

    static (Seq2SeqTransformer Model, LoraModel Lora) Adapted(TransformerConfig config)
    {
        var model = new Seq2SeqTransformer(config, Device.Cpu);
        var lora = LoraModel.Inject(model, Lora);
        foreach (var (_, w) in lora.AdapterWeights("default")) w.B.Data.CopyFrom(Reference.Random((int)w.B.Count, 77, -0.2f, 0.2f));
        return (model, lora);
    }


    // Widening is exact and the GEMM's arithmetic is unchanged, so a 16-bit base trains exactly as a float32 base whose
    // weights were rounded to bfloat16 beforehand: same losses and adapters, bit for bit, with the weights' bytes halved.
    [Fact]
    public void TrainsBitForBitAsTheRoundedFloat32Base()
    {
        var (rounded, roundedLora) = Adapted(Config);
        var (half, halfLora) = Adapted(Config);
        using var _ = rounded; using var __ = half;
        foreach (var w in FrozenWeights.Convertible(rounded))
            w.Data.CopyFrom(w.Data.ToArray().Select(v => BFloat16.Widen(BFloat16.Round(v))).ToArray());
        // Every frozen linear weight and embedding table (the tied output projection among them), nothing else.
        var converted = FrozenWeights.Convertible(half).ToList();
        Assert.Equal(half.NamedModules().Count(m => m.Module is Linear l && !l.Weight.Trainable || m.Module is Embedding), converted.Count);
        long elements = converted.Sum(w => w.Count);
        long saved = FrozenWeights.ToBFloat16(half);
        Assert.Equal(2 * elements, saved);
        Assert.Equal(elements, FrozenWeights.CountBFloat16(half));
        Assert.All(converted, w => Assert.Equal(DType.BFloat16, w.Data.DType));
        Assert.All(half.Parameters().Where(p => p.Name is "bias" or "weight" && !converted.Contains(p)), p => Assert.Equal(DType.Float32, p.Data.DType));
        Assert.All(halfLora.AdapterWeights("default"), w => Assert.Equal(DType.Float32, w.Adapter.B.Data.DType));
        using var o1 = new AdamW(rounded.TrainableParameters(), 1e-2f);
        using var o2 = new AdamW(half.TrainableParameters(), 1e-2f);
        var rng1 = new Random(4); var rng2 = new Random(4);
        for (int step = 0; step < 3; step++)
        {
            float l1 = TinyModels.Step(rounded, o1, TinyModels.CopyBatch(rng1, 6));
            float l2 = TinyModels.Step(half, o2, TinyModels.CopyBatch(rng2, 6));
            Assert.Equal(BitConverter.SingleToInt32Bits(l1), BitConverter.SingleToInt32Bits(l2));
        }
        foreach (var ((path, a), (_, b)) in roundedLora.AdapterWeights("default").Zip(halfLora.AdapterWeights("default")))
        {
            Assert.Equal(a.A.Data.ToArray(), b.A.Data.ToArray());
            Assert.Equal(a.B.Data.ToArray(), b.B.Data.ToArray());
        }
        var batch = TinyModels.CopyBatch(new Random(9), 4);
        Assert.Equal(TinyModels.Logits(rounded, batch), TinyModels.Logits(half, batch));
    }

    [Fact]
    public void MergeIsRefusedAndAdaptersFindTheirBase()
    {
        var (half, halfLora) = Adapted(Config);
        using var _ = half;
        FrozenWeights.ToBFloat16(half);
        var e = Assert.Throws<InvalidOperationException>(() => halfLora.Merge());
        Assert.Contains("float32", e.Message);
        Assert.All(halfLora.Layers.Values, l => Assert.Null(l.MergedAdapter));

        // Saved from the 16-bit base, the adapter is recognised on the float32 form of the same base...
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(halfLora, "default", dir);
        using var full = new Seq2SeqTransformer(Config, Device.Cpu);
        var warnings = new List<string>();
        AdapterFiles.Load(LoraModel.For(full), dir, "loaded", warn: warnings.Add);   // as eval loads it: nothing frozen yet
        Assert.Empty(warnings);
        // ...and refused on another base.
        using var other = new Seq2SeqTransformer(Config with { Seed = Config.Seed + 1 }, Device.Cpu);
        var otherLora = LoraModel.Inject(other, Lora, "first");
        Assert.Throws<InvalidDataException>(() => AdapterFiles.Load(otherLora, dir, "loaded"));

        // Saved from a float32 base, it loads onto a 16-bit one with a warning: only names and shapes can be compared.
        var (plain, plainLora) = Adapted(Config);
        using var ___ = plain;
        var dir32 = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(plainLora, "default", dir32);
        AdapterFiles.Load(halfLora, dir32, "from32", warn: warnings.Add);
        Assert.Contains(warnings, w => w.Contains("bfloat16") && w.Contains("names and shapes"));
    }

    [Fact]
    public void FullFineTuningHasNothingToStore()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var e = Assert.Throws<InvalidOperationException>(() => FrozenWeights.ToBFloat16(model));
        Assert.Contains("full fine-tuning", e.Message);
    }
}
