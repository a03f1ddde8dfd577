using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Cli.Output;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>The experiment's report writers on synthetic rows (the experiment itself takes 13 minutes).</summary>
public class ExperimentReportTests
{
    const long BaseParameters = 1_950_208;

    static TrainResult Trained(long trainable, double stepMs) => new(Enumerable.Range(0, 120).Select(i => 5f - i * 0.01f).ToList(), [new ValidationPoint(60, 4.5f)],
        stepMs, new LedgerSnapshot(0, 278_000_000, new Dictionary<MemoryCategory, long>(),
            new Dictionary<MemoryCategory, long> { [MemoryCategory.Parameter] = 7_800_000, [MemoryCategory.OptimizerState] = 15_600_000 }, 0, 2_300_000_000),
        trainable, trainable * 8);

    static RougeResult Rouge(double f) => new(new RougeScore(f, f, f), new RougeScore(f / 2, f / 2, f / 2), new RougeScore(f, f, f), new RougeScore(f, f, f));

    static (ExperimentReport Report, string Dir) Synthetic()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var o = ExperimentOptions.Defaults(true, dir);
        var rows = new List<ResultRow>
        {
            ResultRow.Of("lead-8", "debian", 0, Rouge(0.26), null, 0, BaseParameters, 0, 400, 0),
            ResultRow.Of("base", "debian", 0, Rouge(0.01), null, 0, BaseParameters, 7_810_264, 400, 0),
            ResultRow.Of("full", "debian", 0, Rouge(0.11), Trained(BaseParameters, 204), 0, BaseParameters, 7_810_264, 400, 600),
            ResultRow.Of("lora", "debian", 8, Rouge(0.06), Trained(24_576, 150), 100_000, BaseParameters, 0, 400, 600),
            // The WordNet adapter is trained beside the Debian one: its % must still be of the base alone.
            ResultRow.Of("lora", "wordnet", 8, Rouge(0.0), Trained(24_576, 58), 100_000, BaseParameters, 0, 400, 300),
            ResultRow.Of("lora-ablation", "debian", 1, Rouge(0.01), Trained(3_072, 170), 12_000, BaseParameters, 0, 200, 300),
            ResultRow.Of("lora-ablation", "debian", 64, Rouge(0.07), Trained(196_608, 180), 800_000, BaseParameters, 0, 200, 300),
        };
        var losses = new Dictionary<string, List<float>> { ["full"] = Trained(1, 1).Losses, ["lora"] = Trained(1, 1).Losses };
        return (new ExperimentReport(o, rows, losses, TimeSpan.FromSeconds(83)), dir);
    }

    [Theory]
    [InlineData(0.054, 0.0836, "65% of full's gain")]
    [InlineData(-0.0218, 0.0003, "full fine-tuning gained 0.0003, too little for a share")]
    [InlineData(-0.0075, -0.0035, "full fine-tuning did not gain")]
    public void LorasShareIsGivenOnlyOfAGainAboveTheNoise(double lora, double full, string expected) =>
        Assert.Equal(expected, ExperimentReport.ShareOfFullGain(lora, full));

    // With the three rows' prediction files (named as the runner saves them), results.md gives the share's bootstrap
    // interval; without them it gives the share alone.
    [Fact]
    public void ResultsMdGivesTheSharesIntervalFromThePredictionFiles()
    {
        var (report, dir) = Synthetic();
        report.Write();
        Assert.DoesNotContain("paired bootstrap", File.ReadAllText(Path.Combine(dir, "results.md")));
        var predictions = Directory.CreateDirectory(Path.Combine(dir, "predictions")).FullName;
        string[] refs = ["terminal file manager", "library for parsing json", "command line tool for images", "python bindings for the library", "fast web server"];
        void Save(string name, string[] lines)
        {
            File.WriteAllText(Path.Combine(predictions, name + ".txt"), string.Join('\n', lines) + "\n");
            File.WriteAllText(Path.Combine(predictions, name + ".references.txt"), string.Join('\n', refs) + "\n");
        }
        Save("base", ["a program", "json", "tool", "bindings", "server"]);
        Save("full", ["terminal file manager", "library for json", "command line tool", "python bindings for the library", "web server"]);
        Save("lora-r8", ["file manager", "library for json", "tool for images", "python bindings", "web server"]);
        report.Write();
        var md = File.ReadAllText(Path.Combine(dir, "results.md"));
        Assert.Contains("interval by a paired bootstrap over the 5 test pairs (2,000 resamples, seed 1):", md);
    }

    [Fact]
    public void ResultsJsonLeavesWhatWasNotMeasuredNull()
    {
        var (report, dir) = Synthetic();
        report.Write();
        var root = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, ExperimentJson.File))).RootElement;
        Assert.Equal(ExperimentJson.SchemaName, root.GetProperty("schema").GetString());
        Assert.True(root.GetProperty("quick").GetBoolean());
        var rows = root.GetProperty("rows").EnumerateArray().ToList();
        var lead = rows[0];
        foreach (var field in new[] { "rank", "peak_bytes", "step_ms", "optimizer_state_bytes", "steps", "adapter_bytes", "checkpoint_bytes" })
            Assert.True(lead.GetProperty(field).ValueKind == JsonValueKind.Null, $"lead-8's {field} is {lead.GetProperty(field)}, not null");
        Assert.Equal(8, rows[3].GetProperty("rank").GetInt32());
        Assert.Equal(150, rows[3].GetProperty("step_ms").GetDouble());
        Assert.Equal(0.06, rows[3].GetProperty("rougeL").GetDouble());   // ROUGE keeps rouge_score's key
        Assert.Equal(15_600_000, rows[3].GetProperty("peak_bytes_by_category").GetProperty("optimizer_state").GetInt64());
        // One denominator: the same adapter size has the same % on either task.
        Assert.Equal(rows[3].GetProperty("trainable_percent").GetDouble(), rows[4].GetProperty("trainable_percent").GetDouble());
        Assert.Equal(100.0 * 24_576 / BaseParameters, rows[3].GetProperty("trainable_percent").GetDouble(), 12);
    }

    [Fact]
    public void MarkdownAndConsoleTablesShowADashForNotMeasured()
    {
        var (report, dir) = Synthetic();
        var md = report.Markdown().Split('\n');
        var leadRow = md.Single(l => l.StartsWith("| lead-8 |"));
        var cells = leadRow.Split('|').Select(c => c.Trim()).ToArray();
        Assert.Equal("", cells[3]);                     // rank: none
        Assert.Equal(TextTable.NotMeasured, cells[9]);  // optimizer state
        Assert.Equal(TextTable.NotMeasured, cells[10]); // peak memory
        Assert.Equal(TextTable.NotMeasured, cells[11]); // step time
        Assert.Contains("1.26 |", md.Single(l => l.StartsWith("| lora | wordnet |")));
        Assert.Contains($"base model's {BaseParameters:N0} parameters", report.Markdown());

        var plain = report.Table().ToPlainText().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(8, plain.Length);   // header + 7 rows: nothing wrapped, no column dropped
        foreach (var header in new[] { "method", "ROUGE-1", "ROUGE-2", "ROUGE-L", "trainable", "% of base", "opt state MB", "peak MB", "ms/step", "adapter MB" })
            Assert.Contains(header, plain[0]);
        Assert.Contains("—", plain[1]);
    }

    [Fact]
    public void PlotsAreWritten()
    {
        var (report, dir) = Synthetic();
        report.Write();
        foreach (var png in new[] { "loss_full_vs_lora.png", "rouge1_vs_rank.png" })
            Assert.True(new FileInfo(Path.Combine(dir, png)).Length > 5000, png);
        Assert.Equal(3, Nanolora.Cli.Plots.SmoothingWindow(150, 50));
        Assert.Equal([1.0, 2.0, 4.0], Nanolora.Cli.Plots.MovingAverage([1f, 3f, 5f], 2));
    }

    /// <summary>The shipped full run's results.json (a checkout's file, found among the test binary's parent folders).</summary>
    static ExperimentJson ShippedFullRun()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d != null; d = d.Parent)
        {
            var path = Path.Combine(d.FullName, "docs", "results", "full", ExperimentJson.File);
            if (File.Exists(path)) return JsonSerializer.Deserialize<ExperimentJson>(File.ReadAllText(path), JsonOutput.Options)!;
        }
        throw new FileNotFoundException("docs/results/full/results.json not found above " + AppContext.BaseDirectory);
    }

    [Fact]
    public void TheComparisonGetsItsPlotOnlyWhenSomethingWasCompared()
    {
        var shipped = ShippedFullRun();
        Assert.True(shipped.Comparison!.Count >= 8);   // base, full, LoRA and the families of the seed
        var dir = Directory.CreateTempSubdirectory().FullName;
        var o = ExperimentOptions.Defaults(false, dir);
        var report = new ExperimentReport(o, shipped.Rows, new Dictionary<string, List<float>>(), TimeSpan.FromHours(1), sweep: shipped.Sweep, comparison: shipped.Comparison);
        report.Write();
        Assert.True(new FileInfo(Path.Combine(dir, ExperimentReport.ComparisonPlotFile)).Length > 20_000);
        Assert.Contains(ExperimentReport.ComparisonPlotFile, File.ReadAllText(Path.Combine(dir, "results.md")));

        // Only the base compared: nothing to plot, and results.md does not name a plot that is not there.
        var lone = Directory.CreateTempSubdirectory().FullName;
        new ExperimentReport(ExperimentOptions.Defaults(false, lone), shipped.Rows, new Dictionary<string, List<float>>(), TimeSpan.FromHours(1),
            comparison: shipped.Comparison.Take(1).ToList()).Write();
        Assert.False(File.Exists(Path.Combine(lone, ExperimentReport.ComparisonPlotFile)));
        Assert.DoesNotContain(ExperimentReport.ComparisonPlotFile, File.ReadAllText(Path.Combine(lone, "results.md")));
    }
}
