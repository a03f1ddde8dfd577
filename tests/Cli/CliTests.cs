using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>The nanolora command's file-facing subcommands, run in-process.</summary>
public class CliTests
{
    internal static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var (oldOut, oldErr, oldAnsi) = (Console.Out, Console.Error, Spectre.Console.AnsiConsole.Console);
        Console.SetOut(stdout);
        Console.SetError(stderr);
        // Spectre's AnsiConsole keeps the Console.Out it first saw (an earlier test's writer, once one ran): point it
        // at this run's stdout too, or tables land in a stale writer and the run looks silent.
        Spectre.Console.AnsiConsole.Console = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings { Out = new Spectre.Console.AnsiConsoleOutput(stdout) });
        try { return (Program.Main(args), stdout.ToString(), stderr.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); Spectre.Console.AnsiConsole.Console = oldAnsi; }
    }

    [Fact]
    public void RougeJsonHasTheDocumentedShape()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.WriteAllLines(Path.Combine(dir, "p.txt"), ["the cat sat on the mat", "a quick brown fox"]);
        File.WriteAllLines(Path.Combine(dir, "r.txt"), ["the cat is on the mat", "the quick brown dog"]);
        var (code, output, _) = Run("rouge", Path.Combine(dir, "p.txt"), Path.Combine(dir, "r.txt"), "--json");
        Assert.Equal(0, code);
        using var doc = JsonDocument.Parse(output);
        var expected = Rouge.Average(["the cat sat on the mat", "a quick brown fox"], ["the cat is on the mat", "the quick brown dog"]);
        Assert.Equal(["rouge1", "rouge2", "rougeL", "rougeLsum"], doc.RootElement.EnumerateObject().Select(p => p.Name));
        Assert.Equal(expected.Rouge1.F, doc.RootElement.GetProperty("rouge1").GetProperty("f").GetDouble(), 12);
        Assert.Equal(expected.RougeL.Precision, doc.RootElement.GetProperty("rougeL").GetProperty("precision").GetDouble(), 12);
        Assert.Equal(expected.Rouge2.Recall, doc.RootElement.GetProperty("rouge2").GetProperty("recall").GetDouble(), 12);
    }

    [Fact]
    public void RougeRefusesFilesOfDifferentLength()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.WriteAllLines(Path.Combine(dir, "p.txt"), ["a", "b"]);
        File.WriteAllLines(Path.Combine(dir, "r.txt"), ["a"]);
        var (code, _, err) = Run("rouge", Path.Combine(dir, "p.txt"), Path.Combine(dir, "r.txt"));
        Assert.Equal(1, code);
        Assert.Contains("2 predictions but 1 references", err);
    }

    [Fact]
    public void InspectListsTensorsAndFailsCleanlyOnMalformedFiles()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var good = Path.Combine(dir, "good.safetensors");
        Safetensors.Write(good, [("layer.weight", [2, 3], new float[6])], new Dictionary<string, string> { ["k"] = "v" });
        var (code, output, _) = Run("inspect", good);
        Assert.Equal(0, code);
        Assert.Contains("layer.weight", output);
        Assert.Contains("F32", output);

        var bad = Path.Combine(dir, "bad.safetensors");
        File.WriteAllBytes(bad, [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, (byte)'{']);
        var (badCode, badOut, badErr) = Run("inspect", bad);
        Assert.NotEqual(0, badCode);
        var lines = badErr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("error:", lines[0]);
        Assert.DoesNotContain("   at ", badErr + badOut);
    }

    [Fact]
    public void ParamsPrintsTheWorkedExample()
    {
        var (code, output, _) = Run("params", "--preset", "tiny", "--rank", "8", "--targets", "q_proj,v_proj");
        Assert.Equal(0, code);
        Assert.Contains("4,096 parameters", output); // tiny: one 128×32 per-head projection
        Assert.Contains("trainable params:", output);
    }

    internal static string ShippedBase() =>
        Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(DataPaths.Find("debian-descriptions.jsonl.gz")))!, "models", "base-tiny");

    [Fact]
    public void TrainFromScratchCheckpointsAndResumesTheSameRun()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        string[] common = ["train", "--preset", "tiny", "--tokenizer", Path.Combine(ShippedBase(), Checkpoint.TokenizerFile), "--batch-size", "2",
            "--train-examples", "16", "--device", "cpu", "--out", dir];
        var (code, _, err) = Run([.. common, "--steps", "2", "--checkpoint-every", "1"]);
        Assert.True(code == 0, err);
        var first = TrainerStateFile.Read(Path.Combine(dir, Checkpoint.StateFile));
        Assert.Equal(2, first.Step);
        Assert.True(File.Exists(Path.Combine(TrainingCheckpoint.StepDirectory(dir, 2), Checkpoint.OptimizerFile)));
        Assert.False(Directory.Exists(TrainingCheckpoint.StepDirectory(dir, 1)), "the step-1 checkpoint is dropped once step 2's is complete");
        Assert.True(new FileInfo(Path.Combine(dir, "loss.png")).Length > 1000, "the train command plots its loss curve");

        // A longer schedule is another run: refused unless forced.
        (code, _, err) = Run([.. common, "--steps", "3", "--resume"]);
        Assert.Equal(1, code);
        Assert.Contains("steps: checkpoint 2, now 3", err);
        Assert.Contains("--force-resume", err);
        (code, _, err) = Run([.. common, "--steps", "3", "--resume", "--force-resume"]);
        Assert.True(code == 0, err);
        var resumed = TrainerStateFile.Read(Path.Combine(dir, Checkpoint.StateFile));
        Assert.Equal(3, resumed.Step);
        Assert.Equal(first.Losses, resumed.Losses.Take(2)); // the resumed run kept the history and added one step
        Assert.Equal(3, resumed.Losses.Count);
        (code, _, err) = Run([.. common, "--steps", "3"]);   // a fresh run must not overwrite it
        Assert.Equal(1, code);
        Assert.Contains("--resume", err);
    }

    [Fact]
    public void FineTuneRefusesResumeWithoutACheckpointAndResumingLora()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (code, _, err) = Run("finetune", "--method", "full", "--resume", "--base", ShippedBase(), "--out", dir, "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("no resumable checkpoint", err);
        (code, _, err) = Run("finetune", "--method", "lora", "--resume", "--base", ShippedBase(), "--out", dir, "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains("--method full", err);
    }
}
