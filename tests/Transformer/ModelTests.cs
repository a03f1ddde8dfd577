using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>Tiny models, hand-built batches of the copy task, a training step and a parameter gradient check, shared by the model, decoding and LoRA tests.</summary>
internal static class TinyModels
{
    public static readonly TransformerConfig Config = new() { VocabSize = 20, DModel = 16, Heads = 2, DFF = 32, EncoderLayers = 1, DecoderLayers = 1, Dropout = 0 };

    /// <summary>Random sequences of symbols 4..4+symbols−1 (ids 0..3 are Pad, Bos, Eos, Unk).</summary>
    public static int[][] RandomSequences(Random rng, int count, int symbols = 10, int minLength = 4, int maxLength = 8) =>
        Enumerable.Range(0, count).Select(_ => Enumerable.Range(0, rng.Next(minLength, maxLength + 1)).Select(_ => 4 + rng.Next(symbols)).ToArray()).ToArray();

    /// <summary>SourceIds [B, S] = x + Eos padded with Pad; TargetInput [Bos, y...]; TargetOutput [y..., Eos], padded.</summary>
    public static Batch MakeBatch(int[][] sources, int[][] targets)
    {
        int b = sources.Length, s = sources.Max(x => x.Length) + 1, t = targets.Max(y => y.Length) + 1;
        var src = new int[b * s];
        var tin = new int[b * t];
        var tout = new int[b * t];
        for (int i = 0; i < b; i++)
        {
            sources[i].CopyTo(src, i * s);
            src[i * s + sources[i].Length] = SubwordTokenizer.Eos;
            tin[i * t] = SubwordTokenizer.Bos;
            targets[i].CopyTo(tin, i * t + 1);
            targets[i].CopyTo(tout, i * t);
            tout[i * t + targets[i].Length] = SubwordTokenizer.Eos;
        }
        return new Batch(src, tin, tout, b, s, t, sources.Select(x => x.Length + 1).ToArray());
    }

    public static Batch CopyBatch(Random rng, int count, int symbols = 10)
    {
        var seqs = RandomSequences(rng, count, symbols);
        return MakeBatch(seqs, seqs);
    }

    /// <summary>One step: loss, backward, AdamW, zero grads, all inside a graph scope. Returns the loss.</summary>
    public static float Step(Seq2SeqTransformer model, Optimizer optimizer, Batch batch)
    {
        using var scope = new GraphScope();
        var loss = model.Loss(batch, 0f);
        float value = loss.Data.Item();
        loss.Backward();
        optimizer.Step();
        optimizer.ZeroGrad();
        return value;
    }

    /// <summary>Teacher-forced logits [B, T, V] as a flat array (no graph kept).</summary>
    public static float[] Logits(Seq2SeqTransformer model, Batch batch)
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var (memory, mask) = model.Encode(batch.SourceIds, batch.BatchSize, batch.SourceLength);
        using (mask)
            return model.Logits(model.Decode(batch.TargetInput, batch.BatchSize, batch.TargetLength, memory, mask)).Data.ToArray();
    }

    /// <summary>
    /// Compares p.Grad after one Backward of <paramref name="loss"/> with central differences made by perturbing p.Data
    /// at a few indices (float32 forward, so loose tolerances).
    /// </summary>
    public static void CheckParameterGradient(Parameter p, Func<Variable> loss, int[] indices, double eps = 1e-2, double atol = 3e-3, double rtol = 3e-2)
    {
        p.ZeroGrad();
        float[] analytic;
        using (var scope = new GraphScope())
        {
            loss().Backward();
            analytic = p.Grad!.ToArray();
        }
        var original = p.Data.ToArray();
        double Eval(int index, float delta)
        {
            var changed = (float[])original.Clone();
            changed[index] += delta;
            p.Data.CopyFrom(changed);
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            return loss().Data.Item();
        }
        try
        {
            var numeric = indices.Select(i => (Eval(i, (float)eps) - Eval(i, -(float)eps)) / (2 * eps)).ToArray();
            Reference.Close(numeric, indices.Select(i => analytic[i]).ToArray(), atol, rtol, $"gradient of {p.Name}");
        }
        finally { p.Data.CopyFrom(original); p.ZeroGrad(); }
    }

    /// <summary>Σ w ⊙ y with fixed random weights w: a scalar in which every element of y matters.</summary>
    public static Variable WeightedSum(Variable y, int seed = 100) =>
        F.Sum(F.Mul(y, Variable.Constant(Tensor.FromArray(Reference.Random((int)y.Data.Length, seed), y.Data.Shape, y.Device))));
}

