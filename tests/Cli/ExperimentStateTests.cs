using Nanolora.Cli;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>experiment --resume's state file: rows survive a round trip, a changed recipe or an occupied folder is refused.</summary>
public class ExperimentStateTests
{
    static RougeResult Rouge(double f) => new(new RougeScore(f, f, f), new RougeScore(f / 2, f / 2, f / 2), new RougeScore(f, f, f), new RougeScore(f, f, f));

    static (ExperimentOptions Options, string BaseDir) Setup()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var baseDir = Path.Combine(dir, "base");
        Directory.CreateDirectory(baseDir);
        File.WriteAllBytes(Path.Combine(baseDir, Checkpoint.WeightsFile), [1, 2, 3]);
        return (ExperimentOptions.Defaults(false, Path.Combine(dir, "out")) with { Steps = 7 }, baseDir);
    }

    [Fact]
    public void AResumeGetsBackTheRowsSweepAndFinishedUnits()
    {
        var (o, baseDir) = Setup();
        Directory.CreateDirectory(o.OutputDirectory);
        var state = ExperimentState.Open(o, baseDir, resume: false, overwrite: false);
        state.Rows.Add(ResultRow.Of("lora", "debian", 8, Rouge(0.25), null, 1234, 29_892_282, 0, 3240, 600) with { LearningRate = 3e-3f, Seed = 2 });
        state.Sweep.Add(new RougeSweepPoint("lora", 3e-3f, 0.231, 200, 300));
        state.Losses["lora"] = [5.5f, 4.25f];
        state.BaseParameters = 29_892_282;
        state.Complete("sweep:lora:0.003", o.OutputDirectory, 61.5);

        var back = ExperimentState.Open(o, baseDir, resume: true, overwrite: false);
        Assert.True(back.IsDone("sweep:lora:0.003"));
        Assert.False(back.IsDone("lora"));
        Assert.Equal(state.Rows[0], back.Rows[0] with { PeakBytesByCategory = state.Rows[0].PeakBytesByCategory });
        Assert.Equal(0.25, back.Rows[0].Rouge1);
        Assert.Equal(3e-3f, back.Rows[0].LearningRate);
        Assert.Equal(state.Sweep, back.Sweep);
        Assert.Equal([5.5f, 4.25f], back.Losses["lora"]);
        Assert.Equal(29_892_282, back.BaseParameters);
        Assert.Equal(61.5, back.ElapsedSeconds);
    }

    [Fact]
    public void AResumeWithOtherSettingsOrAnotherBaseIsRefusedNamingWhatChanged()
    {
        var (o, baseDir) = Setup();
        Directory.CreateDirectory(o.OutputDirectory);
        ExperimentState.Open(o, baseDir, resume: false, overwrite: false).Complete("lead-8", o.OutputDirectory, 1);

        var steps = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { Steps = 8 }, baseDir, resume: true, overwrite: false));
        Assert.Contains("expected steps=7, got steps=8", steps.Message);
        // A run made when the sweep scored 300 validation pairs is told which option continues it.
        int other = o.SweepValidationExamples == 0 ? 300 : 0;
        var sweep = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { SweepValidationExamples = other }, baseDir, resume: true, overwrite: false));
        Assert.Contains($"expected sweep_validation_examples={o.SweepValidationExamples}, got sweep_validation_examples={other}", sweep.Message);
        Assert.Contains("--sweep-validation-examples", sweep.Message);
        File.WriteAllBytes(Path.Combine(baseDir, Checkpoint.WeightsFile), [1, 2, 4]);
        var weights = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o, baseDir, resume: true, overwrite: false));
        Assert.Contains("base_weights_sha256", weights.Message);
    }

    [Fact]
    public void AFolderHoldingAnExperimentIsNotReplacedUnlessAsked()
    {
        var (o, baseDir) = Setup();
        Directory.CreateDirectory(o.OutputDirectory);
        ExperimentState.Open(o, baseDir, resume: false, overwrite: false).Complete("lead-8", o.OutputDirectory, 1);
        var e = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o, baseDir, resume: false, overwrite: false));
        Assert.Contains("--resume", e.Message);
        Assert.Empty(ExperimentState.Open(o, baseDir, resume: false, overwrite: true).Done);
        var none = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { OutputDirectory = o.OutputDirectory + "-new" }, baseDir, resume: true, overwrite: false));
        Assert.Contains("does not exist", none.Message);
    }

    // The main LoRA row's targets can move after the fact: --rerun-changed drops exactly the units that depend on them
    // (the LoRA sweep, the LoRA row, the swap that reloads its adapter) with their rows, and keeps full fine-tuning and,
    // with the ablation's targets pinned, the ablation. Without the flag the change is refused, pointing at it.
    [Fact]
    public void RerunChangedDropsOnlyTheUnitsThatDependOnTheLoraTargets()
    {
        var (full, baseDir) = Setup();
        var o = full with { LoraTargets = ["q_proj", "v_proj"], AblationTargets = null, LoraInit = Nanolora.Lora.LoraInit.KaimingUniform };
        Directory.CreateDirectory(o.OutputDirectory);
        var state = ExperimentState.Open(o, baseDir, resume: false, overwrite: false);
        state.Rows.Add(ResultRow.Of("full", "debian", 0, Rouge(0.32), null, 0, 100, 0, 3240, 600));
        state.Rows.Add(ResultRow.Of("lora", "debian", 8, Rouge(0.24), null, 1234, 100, 0, 3240, 600));
        state.Rows.Add(ResultRow.Of("lora", "translate-en-de", 16, Rouge(0.34), null, 1234, 100, 0, 825, 1000));
        state.Rows.Add(ResultRow.Of("lora-ablation", "debian", 8, Rouge(0.21), null, 1234, 100, 0, 500, 300) with { Seed = 1, LearningRate = 3e-3f });
        state.Sweep.Add(new RougeSweepPoint("full", 3e-4f, 0.27, 200, 300));
        state.Sweep.Add(new RougeSweepPoint("lora", 3e-3f, 0.23, 200, 300));
        state.Losses["full"] = [5f];
        state.Losses["lora"] = [6f];
        foreach (var unit in new[] { "sweep:full:0.0003", "sweep:lora:0.003", "full", "lora", "swap", "ablation:r8:seed1" })
            state.Complete(unit, o.OutputDirectory, 1);

        // Another start for LoRA alone (LoRA-GA) reruns every LoRA unit and the ablation, not full fine-tuning; the refusal says
        // which option gives back the recorded start.
        var gaOnly = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { LoraInit = Nanolora.Lora.LoraInit.LoraGa }, baseDir, resume: true, overwrite: false));
        Assert.Contains("--lora-init kaiming", gaOnly.Message);
        var startedByGa = ExperimentState.Open(o with { LoraInit = Nanolora.Lora.LoraInit.LoraGa, RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.Equal(["sweep:full:0.0003", "full"], startedByGa.Done);

        var qkvo = o with { LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj"], AblationTargets = ["q_proj", "v_proj"] };
        var refused = Assert.Throws<ArgumentException>(() => ExperimentState.Open(qkvo, baseDir, resume: true, overwrite: false));
        Assert.Contains("lora_targets", refused.Message);
        Assert.Contains("--rerun-changed", refused.Message);
        var other = Assert.Throws<ArgumentException>(() => ExperimentState.Open(qkvo with { Steps = 8, RerunChanged = true }, baseDir, resume: true, overwrite: false));
        Assert.DoesNotContain("--rerun-changed", other.Message);

        var back = ExperimentState.Open(qkvo with { RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.Equal(["sweep:full:0.0003", "full", "ablation:r8:seed1"], back.Done);
        Assert.Equal(["full", "lora-ablation"], back.Rows.Select(r => r.Method));
        Assert.Equal(["full"], back.Sweep.Select(p => p.Method));
        Assert.Equal(["full"], back.Losses.Keys);
        Assert.Contains("lora_targets=q_proj,k_proj,v_proj,o_proj", back.Recipe);
        Assert.Contains("ablation_targets=q_proj,v_proj", back.Recipe);
        // The kept ablation trained at LoRA's old rate: if the rerun sweep chooses another, it runs again.
        Assert.Empty(back.ForgetAblationAtOtherRate(3e-3f));
        Assert.Equal(["ablation:r8:seed1"], back.ForgetAblationAtOtherRate(1e-3f));
        Assert.DoesNotContain("ablation:r8:seed1", back.Done);
        Assert.DoesNotContain(back.Rows, r => r.Method == "lora-ablation");

        // Another initialisation for LoRA (LoRA-GA) reruns every LoRA unit, the ablation included; full fine-tuning stays.
        var ga = ExperimentState.Open(qkvo with { LoraInit = Nanolora.Lora.LoraInit.LoraGa, RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.Equal(["sweep:full:0.0003", "full"], ga.Done);
        Assert.Contains("lora_init=lora_ga", ga.Recipe);

        // Left to follow the main row, the ablation's targets change with it, and its units go too.
        var follow = ExperimentState.Open(o with { LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj"], RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.Equal(["sweep:full:0.0003", "full"], follow.Done);
        Assert.Contains("ablation_targets=q_proj,k_proj,v_proj,o_proj", follow.Recipe);
    }

    // A run of the main rows only (no ranks, no swap) can be extended by a resume: nothing finished depends on the ablation's
    // rank list or on the swap, so no flag is needed. Taking a rank away drops only that rank's runs, and asks for the flag.
    [Fact]
    public void AResumeMayAddRanksAndASwapThatNothingFinishedDependsOn()
    {
        var (full, baseDir) = Setup();
        var mainRows = full with { Ranks = [], SwapSteps = 0 };
        Directory.CreateDirectory(mainRows.OutputDirectory);
        var state = ExperimentState.Open(mainRows, baseDir, resume: false, overwrite: false);
        state.Rows.Add(ResultRow.Of("lora", "debian", 8, Rouge(0.3), null, 1234, 100, 0, 3240, 600));
        foreach (var unit in new[] { "base", "full", "lora" }) state.Complete(unit, mainRows.OutputDirectory, 1);

        var extended = mainRows with { Ranks = [1, 2], SwapSteps = 5 };
        var back = ExperimentState.Open(extended, baseDir, resume: true, overwrite: false);
        Assert.Equal(["base", "full", "lora"], back.Done);
        Assert.Contains("ranks=1,2", back.Recipe);
        Assert.Contains("swap_steps=5", back.Recipe);
        back.Rows.Add(ResultRow.Of("lora-ablation", "debian", 1, Rouge(0.2), null, 1, 100, 0, 500, 300) with { Seed = 1 });
        back.Rows.Add(ResultRow.Of("lora-ablation", "debian", 2, Rouge(0.21), null, 1, 100, 0, 500, 300) with { Seed = 1 });
        back.Complete("ablation:r1:seed1", extended.OutputDirectory, 2);
        back.Complete("ablation:r2:seed1", extended.OutputDirectory, 3);

        var fewer = extended with { Ranks = [2] };
        var refused = Assert.Throws<ArgumentException>(() => ExperimentState.Open(fewer, baseDir, resume: true, overwrite: false));
        Assert.Contains("expected ranks=1,2, got ranks=2", refused.Message);
        Assert.Contains("--rerun-changed", refused.Message);
        var rerun = ExperimentState.Open(fewer with { RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.Equal(["base", "full", "lora", "ablation:r2:seed1"], rerun.Done);
        Assert.Equal([8, 2], rerun.Rows.Select(r => r.Rank));
        // The steps of a swap that already ran change its numbers: it runs again, the rest stays.
        rerun.Complete("swap", fewer.OutputDirectory, 4);
        var longerSwap = ExperimentState.Open(fewer with { SwapSteps = 9, RerunChanged = true }, baseDir, resume: true, overwrite: false);
        Assert.DoesNotContain("swap", longerSwap.Done);
        Assert.Contains("ablation:r2:seed1", longerSwap.Done);
    }

    // A state written before the start of LoRA became a setting has no lora_init line: it reads as the start every run
    // had then (Kaiming), so it resumes with --lora-init kaiming and reruns its LoRA units with LoRA-GA only when asked.
    [Fact]
    public void AStateWithoutALoraInitLineReadsAsKaiming()
    {
        var (full, baseDir) = Setup();
        var kaiming = full with { LoraInit = Nanolora.Lora.LoraInit.KaimingUniform };
        Directory.CreateDirectory(kaiming.OutputDirectory);
        ExperimentState.Open(kaiming, baseDir, resume: false, overwrite: false).Complete("lora", kaiming.OutputDirectory, 1);
        string path = Path.Combine(kaiming.OutputDirectory, ExperimentState.File);
        File.WriteAllLines(path, File.ReadAllLines(path).Where(l => !l.Contains("lora_init=")));
        Assert.DoesNotContain("lora_init", File.ReadAllText(path));
        Assert.Equal(["lora"], ExperimentState.Open(kaiming, baseDir, resume: true, overwrite: false).Done);
        Assert.Throws<ArgumentException>(() => ExperimentState.Open(full with { LoraInit = Nanolora.Lora.LoraInit.LoraGa }, baseDir, resume: true, overwrite: false));
    }
    // A sweep whose best rate is at its grid's edge tries one grid step beyond it (rounded to two digits); inside, nothing.
    [Theory]
    [InlineData(new[] { 1e-3f, 3e-3f, 1e-2f }, new[] { 0.31, 0.29, 0.14 }, 3.3e-4f)]
    [InlineData(new[] { 1e-4f, 3e-4f, 1e-3f }, new[] { 0.30, 0.32, 0.28 }, null)]
    [InlineData(new[] { 1e-4f, 3e-4f, 1e-3f }, new[] { 0.28, 0.29, 0.30 }, 3.3e-3f)]
    [InlineData(new[] { 3.3e-4f, 1e-3f, 3e-3f }, new[] { 0.32, 0.31, 0.29 }, 1.1e-4f)]
    [InlineData(new[] { 1e-3f }, new[] { 0.31 }, null)]
    public void ASweepBestAtItsEdgeTriesOneStepBeyond(float[] rates, double[] scores, float? expected)
    {
        var beyond = SweepEdge.Beyond(rates.Zip(scores).Reverse().ToList());
        if (expected == null) Assert.Null(beyond);
        else Assert.Equal(expected.Value, beyond!.Value, 1e-9f);
    }

    // The rates a sweep tries come from the grid and the scores alone: with the best always at the low edge it stops after
    // its extensions, and a resumed sweep whose state holds rates from elsewhere asks for exactly the same ones.
    [Fact]
    public void ASweepTriesTheSameRatesWhateverAnEarlierRunTried()
    {
        float[] grid = [1e-3f, 3e-3f, 1e-2f];
        var asked = new List<float>();
        double Lower(float rate) { asked.Add(rate); return -Math.Log10(rate); }   // lower is always better
        var tried = SweepEdge.Run(grid, Lower, extensions: 2);
        Assert.Equal([1e-3f, 3e-3f, 1e-2f, 3.3e-4f, 1.1e-4f], tried.Select(t => t.Rate));
        Assert.Equal(tried.Select(t => t.Rate), asked);
        Assert.Equal(grid, SweepEdge.Run(grid, Lower, extensions: 0).Select(t => t.Rate));
        // An interior best needs no extension.
        Assert.Equal(grid, SweepEdge.Run(grid, r => r == 3e-3f ? 1 : 0, extensions: 2).Select(t => t.Rate));
    }

    // When the sweep, extended past its edge on a resume, chooses another rate than a finished row was trained at, that row
    // and what was measured from it are to run again (LoRA's: the swap, its comparison row, both re-measurements; full
    // fine-tuning's: its comparison row and the step-time re-measurement, not the paired latency, which skips it); the
    // sweep points stay.
    [Fact]
    public void ARowTrainedAtARateTheSweepNoLongerChoosesRunsAgain()
    {
        var (o, baseDir) = Setup();
        Directory.CreateDirectory(o.OutputDirectory);
        var state = ExperimentState.Open(o, baseDir, resume: false, overwrite: false);
        state.Rows.Add(ResultRow.Of("full", "debian", 0, Rouge(0.34), null, 0, 100, 0, 3240, 600) with { LearningRate = 3e-4f });
        state.Rows.Add(ResultRow.Of("lora", "debian", 8, Rouge(0.33), null, 1234, 100, 0, 3240, 600) with { LearningRate = 1e-3f });
        state.Rows.Add(ResultRow.Of("lora", "translate-en-de", 8, Rouge(0.2), null, 1234, 100, 0, 200, 1000));
        state.Sweep.Add(new RougeSweepPoint("lora", 1e-3f, 0.31, 200, 300));
        state.Losses["lora"] = [5f];
        state.Losses["full"] = [4f];
        foreach (var unit in new[] { "sweep:lora:0.001", "full", "lora", "swap", "compare:full", "compare:lora", ExperimentState.PairedLatencyUnit, ExperimentState.StepTimeUnit })
            state.Complete(unit, o.OutputDirectory, 1);

        Assert.Empty(state.UnitsAtOtherRate("full", 3e-4f));
        Assert.Empty(state.UnitsAtOtherRate("lora", 1e-3f));
        Assert.Equal(["full", "compare:full", ExperimentState.StepTimeUnit], state.UnitsAtOtherRate("full", 1e-4f));
        var lora = state.UnitsAtOtherRate("lora", 3.3e-4f);
        Assert.Equal(["lora", "swap", "compare:lora", ExperimentState.PairedLatencyUnit, ExperimentState.StepTimeUnit], lora);
        state.Forget(lora);
        Assert.Equal(["sweep:lora:0.001", "full", "compare:full"], state.Done);
        Assert.Equal(["full"], state.Rows.Select(r => r.Method));
        Assert.Single(state.Sweep);
        Assert.False(state.Losses.ContainsKey("lora"));
    }

    // A state from before the sweep could pass its edge reads as no extensions, and a resume may allow them without
    // --rerun-changed: nothing finished is dropped up front (a row goes only if the sweep then chooses another rate).
    [Fact]
    public void AResumeMayAllowTheSweepPastItsEdge()
    {
        var (o, baseDir) = Setup();
        Directory.CreateDirectory(o.OutputDirectory);
        var state = ExperimentState.Open(o with { SweepEdgeExtensions = 0 }, baseDir, resume: false, overwrite: false);
        Assert.Contains("sweep_edge_extensions=0", state.Recipe);
        state.Recipe.Remove("sweep_edge_extensions=0");   // as a state written before the line existed
        state.Complete("sweep:lora:0.001", o.OutputDirectory, 1);
        var back = ExperimentState.Open(o, baseDir, resume: true, overwrite: false);
        Assert.Contains("sweep_edge_extensions=2", back.Recipe);
        Assert.Equal(["sweep:lora:0.001"], back.Done);
    }
}
