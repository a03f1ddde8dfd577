using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Lora;

/// <summary>A different adapter per sequence of one batch (PEFT's adapter_names): each row equals its adapter run alone.</summary>
public class MixedBatchTests
{
    static readonly string?[] Names = ["a", "b", MixedBatch.Base, "a", null, "b"];

    /// <summary>A tiny model with adapter a (r=4 on q, v) and b (r=2 on every linear layer), both with non-zero B.</summary>
    static (Seq2SeqTransformer Model, LoraModel Lora) TwoAdapters(Device device)
    {
        var model = new Seq2SeqTransformer(TinyModels.Config, device);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] }, "a", seed: 3);
        lora.AddAdapter("b", new LoraConfig { R = 2, Alpha = 2, TargetModules = [LoraConfig.AllLinear] }, seed: 4);
        int seed = 90;
        foreach (var name in new[] { "a", "b" })
            foreach (var (_, adapter) in lora.AdapterWeights(name))
                adapter.B.Data.CopyFrom(Random((int)adapter.B.Count, seed++, -0.4f, 0.4f));
        return (model, lora);
    }

    /// <summary>Logits [B, T, V] with one adapter for the whole batch (null: adapters disabled).</summary>
    static float[] Alone(Seq2SeqTransformer model, LoraModel lora, string? name, Batch batch)
    {
        if (name is null or MixedBatch.Base) using (lora.DisableAdapters()) return TinyModels.Logits(model, batch);
        lora.SetActiveAdapter(name);
        return TinyModels.Logits(model, batch);
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void EachSequenceGetsWhatItsAdapterGivesAlone(string device)
    {
        var (model, lora) = TwoAdapters(Dev(device));
        using var _ = model;
        var batch = TinyModels.CopyBatch(new System.Random(5), Names.Length);
        float[] mixed;
        using (lora.MixedBatch(Names)) mixed = TinyModels.Logits(model, batch);
        int perRow = mixed.Length / Names.Length;
        foreach (var name in Names.Distinct())
        {
            var alone = Alone(model, lora, name, batch);
            for (int r = 0; r < Names.Length; r++)
                if (Names[r] == name)
                    for (int i = r * perRow; i < (r + 1) * perRow; i++)
                        Assert.True(Math.Abs(alone[i] - mixed[i]) <= 1e-5, $"{device}: row {r} ({name ?? "null"}), index {i}: {mixed[i]} vs {alone[i]} alone");
        }
        // The adapters differ from each other and from the base on these rows, so the check above can fail.
        Assert.NotEqual(Alone(model, lora, "a", batch)[..perRow], Alone(model, lora, "b", batch)[..perRow]);
    }

    [Fact]
    public void GreedyAndBeamDecodingPerSequenceMatchSingleAdapterDecoding()
    {
        var (model, lora) = TwoAdapters(Device.Cpu);
        using var _ = model;
        var batch = TinyModels.CopyBatch(new System.Random(8), Names.Length);
        foreach (int beam in new[] { 1, 3 })
        {
            var options = new DecodeOptions(MaxLength: 6, BeamSize: beam);
            List<int[]> mixed;
            using (lora.MixedBatch(Names)) mixed = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, options);
            foreach (var name in Names.Distinct())
            {
                List<int[]> alone;
                if (name is null or MixedBatch.Base) using (lora.DisableAdapters()) alone = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, options);
                else { lora.SetActiveAdapter(name); alone = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, options); }
                for (int r = 0; r < Names.Length; r++)
                    if (Names[r] == name) Assert.Equal(alone[r], mixed[r]);
            }
        }
    }

    [Fact]
    public void UnknownNamesMergedAdaptersAndTrainingAreRefused()
    {
        var (model, lora) = TwoAdapters(Device.Cpu);
        using var _ = model;
        Assert.Contains("no adapter 'c'", Assert.Throws<KeyNotFoundException>(() => lora.MixedBatch(["a", "c"])).Message);
        lora.SetActiveAdapter("a");
        lora.Merge();
        Assert.Contains("merged", Assert.Throws<InvalidOperationException>(() => lora.MixedBatch(["a", "b"])).Message);
        lora.Unmerge();
        var batch = TinyModels.CopyBatch(new System.Random(1), 2);
        using (lora.MixedBatch(["a", "b"]))
        using (new GraphScope())
            Assert.Contains("inference", Assert.Throws<InvalidOperationException>(() => model.Loss(batch, 0f)).Message);
        lora.AddAdapter("biased", new LoraConfig { TargetModules = ["q_proj"], Bias = LoraBias.LoraOnly });
        Assert.Contains("cannot differ per sequence", Assert.Throws<ArgumentException>(() => lora.MixedBatch(["biased", "a"])).Message);
    }
}