public class ModelTests
{
    [Fact]
    public void ParametersHaveHuggingFaceNamesShapesAndCount()
    {
        var c = TinyModels.Config;
        using var model = new Seq2SeqTransformer(c, Device.Cpu);
        var p = model.NamedParameters().ToDictionary(x => x.Name, x => x.Parameter.Data.ShapeArray());
        Assert.Equal([c.VocabSize, c.DModel], p["shared.weight"]);
        Assert.Equal([c.DModel, c.DModel], p["encoder.layers.0.self_attn.q_proj.weight"]);
        Assert.Equal([c.DModel], p["decoder.layers.0.cross_attn.v_proj.bias"]);
        Assert.Equal([c.DFF, c.DModel], p["decoder.layers.0.ffn.fc1.weight"]);   // Linear weights are [out, in]
        Assert.Equal([c.DModel, c.DFF], p["decoder.layers.0.ffn.fc2.weight"]);
        Assert.Equal([c.DModel], p["encoder.final_norm.weight"]);
        Assert.False(p.ContainsKey("lm_head.weight"));   // tied

        long d = c.DModel, f = c.DFF;
        long attention = 4 * (d * d + d), norm = 2 * d, ffn = d * f + f + f * d + d;
        long encoderLayer = attention + ffn + 2 * norm, decoderLayer = 2 * attention + ffn + 3 * norm;
        long expected = c.VocabSize * d + c.EncoderLayers * encoderLayer + c.DecoderLayers * decoderLayer + 2 * norm;
        Assert.Equal(expected, model.ParameterCount());

        using var untied = new Seq2SeqTransformer(c with { TieEmbeddings = false, LearnedPositions = true }, Device.Cpu);
        Assert.Equal(expected + c.VocabSize * d + 2 * c.MaxPositions * d, untied.ParameterCount());
        Assert.Equal([c.VocabSize, c.DModel], untied.NamedParameters().Single(x => x.Name == "lm_head.weight").Parameter.Data.ShapeArray());
    }

    static EncoderLayer Encoder(TransformerConfig c) => new(c, new SeedSequence(3), Device.Cpu);
    static DecoderLayer Decoder(TransformerConfig c) => new(c, new SeedSequence(4), Device.Cpu);
    static readonly TransformerConfig Small = TinyModels.Config with { DModel = 8, Heads = 2, DFF = 12, Activation = "gelu" };

    // GELU: with ReLU, central differences straddle its kink at some inputs and miss by a few percent.
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void EncoderLayerGradientMatchesFiniteDifferences(bool preNorm)
    {
        using var layer = Encoder(Small with { PreNorm = preNorm });
        // x [B=2, L=3, C=8]; a key mask that drops the last key of the second row.
        var maskData = new float[] { 0, 0, 0, 0, 0, -1e9f };
        GradCheck.Check("cpu", v =>
        {
            var mask = Tensor.FromArray(maskData, [2, 3], Device.Cpu);
            Variable.Constant(mask);   // owned by the scope
            return layer.Forward(v[0], mask);
        }, [[2, 3, 8]]);
    }

    [Fact]
    public void DecoderLayerGradientMatchesFiniteDifferences()
    {
        using var layer = Decoder(Small);
        // x [2, 3, 8] (causal self-attention), memory [2, 4, 8].
        GradCheck.Check("cpu", v => layer.Forward(v[0], v[1], null), [[2, 3, 8], [2, 4, 8]]);
    }

