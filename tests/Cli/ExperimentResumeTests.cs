using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Cli.Output;
using Nanolora.Tensors;

namespace Nanolora.Tests.Cli;

/// <summary>The seq2seq experiment end to end at a toy budget on models/base-tiny, resumed the way a progress folder is.</summary>
public class ExperimentResumeTests
{
    static ExperimentOptions Options(string dir, bool resume) => new()
    {
        OutputDirectory = dir, BaseDirectory = CliTests.ShippedBase(), Resume = resume,
        Steps = 2, BatchSize = 2, EvalExamples = 2, SweepValidationExamples = 2, FullLearningRates = [3e-4f], LoraLearningRates = [3e-3f],
        AblationSteps = 0, Ranks = [], AblationSeeds = [], SwapSteps = 1, SwapEvalExamples = 2, RunRetrieval = false,
        Comparison = [new("bitfit")], Latency = new(Steps: 1, Repeats: 1, Batches: [1]),
    };

    // A progress folder is committed without the fully fine-tuned checkpoint; the comparison's full row needs it, so a
    // resume retrains it with the recorded recipe and must get the recorded losses back, bit for bit.
    [Fact]
    public void AResumeWithoutTheFullCheckpointRetrainsItExactly()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        new ExperimentRunner(Options(dir, resume: false), Device.Cpu).Run();
        string full = Path.Combine(dir, "full");
        Assert.True(File.Exists(Path.Combine(full, "model.safetensors")));
        var before = File.ReadAllBytes(Path.Combine(full, "model.safetensors"));

        Directory.Delete(full, recursive: true);
        string statePath = Path.Combine(dir, ExperimentState.File);
        var state = JsonSerializer.Deserialize<ExperimentState>(File.ReadAllText(statePath), JsonOutput.Options)!;
        Assert.Contains("compare:full", state.Done);
        state.Done.Remove("compare:full");
        state.Comparison.RemoveAll(r => r.Method == "full");
        File.WriteAllText(statePath, JsonSerializer.Serialize(state, JsonOutput.Options));

        new ExperimentRunner(Options(dir, resume: true), Device.Cpu).Run();
        Assert.Equal(before, File.ReadAllBytes(Path.Combine(full, "model.safetensors")));
        var resumed = JsonSerializer.Deserialize<ExperimentState>(File.ReadAllText(statePath), JsonOutput.Options)!;
        Assert.Contains("compare:full", resumed.Done);
        Assert.Single(resumed.Comparison, r => r.Method == "full");
    }

    // Every trained row's latency is measured interleaved with a freshly loaded base's, in its own unit; the paired
    // re-measurement (for rows of older runs) runs after every method and does the same; merged latency only where the
    // method merges, and results.md says what the brackets compare.
    [Fact]
    public void PairedLatencyRemeasuresEveryTrainedRowBesideTheBase()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        new ExperimentRunner(Options(dir, resume: false) with { Comparison = [new("bitfit"), new("ia3")], PairedLatency = true, StepTimeSteps = 2 }, Device.Cpu).Run();
        var state = JsonSerializer.Deserialize<ExperimentState>(File.ReadAllText(Path.Combine(dir, ExperimentState.File)), JsonOutput.Options)!;
        Assert.Equal(["compare:latency-paired", "compare:step-time"], state.Done[^2..]);
        var rows = state.Comparison.ToDictionary(r => r.Method);
        Assert.Equal(["base", "full", "lora", "bitfit", "ia3"], state.Comparison.Select(r => r.Method));
        foreach (var m in new[] { "full", "lora", "bitfit", "ia3" }) Assert.True(rows[m].PairedBaseMsB1 > 0 && rows[m].LatencyMsB1 > 0, m);
        Assert.Null(rows["base"].PairedBaseMsB1);
        // Every trained row timed again in one sitting (2 steps, the first not counted, twice over), the base not.
        foreach (var m in new[] { "full", "lora", "bitfit", "ia3" }) Assert.True(rows[m].StepMsSameSitting > 0, m);
        Assert.Null(rows["base"].StepMsSameSitting);
        Assert.True(rows["lora"].LatencyMsB1Merged > 0);
        Assert.True(rows["ia3"].LatencyMsB1Merged > 0);
        Assert.Null(rows["bitfit"].LatencyMsB1Merged);
        var md = File.ReadAllText(Path.Combine(dir, "results.md"));
        Assert.Contains("interleaved with a freshly loaded base", md);
        Assert.Contains("| step, one sitting (ms) |", md);
    }
}
