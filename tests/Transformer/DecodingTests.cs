using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>KV-cached decoding against full recomputation, and checkpoint round trips.</summary>
public class DecodingTests
{
    /// <summary>A tiny model trained a little on the copy task, so its outputs are neither constant nor random.</summary>
    static Seq2SeqTransformer TrainedALittle(TransformerConfig? config = null, int steps = 40)
    {
        var model = new Seq2SeqTransformer(config ?? TinyModels.Config with { EncoderLayers = 2, DecoderLayers = 2 }, Device.Cpu);
        using var opt = new AdamW(model.Parameters(), 3e-3f);
        var rng = new Random(21);
        for (int i = 0; i < steps; i++) TinyModels.Step(model, opt, TinyModels.CopyBatch(rng, 16));
        return model;
    }

    static Batch Sources()
    {
        var seqs = TinyModels.RandomSequences(new Random(77), 6, minLength: 2, maxLength: 8);   // different lengths: padded rows
        return TinyModels.MakeBatch(seqs, seqs);
    }

    [Theory]
    [InlineData(1, false)]
    [InlineData(3, false)]
    [InlineData(1, true)]
    [InlineData(3, true)]
    public void CachedAndUncachedDecodingGiveIdenticalTokens(int beam, bool postNormLearnedGelu)
    {
        var config = TinyModels.Config with { EncoderLayers = 2, DecoderLayers = 2 };
        if (postNormLearnedGelu) config = config with { PreNorm = false, LearnedPositions = true, Activation = "gelu" };
        using var model = TrainedALittle(config);
        var b = Sources();
        var cached = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 10, BeamSize: beam, UseCache: true));
        var full = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 10, BeamSize: beam, UseCache: false));
        Assert.Equal(b.BatchSize, cached.Count);
        Assert.True(cached.Any(o => o.Length > 0), "the model decodes nothing: the comparison would be vacuous");
        for (int i = 0; i < b.BatchSize; i++)
            Assert.True(cached[i].SequenceEqual(full[i]), $"beam {beam}, row {i}: cached [{string.Join(",", cached[i])}] vs full [{string.Join(",", full[i])}]");
        Assert.True(model.Training, "Generate must restore training mode");
    }

    [Fact]
    public void CachedStepLogitsMatchFullRecomputation()
    {
        using var model = TrainedALittle(steps: 10);
        var b = Sources();
        var targets = b.TargetInput;   // teacher-forced prefixes, fed one token at a time through the cache
        int batch = b.BatchSize, t = b.TargetLength, v = model.Config.VocabSize;
        var full = TinyModels.Logits(model, b);
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var (memory, mask) = model.Encode(b.SourceIds, batch, b.SourceLength);
        using var _ = mask;
        var caches = model.NewCaches();
        try
        {
            for (int step = 0; step < t; step++)
            {
                var ids = Enumerable.Range(0, batch).Select(r => targets[r * t + step]).ToArray();
                var logits = model.Logits(model.Decode(ids, batch, 1, memory, mask, caches, positionOffset: step)).Data.ToArray();
                var expected = Enumerable.Range(0, batch).SelectMany(r => full.Skip((r * t + step) * v).Take(v)).ToArray();
                Reference.Close(expected, logits, 1e-5, 1e-4, $"step {step}");
            }
        }
        finally { foreach (var c in caches) c.Dispose(); }
    }

    static SubwordTokenizer Tokenizer() => SubwordTokenizer.Build(
        Enumerable.Range(0, 12).Select(i => $"package number {i} provides tools for item {i % 5}"), 120);

    [Fact]
    public void CheckpointRoundTripGivesIdenticalLogits()
    {
        var tok = Tokenizer();
        var config = TinyModels.Config with { VocabSize = tok.VocabSize, Seed = 9 };
        using var model = TrainedALittle(config, steps: 5);
        var dir = Directory.CreateTempSubdirectory().FullName;
        try
        {
            Checkpoint.Save(dir, model, tok);
            Assert.Equal(config, Checkpoint.ReadConfig(dir));
            var (loaded, loadedTok) = Checkpoint.Load(dir, Device.Cpu);
            using (loaded)
            {
                Assert.Equal(tok.VocabSize, loadedTok.VocabSize);
                var b = Sources();
                var expected = TinyModels.Logits(model, b);
                var actual = TinyModels.Logits(loaded, b);
                for (int i = 0; i < expected.Length; i++)
                    Assert.True(expected[i] == actual[i], $"logit {i}: saved {expected[i]}, loaded {actual[i]}");
            }
        }
        finally { Directory.Delete(dir, true); }
    }

    [Fact]
    public void LoadingWeightsOfAnotherConfigFails()
    {
        var file = Path.Combine(Directory.CreateTempSubdirectory().FullName, "model.safetensors");
        using (var model = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu)) Checkpoint.SaveWeights(model, file);
        using var wider = new Seq2SeqTransformer(TinyModels.Config with { DModel = 24 }, Device.Cpu);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(wider, file));
        Assert.Contains("shared.weight", e.Message);
        using var deeper = new Seq2SeqTransformer(TinyModels.Config with { EncoderLayers = 2 }, Device.Cpu);
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(deeper, file));
        Assert.Contains("encoder.layers.1", e.Message);
        using var untied = new Seq2SeqTransformer(TinyModels.Config with { TieEmbeddings = false }, Device.Cpu);
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(untied, file));
        Assert.Contains("lm_head.weight", e.Message);
        // The other way round: tensors the model has no place for (a deeper or untied file) are refused too,
        // and the model is left as it was.
        var deepFile = Path.Combine(Path.GetDirectoryName(file)!, "deep.safetensors");
        using (var model = new Seq2SeqTransformer(TinyModels.Config with { EncoderLayers = 2, Seed = 5 }, Device.Cpu)) Checkpoint.SaveWeights(model, deepFile);
        using var shallow = new Seq2SeqTransformer(TinyModels.Config, Device.Cpu);
        var before = shallow.Parameters().SelectMany(p => p.Data.ToArray()).ToArray();
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(shallow, deepFile));
        Assert.Contains("encoder.layers.1", e.Message);
        Assert.Equal(before, shallow.Parameters().SelectMany(p => p.Data.ToArray()).ToArray());
        Checkpoint.LoadWeights(shallow, deepFile, allowMissing: true);   // the lenient mode still loads what fits
        var untiedFile = Path.Combine(Path.GetDirectoryName(file)!, "untied.safetensors");
        Checkpoint.SaveWeights(untied, untiedFile);
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(shallow, untiedFile));
        Assert.Contains("lm_head.weight", e.Message);
    }

    [Theory]
    [InlineData(new[] { 1, 5, 6, 5 }, 2, new[] { 6 })]
    [InlineData(new[] { 5, 6, 7, 5, 6 }, 3, new[] { 7 })]
    [InlineData(new[] { 4, 9, 4 }, 1, new[] { 4, 9 })]
    [InlineData(new[] { 1, 2, 3 }, 2, new int[0])]
    [InlineData(new[] { 3 }, 3, new int[0])]
    public void NoRepeatNgramBlocksExactlyTheTokensThatWouldRepeat(int[] prefix, int n, int[] blocked)
    {
        var scores = new float[12];
        SequenceDecoder.BlockRepeatedNgrams(scores, 0, prefix, n);
        Assert.Equal(blocked.OrderBy(t => t), Enumerable.Range(0, 12).Where(t => float.IsNegativeInfinity(scores[t])));
    }

    static bool HasRepeatedBigram(int[] output)
    {
        var seq = new[] { SubwordTokenizer.Bos }.Concat(output).ToArray();
        var seen = new HashSet<(int, int)>();
        for (int i = 0; i + 1 < seq.Length; i++) if (!seen.Add((seq[i], seq[i + 1]))) return true;
        return false;
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void NoRepeatNgramDecodingNeverRepeatsABigram(int beam)
    {
        // An untrained model loops, so some unblocked outputs repeat bigrams.
        using var model = new Seq2SeqTransformer(TinyModels.Config with { EncoderLayers = 1, DecoderLayers = 1 }, Device.Cpu);
        var b = Sources();
        var plain = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 16, BeamSize: beam));
        var blocked = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 16, BeamSize: beam, NoRepeatNgramSize: 2));
        Assert.Contains(plain, HasRepeatedBigram);
        Assert.DoesNotContain(blocked, HasRepeatedBigram);
        if (beam == 1)
            for (int r = 0; r < plain.Count; r++)
                if (!HasRepeatedBigram(plain[r])) Assert.Equal(plain[r], blocked[r]); // greedy: blocking never triggered on that path
    }

    [Theory]
    [InlineData(new[] { 1, 7, 8, 2 }, 1f, -2.0)]    // BOS a b EOS: three generated tokens, EOS included (as HF)
    [InlineData(new[] { 1, 7, 8 }, 1f, -3.0)]       // two words, unfinished
    [InlineData(new[] { 1, 7, 8, 9, 5 }, 2f, -6.0 / 16)]
    [InlineData(new[] { 1, 7, 8, 2 }, 0f, -6.0)]    // penalty 0: raw log-probability
    [InlineData(new[] { 1, 2 }, 1f, -6.0)]          // an immediate EOS counts as length 1
    public void BeamLengthNormalizationCountsGeneratedTokensWithEos(int[] tokens, float penalty, double expected) =>
        Assert.Equal(expected, SequenceDecoder.LengthNormalizedScore(-6.0, tokens, penalty), 12);

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    public void ADecoderPromptDecodesTheSameWithAndWithoutTheCache(int beam)
    {
        using var model = TrainedALittle();
        const int promptLength = 3;
        int calls = 0;
        // The prompt: the BOS row (the first input position) three times over. Random vectors would be scaled up by
        // the pre-LN norms and derail this barely trained model into an immediate EOS.
        model.DecoderInputHook = y =>
        {
            calls++;
            var bos = F.Slice(y, 1, 0, 1);
            return (F.Concat([bos, bos, bos, y], 1), promptLength);
        };
        var b = Sources();
        var cached = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 10, BeamSize: beam, UseCache: true));
        calls = 0;
        var full = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 10, BeamSize: beam, UseCache: false));
        Assert.True(calls > 1, $"the uncached path calls the hook every step; outputs: {string.Join(" / ", full.Select(o => string.Join(",", o)))}");
        Assert.Equal(full, cached);
        using (new GraphScope())
        {
            var loss = model.Loss(b, 0f);     // teacher forcing: logits only for the target positions
            Assert.True(float.IsFinite(loss.Data.Item()));
        }
        model.DecoderInputHook = null;
        var without = SequenceDecoder.Generate(model, b.SourceIds, b.BatchSize, b.SourceLength, new DecodeOptions(MaxLength: 10, BeamSize: beam));
        Assert.NotEqual(without, cached);     // the prompt changes what is decoded
    }
}
