using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Faults;

/// <summary>
/// A run small enough for a fault test to train it several times in a second: 24 examples in batches of 4 (6 batches an
/// epoch, so 8 steps cross an epoch boundary), a 16-wide 1+1-layer model, dropout on unless asked otherwise.
/// </summary>
internal static class TinyRun
{
    public static readonly Example[] Examples = Enumerable.Range(0, 24)
        .Select(i => new Example($"package number {i} provides tools for item {i % 5} and more", $"tools for item {i % 5}")).ToArray();

    public static readonly SubwordTokenizer Tokenizer = SubwordTokenizer.Build(Examples.SelectMany(e => new[] { e.Source, e.Target }), 200);

    public static TransformerConfig Config(float dropout = 0.1f) => new()
        { VocabSize = Tokenizer.VocabSize, DModel = 16, Heads = 2, DFF = 32, EncoderLayers = 1, DecoderLayers = 1, Dropout = dropout };

    public static BatchLoader Loader() => new(Examples, Tokenizer, 16, 8, 4, 7);

    public static TrainOptions Options(string dir, int steps = 8, bool resume = false, int? stopAfter = null) => new()
        { Steps = steps, LearningRate = 3e-3f, WarmupSteps = 2, CheckpointDirectory = dir, CheckpointEvery = 2, Resume = resume, StopAfterStep = stopAfter };

    /// <summary>Trains a freshly built model (a resume gets everything else from the checkpoint on disk); returns all losses and the final weights.</summary>
    public static (List<float> Losses, float[] Weights) Train(TrainOptions options, float dropout = 0.1f, BatchLoader? validation = null)
    {
        using var model = new Seq2SeqTransformer(Config(dropout), Device.Cpu);
        var result = new Trainer(model, Tokenizer).Train(model.Parameters().ToList(), Loader(), validation, options);
        return (result.Losses, model.NamedParameters().SelectMany(p => p.Parameter.Data.ToArray()).ToArray());
    }

    /// <summary>One folder per test process, removed when it exits (the checkpoints of a full run of these tests add up to ~50 MB).</summary>
    static readonly Lazy<string> Root = new(() =>
    {
        var root = Directory.CreateTempSubdirectory($"nanolora-faults-{Environment.ProcessId}-").FullName;
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try { Directory.Delete(root, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        };
        return root;
    });

    public static string NewDirectory() => Directory.CreateDirectory(Path.Combine(Root.Value, Guid.NewGuid().ToString("N")[..12])).FullName;

    /// <summary>Bit-for-bit equality, reporting the first differing index and both values.</summary>
    public static void AssertBitwiseEqual(IReadOnlyList<float> expected, IReadOnlyList<float> actual, string what)
    {
        Assert.True(expected.Count == actual.Count, $"{what}: {expected.Count} values expected, {actual.Count} found");
        for (int i = 0; i < expected.Count; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]),
                $"{what}[{i}]: uninterrupted {expected[i]:R}, resumed {actual[i]:R}");
    }
}