    [Fact]
    public void AttentionWeightGradientMatchesFiniteDifferences()
    {
        using var enc = Encoder(Small);
        using var dec = Decoder(Small);
        var x = Reference.Random(2 * 3 * 8, 7);
        var memory = Reference.Random(2 * 4 * 8, 8);
        Variable EncoderLoss() => TinyModels.WeightedSum(enc.Forward(Variable.Constant(Tensor.FromArray(x, [2, 3, 8], Device.Cpu)), null));
        Variable DecoderLoss() => TinyModels.WeightedSum(dec.Forward(Variable.Constant(Tensor.FromArray(x, [2, 3, 8], Device.Cpu)),
            Variable.Constant(Tensor.FromArray(memory, [2, 4, 8], Device.Cpu)), null));
        int[] indices = [0, 5, 17, 33, 63];
        var q = enc.NamedParameters().Single(p => p.Name == "self_attn.q_proj.weight").Parameter;
        TinyModels.CheckParameterGradient(q, EncoderLoss, indices);
        var fc1 = enc.NamedParameters().Single(p => p.Name == "ffn.fc1.bias").Parameter;
        TinyModels.CheckParameterGradient(fc1, EncoderLoss, [0, 3, 11]);
        var crossK = dec.NamedParameters().Single(p => p.Name == "cross_attn.k_proj.weight").Parameter;
        TinyModels.CheckParameterGradient(crossK, DecoderLoss, indices);
        var selfV = dec.NamedParameters().Single(p => p.Name == "self_attn.v_proj.weight").Parameter;
        TinyModels.CheckParameterGradient(selfV, DecoderLoss, indices);
    }

    // Post-LN, the norm's output before the feed-forward feeds only that sublayer and the residual add after it: with the
    // feed-forward frozen no rule reads it, and the layer frees it once the block has run (each layer kept one [B, L, C]
    // tensor to the end of backward before). The same model with fc1's weight trainable must keep it (its gradient reads
    // it): the live activations after the forward differ by exactly the encoder's [B, S, C] and the decoder's [B, T, C].
    [Fact]
    public void APostNormLayersValueBeforeAFrozenFeedForwardIsFreedAfterIt()
    {
        var batch = TinyModels.CopyBatch(new Random(5), 3);
        long LiveAfterForward(bool fc1Trains)
        {
            using var model = new Seq2SeqTransformer(TinyModels.Config with { PreNorm = false }, Device.Cpu);
            model.Train(true);
            foreach (var (name, p) in model.NamedParameters())
                p.Trainable = name.Contains("attn.") || (fc1Trains && name.EndsWith("ffn.fc1.weight"));
            using var scope = new GraphScope();
            long before = Device.Cpu.Ledger.Live(MemoryCategory.Activation);
            using var loss = model.Loss(batch, 0f);
            return Device.Cpu.Ledger.Live(MemoryCategory.Activation) - before;
        }
        long kept = LiveAfterForward(true) - LiveAfterForward(false);
        int c = TinyModels.Config.DModel;
        long middle = (long)batch.BatchSize * (batch.SourceLength + batch.TargetLength) * c * sizeof(float);
        Assert.Equal(middle, kept);
    }

