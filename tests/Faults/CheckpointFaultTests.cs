using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Faults;

/// <summary>Kills during a checkpoint, mixed and incomplete checkpoints: never resumed silently, and the previous one survives.</summary>
public class CheckpointFaultTests
{
    static string Step(string dir, int step) => TrainingCheckpoint.StepDirectory(dir, step);

    [Fact]
    public void KillWhileWritingACheckpointLeavesThePreviousOneAndTheResumeIsExact()
    {
        var straight = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()));
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        // What a kill -9 in the middle of step 6's checkpoint leaves: a half-built unit and an atomic write's temp file.
        var halfBuilt = Path.Combine(dir, TrainingCheckpoint.Folder, ".step-00000006.99999.tmp");
        Directory.CreateDirectory(halfBuilt);
        var weights = File.ReadAllBytes(Path.Combine(Step(dir, 4), Checkpoint.WeightsFile));
        File.WriteAllBytes(Path.Combine(halfBuilt, Checkpoint.WeightsFile), weights[..(weights.Length / 2)]);
        var strayTemp = Path.Combine(dir, $".{Checkpoint.WeightsFile}.99999.0123.tmp");
        File.WriteAllBytes(strayTemp, weights[..100]);

        Assert.Equal(4, TrainingCheckpoint.FindLatest(dir).Step);
        var resumed = TinyRun.Train(TinyRun.Options(dir, resume: true));
        TinyRun.AssertBitwiseEqual(straight.Weights, resumed.Weights, "weight");
        Assert.False(Directory.Exists(halfBuilt), "the half-built checkpoint is cleaned up");
        Assert.False(File.Exists(strayTemp), "the stray temp file is cleaned up");
        Assert.Equal([Step(dir, 8)], Directory.GetDirectories(Path.Combine(dir, TrainingCheckpoint.Folder)));
    }

    [Fact]
    public void AMixedCheckpointIsRefusedNamingTheFile()
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        var other = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(other, stopAfter: 2));
        // Optimizer state of step 2 beside the weights of step 4: what one-file-at-a-time replacement used to leave.
        File.Copy(Path.Combine(Step(other, 2), Checkpoint.OptimizerFile), Path.Combine(Step(dir, 4), Checkpoint.OptimizerFile), overwrite: true);
        var e = Assert.Throws<InvalidDataException>(() => TinyRun.Train(TinyRun.Options(dir, resume: true)));
        Assert.Contains(Checkpoint.OptimizerFile, e.Message);
        Assert.Contains("SHA-256", e.Message);
    }

    [Fact]
    public void ANewerBrokenCheckpointFallsBackToTheLastCompleteOneWithAMessage()
    {
        var straight = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()));
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 2));
        var aside = TinyRun.NewDirectory();
        CopyDirectory(Step(dir, 2), aside);
        TinyRun.Train(TinyRun.Options(dir, resume: true, stopAfter: 4));
        CopyDirectory(aside, Step(dir, 2));   // as if step 2's unit had been kept
        var weights = Path.Combine(Step(dir, 4), Checkpoint.WeightsFile);
        var bytes = File.ReadAllBytes(weights);
        bytes[^3] ^= 0x40;                    // bit rot in the newest one
        File.WriteAllBytes(weights, bytes);

        var point = TrainingCheckpoint.FindLatest(dir);
        Assert.Equal(2, point.Step);
        Assert.Contains(point.Skipped, s => s.Contains("step-00000004") && s.Contains(Checkpoint.WeightsFile));
        var resumed = TinyRun.Train(TinyRun.Options(dir, resume: true));
        TinyRun.AssertBitwiseEqual(straight.Weights, resumed.Weights, "weight");

        File.Delete(Path.Combine(Step(dir, 8), TrainingCheckpoint.ManifestFile));
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.FindLatest(dir));
        Assert.Contains("incomplete", e.Message);
    }

    [Fact]
    public void MissingOptimizerFileIsRefusedNotRestartedAtStepZero()
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        File.Delete(Path.Combine(Step(dir, 4), Checkpoint.OptimizerFile));
        var e = Assert.Throws<InvalidDataException>(() => TinyRun.Train(TinyRun.Options(dir, resume: true)));
        Assert.Contains($"{Checkpoint.OptimizerFile} is missing", e.Message);
    }

    [Fact]
    public void NonFiniteWeightsAreNeverCheckpointedAndThePreviousCheckpointSurvives()
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        using var model = new Seq2SeqTransformer(TinyRun.Config(), Device.Cpu);
        using var optimizer = new AdamW(model.Parameters().ToList());
        var state = TrainingCheckpoint.Restore(TrainingCheckpoint.FindLatest(dir), model, optimizer,
            RunOptions.Of(TinyRun.Options(dir), TinyRun.Loader()), force: false, TinyRun.Loader().BatchesPerEpoch);
        var (name, p) = model.NamedParameters().First(n => n.Name.Contains("fc1.weight"));
        var data = p.Data.ToArray();
        data[5] = float.PositiveInfinity;
        p.Data.CopyFrom(data);
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Save(dir, model, TinyRun.Tokenizer, optimizer,
            state with { Step = 6, BatchInEpoch = 6, Losses = [.. state.Losses, 1f, 1f] }));
        Assert.Contains(name, e.Message);
        Assert.Contains("holds +Inf at element 5", e.Message);
        Assert.Equal(4, TrainingCheckpoint.FindLatest(dir).Step);
        Assert.Empty(Directory.GetDirectories(Path.Combine(dir, TrainingCheckpoint.Folder), ".*"));
    }

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
    }
}
