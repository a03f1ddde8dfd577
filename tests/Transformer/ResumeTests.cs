using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>A run stopped at a checkpoint and resumed ends with the same weights as one that never stopped.</summary>
public class ResumeTests
{
    static readonly Example[] Examples = Enumerable.Range(0, 24)
        .Select(i => new Example($"package number {i} provides tools for item {i % 5} and more", $"tools for item {i % 5}")).ToArray();

    static float[] Train(string dir, int steps, bool resume, SubwordTokenizer tok, TransformerConfig config, int? stopAfter = null)
    {
        using var model = new Seq2SeqTransformer(config, Device.Cpu);
        if (resume) Checkpoint.LoadWeights(model, Path.Combine(dir, Checkpoint.WeightsFile));
        var loader = new BatchLoader(Examples, tok, 16, 8, 4, 7);
        var options = new TrainOptions { Steps = steps, LearningRate = 3e-3f, WarmupSteps = 2, CheckpointDirectory = dir, CheckpointEvery = 2, Resume = resume, LabelSmoothing = 0.1f, StopAfterStep = stopAfter };
        var result = new Trainer(model, tok).Train(model.Parameters().ToList(), loader, null, options);
        Assert.Equal(stopAfter ?? steps, result.Losses.Count);
        return model.NamedParameters().SelectMany(p => p.Parameter.Data.ToArray()).ToArray();
    }

    [Fact]
    public void ResumedRunMatchesUninterruptedRun()
    {
        var tok = SubwordTokenizer.Build(Examples.SelectMany(e => new[] { e.Source, e.Target }), 200);
        var config = new TransformerConfig { VocabSize = tok.VocabSize, DModel = 16, Heads = 2, DFF = 32, EncoderLayers = 1, DecoderLayers = 1, Dropout = 0 };
        var expected = Train(Directory.CreateTempSubdirectory().FullName, 8, false, tok, config);
        // A run that stopped after step 4 (its last checkpoint), then resumed to step 8.
        var stopped = Directory.CreateTempSubdirectory().FullName;
        Train(stopped, 8, false, tok, config, stopAfter: 4);
        var resumed = Train(stopped, 8, true, tok, config);
        Assert.Equal(expected.Length, resumed.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - resumed[i]) <= 1e-6f + 1e-5f * Math.Abs(expected[i]), $"weight {i}: uninterrupted {expected[i]}, resumed {resumed[i]}");
    }

    [Fact]
    public void NanLossStopsTrainingWithAClearError()
    {
        var tok = SubwordTokenizer.Build(Examples.SelectMany(e => new[] { e.Source, e.Target }), 200);
        var config = new TransformerConfig { VocabSize = tok.VocabSize, DModel = 16, Heads = 2, DFF = 32, EncoderLayers = 1, DecoderLayers = 1, Dropout = 0 };
        using var model = new Seq2SeqTransformer(config, Device.Cpu);
        var loader = new BatchLoader(Examples, tok, 16, 8, 4, 7);
        var e = Assert.Throws<InvalidOperationException>(() => new Trainer(model, tok).Train(model.Parameters().ToList(), loader, null,
            new TrainOptions { Steps = 20, LearningRate = 1e30f, WarmupSteps = 0, ClipNorm = 0 }));
        Assert.Matches(@"at step \d+", e.Message);
    }
}
