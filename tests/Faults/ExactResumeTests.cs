namespace Nanolora.Tests.Faults;

/// <summary>
/// A run stopped, reloaded from disk into a new model object and resumed is the same run, bit for bit, with dropout on:
/// the checkpoint carries weights, optimizer, data position and the dropout seed counters.
/// </summary>
public class ExactResumeTests
{
    [Fact]
    public void StoppedAndResumedRunWithDropoutIsBitIdenticalToAnUninterruptedOne()
    {
        var straight = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()));
        var dir = TinyRun.NewDirectory();
        var firstHalf = TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        Assert.Equal(4, firstHalf.Losses.Count);
        var resumed = TinyRun.Train(TinyRun.Options(dir, resume: true));
        TinyRun.AssertBitwiseEqual(straight.Losses, resumed.Losses, "loss");
        TinyRun.AssertBitwiseEqual(straight.Weights, resumed.Weights, "weight");

        // The comparison means something only if dropout is drawing masks: without it the losses differ.
        var noDropout = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()), dropout: 0f);
        Assert.NotEqual(straight.Losses[^1], noDropout.Losses[^1]);
    }

    [Fact]
    public void ValidatingDoesNotShiftTheDropoutMasksOfLaterSteps()
    {
        // Validation runs in eval mode; if it consumed dropout seeds, a run validating every 3 steps would train differently.
        var plain = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()));
        var validated = TinyRun.Train(TinyRun.Options(TinyRun.NewDirectory()) with { ValidateEvery = 3, ValidationBatches = 2 }, validation: TinyRun.Loader());
        TinyRun.AssertBitwiseEqual(plain.Losses, validated.Losses, "loss");
    }

    [Fact]
    public void ResumeWithOtherOptionsIsRefusedUnlessForced()
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        var e = Assert.Throws<InvalidOperationException>(() => TinyRun.Train(TinyRun.Options(dir, resume: true) with { LearningRate = 1e-3f }));
        Assert.Contains("learning rate: checkpoint 0.003, now 0.001", e.Message);
        Assert.Contains("--force-resume", e.Message);
        e = Assert.Throws<InvalidOperationException>(() => TinyRun.Train(TinyRun.Options(dir, resume: true) with { WarmupSteps = 3, CosineDecay = false }));
        Assert.Contains("warm-up steps: checkpoint 2, now 3", e.Message);
        Assert.Contains("schedule: checkpoint cosine, now linear", e.Message);

        var forced = TinyRun.Train(TinyRun.Options(dir, resume: true) with { LearningRate = 1e-3f, ForceResume = true });
        Assert.Equal(8, forced.Losses.Count);
    }

    [Fact]
    public void ResumeWithoutACheckpointNeverStartsAtStepZero()
    {
        var dir = TinyRun.NewDirectory();
        var e = Assert.Throws<FileNotFoundException>(() => TinyRun.Train(TinyRun.Options(dir, resume: true)));
        Assert.Contains("no resumable checkpoint", e.Message);
        // A fresh run into a folder with checkpoints would mix two runs.
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 2));
        var again = Assert.Throws<InvalidOperationException>(() => TinyRun.Train(TinyRun.Options(dir)));
        Assert.Contains("already holds checkpoints", again.Message);
    }
}
