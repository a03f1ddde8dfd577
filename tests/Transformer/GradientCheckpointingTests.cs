using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>
/// GradientCheckpointing on the seq2seq model and BertModel, with dropout everywhere: the loss, every trainable
/// parameter's gradient and the dropout counters are those of the plain model (full fine-tuning and LoRA); the
/// activation peak falls; evaluation and decoding do not change.
/// </summary>
public class GradientCheckpointingTests
{
    static readonly TransformerConfig Dropping = TinyModels.Config with
    {
        EncoderLayers = 3, DecoderLayers = 3, Dropout = 0.1f, AttentionDropout = 0.1f, ActivationDropout = 0.2f,
    };

    static readonly BertConfig BertDropping = new()
    {
        VocabSize = 30, HiddenSize = 16, Layers = 3, Heads = 2, IntermediateSize = 32, MaxPositions = 16, HiddenDropout = 0.1f, AttentionDropout = 0.1f,
    };

    static readonly EncoderBatch BertBatch = EncoderBatch.Pad([[2, 5, 7, 9, 11, 4], [3, 4, 6], [8, 9, 10, 12]], multiple: 1);

    /// <summary>LoRA with dropout on every projection, B random (B = 0 would leave A's gradient zero).</summary>
    static void InjectLora(Module model, string[] targets)
    {
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, Dropout = 0.1f, TargetModules = targets });
        int seed = 40;
        foreach (var layer in lora.Layers.Values)
            foreach (var adapter in layer.Adapters.Values)
                adapter.B.Data.CopyFrom(Reference.Random((int)adapter.B.Data.Length, seed++).Select(v => 0.1f * v).ToArray());
    }

    /// <summary>Two training steps' losses and the second step's trainable gradients by name (AdamW between them, so the second step sees moved weights and advanced counters).</summary>
    static (float[] Losses, Dictionary<string, float[]> Grads) TwoSteps(Module model, Func<Variable> loss)
    {
        var trainable = model.TrainableParameters().ToList();
        using var optimizer = new AdamW(trainable, lr: 1e-2f);
        var losses = new float[2];
        for (int step = 0; step < 2; step++)
        {
            optimizer.ZeroGrad();
            using var scope = new GraphScope();
            var l = loss();
            losses[step] = l.Data.Item();
            l.Backward();
            if (step == 0) optimizer.Step();
        }
        var grads = model.NamedParameters().Where(p => p.Parameter.Trainable).ToDictionary(p => p.Name, p => p.Parameter.Grad!.ToArray());
        return (losses, grads);
    }

    static void AssertBitwise(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    static void AssertSame((float[] Losses, Dictionary<string, float[]> Grads) plain, (float[] Losses, Dictionary<string, float[]> Grads) ckpt)
    {
        AssertBitwise(plain.Losses, ckpt.Losses, "loss");
        Assert.Equal(plain.Grads.Keys.Order(), ckpt.Grads.Keys.Order());
        foreach (var (name, g) in plain.Grads) AssertBitwise(g, ckpt.Grads[name], name);
    }

    static readonly string[] AllLinears = ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"];

    Seq2SeqTransformer Seq2Seq(bool preNorm, bool lora, bool checkpointing, string[]? targets = null)
    {
        var model = new Seq2SeqTransformer(Dropping with { PreNorm = preNorm }, Device.Cpu);
        if (lora) InjectLora(model, targets ?? AllLinears);
        model.GradientCheckpointing = checkpointing;
        return model;
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(false, true)]
    public void Seq2SeqGradientsAreBitwiseThoseWithout(bool preNorm, bool lora)
    {
        var batch = TinyModels.CopyBatch(new Random(3), 4);
        using var plain = Seq2Seq(preNorm, lora, checkpointing: false);
        using var ckpt = Seq2Seq(preNorm, lora, checkpointing: true);
        var expected = TwoSteps(plain, () => plain.Loss(batch, 0.1f));
        var actual = TwoSteps(ckpt, () => ckpt.Loss(batch, 0.1f));
        AssertSame(expected, actual);
        Assert.Equal(plain.RandomState, ckpt.RandomState);
    }

    /// <summary>
    /// A pre-LN layer's recompute never reads its output. LoRA on attention only leaves the feed-forward block frozen:
    /// the checkpoint's forward keeps its ReLU mask as bits and the recompute multiplies nothing in it
    /// (feed_forward_unread). With fc1 adapted the block runs, but fc2's product is skipped (linear_unread). Post-LN's
    /// final LayerNorm reads the sum, so neither. Gradients stay bit for bit the plain model's; one skip per layer and step.
    /// </summary>
    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void RecomputeSkipsOnlyWhatNothingReads(bool preNorm, bool adaptFc1)
    {
        string[] targets = adaptFc1 ? ["q_proj", "v_proj", "fc1"] : ["q_proj", "k_proj", "v_proj", "o_proj"];
        var batch = TinyModels.CopyBatch(new Random(5), 4);
        using var plain = Seq2Seq(preNorm, lora: true, checkpointing: false, targets);
        using var ckpt = Seq2Seq(preNorm, lora: true, checkpointing: true, targets);
        var expected = TwoSteps(plain, () => plain.Loss(batch, 0.1f));
        bool wasProfiling = Profiler.Enabled;
        Profiler.Enabled = true;
        Profiler.Reset();
        try
        {
            var actual = TwoSteps(ckpt, () => ckpt.Loss(batch, 0.1f));
            AssertSame(expected, actual);
            Assert.Equal(plain.RandomState, ckpt.RandomState);
            int layerRecomputes = preNorm ? 2 * (Dropping.EncoderLayers + Dropping.DecoderLayers) : 0;
            var totals = Profiler.Totals();
            Assert.Equal(adaptFc1 ? layerRecomputes : 0, totals.GetValueOrDefault("linear_unread").N);
            Assert.Equal(adaptFc1 ? 0 : layerRecomputes, totals.GetValueOrDefault("feed_forward_unread").N);
        }
        finally { Profiler.Enabled = wasProfiling; }
    }

    /// <summary>
    /// One checkpoint around two pre-LN layers with frozen feed-forward blocks, the recompute flag passed to the last one
    /// (whose output is the function's): both layers' forwards keep their ReLU bits, and the recompute hands the last layer
    /// its own (by owner, not by position), so the gradients are the plain ones bit for bit.
    /// </summary>
    [Fact]
    public void TwoLayersInOneCheckpointEachGetTheirOwnKeptBits()
    {
        var batch = TinyModels.CopyBatch(new Random(7), 4);
        // LoRA without its own dropout: LoraLinear's dropout stream is not part of the model's RandomState reset below.
        using var model = new Seq2SeqTransformer(Dropping with { PreNorm = true }, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["q_proj", "v_proj"] });
        int seed = 40;
        foreach (var adapter in lora.Layers.Values.SelectMany(l => l.Adapters.Values))
            adapter.B.Data.CopyFrom(Reference.Random((int)adapter.B.Data.Length, seed++).Select(v => 0.1f * v).ToArray());
        var layers = model.NamedModules().Where(m => m.Name is "encoder.layers.0" or "encoder.layers.1").Select(m => (EncoderLayer)m.Module).ToArray();
        var trainable = model.TrainableParameters().ToList();
        var weights = Reference.Random(batch.BatchSize * batch.SourceLength * Dropping.DModel, 8);
        var seeds = model.RandomState;
        Dictionary<Parameter, float[]> Gradients(bool checkpoint)
        {
            foreach (var p in trainable) p.Grad?.Dispose();
            foreach (var p in trainable) p.Grad = null;
            model.RandomState = seeds;
            using var scope = new GraphScope();
            var (memory, mask) = model.Encode(batch.SourceIds, batch.BatchSize, batch.SourceLength);
            var x = memory;
            var y = checkpoint
                ? ActivationCheckpoint.Run((v, t, recompute) => layers[1].Forward(layers[0].Forward(v[0], t[0]), t[0], recompute), [x], [mask])
                : layers[1].Forward(layers[0].Forward(x, mask), mask);
            F.Sum(F.Mul(y, Variable.Constant(Tensor.FromArray(weights, y.Data.Shape, Device.Cpu)))).Backward();
            mask.Dispose();
            return trainable.Where(p => p.Grad != null).ToDictionary(p => p, p => p.Grad!.ToArray());
        }
        var plain = Gradients(false);
        var ckpt = Gradients(true);
        Assert.True(plain.Count >= 4, "the two layers' adapters got no gradient: vacuous comparison");
        Assert.Equal(plain.Count, ckpt.Count);
        foreach (var (p, g) in plain) AssertBitwise(g, ckpt[p], p.Name);
    }

    /// <summary>
    /// LoRA on q and v with a frozen feed-forward block: without activation dropout (ReLU's own mask: select, not multiply),
    /// and with GELU (whose recompute runs fc1 and keeps its output, skipping fc2), pre- and post-LN: gradients and dropout
    /// counters bit for bit the plain model's.
    /// </summary>
    [Theory]
    [InlineData("relu", 0f, true)]
    [InlineData("gelu", 0.2f, true)]
    [InlineData("gelu", 0f, true)]
    [InlineData("gelu", 0.2f, false)]
    public void FrozenFeedForwardKeepsTheGradients(string activation, float activationDropout, bool preNorm)
    {
        string[] attention = ["q_proj", "v_proj"];
        var config = Dropping with { Activation = activation, ActivationDropout = activationDropout, PreNorm = preNorm };
        var batch = TinyModels.CopyBatch(new Random(6), 4);
        Seq2SeqTransformer Make(bool checkpointing)
        {
            var model = new Seq2SeqTransformer(config, Device.Cpu);
            InjectLora(model, attention);
            model.GradientCheckpointing = checkpointing;
            return model;
        }
        using var plain = Make(false);
        using var ckpt = Make(true);
        AssertSame(TwoSteps(plain, () => plain.Loss(batch, 0.1f)), TwoSteps(ckpt, () => ckpt.Loss(batch, 0.1f)));
        Assert.Equal(plain.RandomState, ckpt.RandomState);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void BertGradientsAreBitwiseThoseWithout(bool lora)
    {
        BertModel Make(bool checkpointing)
        {
            var bert = new BertModel(BertDropping, Device.Cpu, pooler: false);
            if (lora) InjectLora(bert, ["query", "key", "value", "dense"]);
            bert.GradientCheckpointing = checkpointing;
            return bert;
        }
        using var plain = Make(false);
        using var ckpt = Make(true);
        AssertSame(TwoSteps(plain, () => TinyModels.WeightedSum(plain.Forward(BertBatch))),
            TwoSteps(ckpt, () => TinyModels.WeightedSum(ckpt.Forward(BertBatch))));
    }

    /// <summary>The most activation bytes live during one loss + backward, above what was live before.</summary>
    static long ActivationPeak(Func<Variable> loss)
    {
        var ledger = Device.Cpu.Ledger;
        long before = ledger.Live(MemoryCategory.Activation);
        ledger.ResetPeaks();
        using (new GraphScope()) loss().Backward();
        return ledger.Peak(MemoryCategory.Activation) - before;
    }

    [Fact]
    public void ActivationPeakFallsAtLeastTwofoldAtFourLayers()
    {
        var config = Dropping with { DModel = 32, DFF = 128, EncoderLayers = 4, DecoderLayers = 4 };
        var batch = TinyModels.CopyBatch(new Random(5), 8);
        using var model = new Seq2SeqTransformer(config, Device.Cpu);
        long plain = ActivationPeak(() => model.Loss(batch, 0.1f));
        model.GradientCheckpointing = true;
        long ckpt = ActivationPeak(() => model.Loss(batch, 0.1f));
        model.ZeroGrad();
        Assert.True(plain >= 2 * ckpt, $"activation peak {plain} B without checkpointing, {ckpt} B with: expected at least 2× lower");

        using var bert = new BertModel(BertDropping with { HiddenSize = 32, IntermediateSize = 128, Layers = 4 }, Device.Cpu, pooler: false);
        long bertPlain = ActivationPeak(() => TinyModels.WeightedSum(bert.Forward(BertBatch)));
        bert.GradientCheckpointing = true;
        long bertCkpt = ActivationPeak(() => TinyModels.WeightedSum(bert.Forward(BertBatch)));
        Assert.True(bertPlain >= 2 * bertCkpt, $"BERT activation peak {bertPlain} B without checkpointing, {bertCkpt} B with: expected at least 2× lower");
    }

    /// <summary>
    /// LoRA on the attention projections (the feed-forward blocks frozen), the case the ckpt-step bench measures, on a
    /// step shaped like it (sources six times the targets, a small vocabulary): checkpointing lowers the activation peak at
    /// least threefold. It does only if a checkpoint's gradient-free forward frees attention's values as it goes, the
    /// embeddings' intermediate copies are freed, and the frozen block's backward takes its hidden gradient in row blocks.
    /// </summary>
    [Fact]
    public void LoraOnAttentionCheckpointedPeakIsAtLeastThreefoldLower()
    {
        var config = Dropping with { DModel = 64, Heads = 2, DFF = 256 };
        var rng = new Random(7);
        var batch = TinyModels.MakeBatch(TinyModels.RandomSequences(rng, 32, minLength: 44, maxLength: 48),
            TinyModels.RandomSequences(rng, 32, minLength: 6, maxLength: 8));
        using var model = new Seq2SeqTransformer(config with { PreNorm = true }, Device.Cpu);
        InjectLora(model, ["q_proj", "k_proj", "v_proj", "o_proj"]);
        long plain = ActivationPeak(() => model.Loss(batch, 0.1f));
        model.GradientCheckpointing = true;
        long ckpt = ActivationPeak(() => model.Loss(batch, 0.1f));
        model.ZeroGrad();
        Assert.True(plain >= 3 * ckpt, $"activation peak {plain} B without checkpointing, {ckpt} B with ({(double)plain / ckpt:F2}×): expected at least 3× lower");
    }

    [Fact]
    public void EvaluationAndDecodingAreUnchanged()
    {
        var batch = TinyModels.CopyBatch(new Random(6), 3);
        using var model = new Seq2SeqTransformer(Dropping, Device.Cpu);
        model.Eval();
        var logits = TinyModels.Logits(model, batch);
        var decoded = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, new DecodeOptions(MaxLength: 6));
        var state = model.RandomState;
        model.GradientCheckpointing = true;
        AssertBitwise(logits, TinyModels.Logits(model, batch), "logits");
        var again = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, new DecodeOptions(MaxLength: 6));
        for (int i = 0; i < decoded.Count; i++) Assert.Equal(decoded[i], again[i]);
        Assert.Equal(state, model.RandomState);
    }
}