    [Fact]
    public void WithDropoutSetsTheRatesThatAreOnAndTrainingWithoutDropoutComputesWhatEvaluationDoes()
    {
        var bertLike = TinyModels.Config with { PreNorm = false, Activation = "gelu", Dropout = 0.1f, AttentionDropout = 0.1f, ActivationDropout = 0f, Seed = 4 };
        var changed = bertLike.WithDropout(0.3f);
        Assert.Equal((0.3f, 0.3f, 0f), (changed.Dropout, changed.AttentionDropout, changed.ActivationDropout));
        Assert.Equal(bertLike with { Dropout = 0.3f, AttentionDropout = 0.3f }, changed);
        Assert.Null((TinyModels.Config with { Dropout = 0.1f }).WithDropout(0.2f).ActivationDropout);   // follows Dropout, as before
        Assert.Equal(0f, TinyModels.Config.WithDropout(0.5f).Dropout);                                // off stays off

        var batch = TinyModels.CopyBatch(new Random(2), 4);
        float[] Logits(TransformerConfig c, bool training)
        {
            using var model = new Seq2SeqTransformer(c, Device.Cpu);   // same seed: same weights
            model.Train(training);
            return TinyModels.Logits(model, batch);
        }
        var evaluation = Logits(bertLike, training: false);
        Assert.Equal(evaluation, Logits(bertLike.WithDropout(0f), training: true));
        Assert.NotEqual(evaluation, Logits(bertLike, training: true));
    }

    [Theory]
    [InlineData(false, false, "relu", true)]
    [InlineData(true, false, "relu", true)]
    [InlineData(false, true, "relu", true)]
    [InlineData(false, false, "gelu", true)]
    [InlineData(true, true, "gelu", false)]
    public void ModelOptionsTrainWithFiniteLoss(bool postNorm, bool learnedPositions, string activation, bool tie)
    {
        var config = TinyModels.Config with { PreNorm = !postNorm, LearnedPositions = learnedPositions, Activation = activation, TieEmbeddings = tie, Dropout = 0.1f };
        using var model = new Seq2SeqTransformer(config, Device.Cpu);
        Assert.Equal(!postNorm, model.NamedParameters().Any(p => p.Name == "encoder.final_norm.weight"));
        using var opt = new AdamW(model.Parameters(), 3e-3f);
        var rng = new Random(5);
        var losses = Enumerable.Range(0, 8).Select(_ => TinyModels.Step(model, opt, TinyModels.CopyBatch(rng, 8))).ToArray();
        Assert.All(losses, l => Assert.True(float.IsFinite(l) && l > 0, $"loss {l}"));
        var output = SequenceDecoder.Generate(model, TinyModels.MakeBatch([[4, 5, 6]], [[4]]).SourceIds, 1, 4, new DecodeOptions(MaxLength: 5));
        Assert.Single(output);
        Assert.All(model.Parameters(), p => Assert.True(p.Data.ToArray().All(float.IsFinite), $"{p.Name} not finite"));
    }

    [Fact]
    public void CopyTaskReachesExactMatchWithGreedyDecoding()
    {
        var config = new TransformerConfig { VocabSize = 14, DModel = 48, Heads = 4, DFF = 96, EncoderLayers = 1, DecoderLayers = 1, Dropout = 0, Seed = 3 };
        using var model = new Seq2SeqTransformer(config, Device.Cpu);
        using var opt = new AdamW(model.Parameters(), 3e-3f, weightDecay: 0f);
        var rng = new Random(11);
        float last = 0;
        const int steps = 500;
        for (int step = 0; step < steps; step++)
        {
            // Constant, then linear decay to zero over the second half (exact match needs the final polish).
            opt.LearningRate = 3e-3f * Math.Min(1f, 2f * (steps - step) / steps);
            last = TinyModels.Step(model, opt, TinyModels.CopyBatch(rng, 32));
        }
        var test = TinyModels.RandomSequences(new Random(999), 200);
        var batch = TinyModels.MakeBatch(test, test);
        var decoded = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, new DecodeOptions(MaxLength: 12));
        int exact = test.Zip(decoded).Count(p => p.First.SequenceEqual(p.Second));
        Assert.True(exact >= 198, $"copy task: {exact}/200 exact after {steps} steps (last loss {last})");
        var beam = SequenceDecoder.Generate(model, batch.SourceIds, batch.BatchSize, batch.SourceLength, new DecodeOptions(MaxLength: 12, BeamSize: 3));
        int beamExact = test.Zip(beam).Count(p => p.First.SequenceEqual(p.Second));
        Assert.True(beamExact >= 198, $"copy task, beam 3: {beamExact}/200 exact");
    }
}
