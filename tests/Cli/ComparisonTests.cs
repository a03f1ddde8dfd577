using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Cli.Output;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>The experiment's PEFT comparison: its state survives a resume, an older state resumes into it, and results.json/md carry it.</summary>
public class ComparisonTests
{
    static (ExperimentOptions Options, string BaseDir) Setup()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var baseDir = Path.Combine(dir, "base");
        Directory.CreateDirectory(baseDir);
        File.WriteAllBytes(Path.Combine(baseDir, Checkpoint.WeightsFile), [1, 2, 3]);
        var o = ExperimentOptions.Defaults(true, Path.Combine(dir, "out"));
        Directory.CreateDirectory(o.OutputDirectory);
        return (o, baseDir);
    }

    static ComparisonRow Row(string method, string? size, double b1, double b32, double? mergedB1 = null) =>
        new(method, size, 0.25, 0.1, 0.2, 1000, 0.5, 8000, 1 << 20, new Dictionary<string, long> { ["activation"] = 1 << 19 }, 42.0, b1, b32, mergedB1, mergedB1 * 4, 4096, 400, 100, 1e-3f);

    // A state written before lora_targets was recorded read as q_proj,v_proj, the only targets those runs used: it resumes
    // with them and refuses others, naming the setting.
    [Fact]
    public void AStateWithoutLoraTargetsMeansQueryAndValue()
    {
        var (o, baseDir) = Setup();
        ExperimentState.Open(o, baseDir, resume: false, overwrite: false).Complete("lora", o.OutputDirectory, 10);
        string path = Path.Combine(o.OutputDirectory, ExperimentState.File);
        var old = JsonSerializer.Deserialize<ExperimentState>(File.ReadAllText(path), JsonOutput.Options)!;
        Assert.Contains(old.Recipe, l => l == "lora_targets=q_proj,v_proj");
        old.Recipe.RemoveAll(l => l.StartsWith("lora_targets="));
        File.WriteAllText(path, JsonSerializer.Serialize(old, JsonOutput.Options));

        Assert.True(ExperimentState.Open(o, baseDir, resume: true, overwrite: false).IsDone("lora"));
        var e = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj"] }, baseDir, resume: true, overwrite: false));
        Assert.Contains("lora_targets", e.Message);
        Assert.Contains("q_proj,k_proj,v_proj,o_proj", e.Message);
    }

    [Fact]
    public void AStateWrittenBeforeTheComparisonResumesAndThenHoldsItsSettings()
    {
        var (o, baseDir) = Setup();
        ExperimentState.Open(o, baseDir, resume: false, overwrite: false).Complete("lora", o.OutputDirectory, 10);
        // The state file as a run begun before the comparison wrote it: no comparison lines, no comparison rows.
        string path = Path.Combine(o.OutputDirectory, ExperimentState.File);
        var old = JsonSerializer.Deserialize<ExperimentState>(File.ReadAllText(path), JsonOutput.Options)!;
        old.Recipe.RemoveAll(l => l.StartsWith("compare_") || l.StartsWith("latency="));
        var json = JsonSerializer.SerializeToNode(old, JsonOutput.Options)!.AsObject();
        json.Remove("comparison");
        File.WriteAllText(path, json.ToJsonString());

        var resumed = ExperimentState.Open(o, baseDir, resume: true, overwrite: false);
        Assert.True(resumed.IsDone("lora"));
        Assert.Empty(resumed.Comparison);
        Assert.Contains(resumed.Recipe, l => l == "compare_methods=bitfit,ia3,adapter-houlsby-rf16,prompt-tuning");
        resumed.Comparison.Add(Row("ia3", null, 10, 100, 9));
        resumed.Complete("compare:ia3", o.OutputDirectory, 20);

        // Once recorded, the comparison's settings are checked like the others.
        var changed = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { Comparison = [new("bitfit")] }, baseDir, resume: true, overwrite: false));
        Assert.Contains("compare_methods", changed.Message);
        var latency = Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { Latency = new(Steps: 8, Repeats: 9) }, baseDir, resume: true, overwrite: false));
        Assert.Contains("expected latency=steps8,repeats3,batches1/32, got latency=steps8,repeats9,batches1/32", latency.Message);
        var back = ExperimentState.Open(o, baseDir, resume: true, overwrite: false);
        Assert.Equal(9, back.Comparison.Single().LatencyMsB1Merged);
        Assert.True(back.IsDone("compare:ia3"));
    }

    [Fact]
    public void MethodsAddedToTheComparisonResumeKeepingTheRowsAndRemeasuringPairedLatency()
    {
        var (o, baseDir) = Setup();
        o = o with { Comparison = [new("bitfit"), new("ia3")] };
        var state = ExperimentState.Open(o, baseDir, resume: false, overwrite: false);
        state.Comparison.Add(Row("bitfit", null, 10, 100));
        state.Complete("compare:bitfit", o.OutputDirectory, 10);
        state.Complete("compare:ia3", o.OutputDirectory, 20);
        state.Complete(ExperimentState.PairedLatencyUnit, o.OutputDirectory, 30);

        // A method added between and one after the recorded ones: both run, the finished rows stay, the paired unit runs again.
        var grown = o with { Comparison = [new("bitfit"), new("selective", Layers: [5]), new("ia3"), new("adapter-pfeiffer", ReductionFactor: 4)] };
        var resumed = ExperimentState.Open(grown, baseDir, resume: true, overwrite: false);
        Assert.True(resumed.IsDone("compare:bitfit") && resumed.IsDone("compare:ia3"));
        Assert.False(resumed.IsDone("compare:selective-layers5"));
        Assert.False(resumed.IsDone(ExperimentState.PairedLatencyUnit));
        Assert.Equal(10, resumed.Comparison.Single().LatencyMsB1);
        Assert.Contains(resumed.Recipe, l => l == "compare_methods=bitfit,selective-layers5,ia3,adapter-pfeiffer-rf4");
        resumed.Complete("compare:selective-layers5", o.OutputDirectory, 40);

        // Dropping or reordering a recorded method is a change of settings, refused as before.
        foreach (var other in new List<ComparisonEntry>[] { [new("bitfit")], [new("ia3"), new("bitfit"), new("selective", Layers: [5]), new("adapter-pfeiffer", ReductionFactor: 4)] })
            Assert.Contains("compare_methods", Assert.Throws<ArgumentException>(() => ExperimentState.Open(o with { Comparison = other }, baseDir, resume: true, overwrite: false)).Message);
        Assert.True(ExperimentState.Open(grown, baseDir, resume: true, overwrite: false).IsDone("compare:selective-layers5"));
    }

    [Theory]
    [InlineData("selective:5", "selective", null, "5")]
    [InlineData("selective:4_5", "selective", null, "4,5")]
    [InlineData("adapter-pfeiffer:4", "adapter-pfeiffer", 4, null)]
    [InlineData("ia3", "ia3", null, null)]
    public void CompareSpellsEachMethodAndSize(string text, string method, int? factor, string? layers)
    {
        var entry = ExperimentCommand.ParseComparison(text);
        Assert.Equal(method, entry.Method);
        Assert.Equal(factor, entry.ReductionFactor);
        Assert.Equal(layers, entry.Layers == null ? null : string.Join(',', entry.Layers));
        Assert.Equal(text, entry.Option);
    }

    [Theory]
    [InlineData("selective", "selective:LAYERS")]
    [InlineData("selective:x", "integers ≥ 0")]
    [InlineData("selective:-1", "integers ≥ 0")]
    [InlineData("ia3:4", "NAME:FACTOR")]
    public void CompareRefusesAMalformedEntryNamingIt(string text, string expected)
    {
        var e = Assert.Throws<ArgumentException>(() => ExperimentCommand.ParseComparison(text));
        Assert.Contains($"'{text}'", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void TheDefaultComparisonNamesEveryFamilyAndEachSpellingParsesBack()
    {
        Assert.Contains(ComparisonEntry.Defaults, e => e.Method == "selective" && e.Layers is [5]);
        foreach (var entry in ComparisonEntry.Defaults) Assert.Equal(entry, ExperimentCommand.ParseComparison(entry.Option), new EntryComparer());
    }

    sealed class EntryComparer : IEqualityComparer<ComparisonEntry>
    {
        public bool Equals(ComparisonEntry? a, ComparisonEntry? b) => a!.Key == b!.Key;
        public int GetHashCode(ComparisonEntry e) => e.Key.GetHashCode();
    }

    [Fact]
    public void ResultsJsonAndMarkdownCarryTheComparisonWithLatencyAgainstTheBase()
    {
        var (o, _) = Setup();
        var rows = new[] { Row("base", null, 100, 1000), Row("adapter-houlsby", "factor 16", 125, 1100), Row("lora", "r=8", 110, 1050, mergedB1: 100) };
        new ExperimentReport(o, [], new Dictionary<string, List<float>>(), TimeSpan.FromSeconds(3), comparison: rows).Write();
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(o.OutputDirectory, ExperimentJson.File)));
        var comparison = doc.RootElement.GetProperty("comparison");
        Assert.Equal(["base", "adapter-houlsby", "lora"], comparison.EnumerateArray().Select(r => r.GetProperty("method").GetString()));
        var houlsby = comparison[1];
        Assert.Equal(125, houlsby.GetProperty("latency_ms_b1").GetDouble());
        Assert.Equal(1100, houlsby.GetProperty("latency_ms_b32").GetDouble());
        Assert.Equal(JsonValueKind.Null, houlsby.GetProperty("latency_ms_b1_merged").ValueKind);
        Assert.Equal("factor 16", houlsby.GetProperty("size").GetString());
        Assert.Equal(4096, houlsby.GetProperty("file_bytes").GetInt64());
        Assert.Equal(0.2, houlsby.GetProperty("rougeL").GetDouble());

        var md = File.ReadAllText(Path.Combine(o.OutputDirectory, "results.md"));
        Assert.Contains("## PEFT methods compared", md);
        Assert.Contains("| adapter-houlsby | factor 16 |", md);
        Assert.Contains("| 125 (+25%) | 1100 (+10%) | — | — |", md);   // unmerged against the base; adapters cannot merge
        Assert.Contains("| 110 (+10%) | 1050 (+5%) | 100 (+0%) | 400 (-60%) |", md);
    }

    // Runs take turns: after one warm-up each, every round times each run once, the order rotating, so no run always
    // follows the same other one; each run gets Repeats samples per batch size, and Medians pools several measurements.
    [Fact]
    public void InterleavedRunsTakeTurnsRoundByRound()
    {
        var log = new List<string>();
        LatencyRun Run(string name, int available) => new(available, "texts", batch => () => log.Add($"{name}{batch}"));
        var samples = LatencyProbe.Interleaved(new LatencySettings(Repeats: 3, Batches: [1, 2]), [Run("a", 2), Run("b", 2), Run("c", 2)]);
        Assert.Equal(["a1", "b1", "c1", "a1", "b1", "c1", "b1", "c1", "a1", "c1", "a1", "b1",
                      "a2", "b2", "c2", "a2", "b2", "c2", "b2", "c2", "a2", "c2", "a2", "b2"], log);
        Assert.All(samples, s => Assert.Equal([3, 3], new[] { s[1].Count, s[2].Count }));
        var e = Assert.Throws<ArgumentException>(() => LatencyProbe.Interleaved(new LatencySettings(Repeats: 1, Batches: [2]), [Run("a", 2), Run("b", 1)]));
        Assert.Contains("batch 2 needs 2 texts, got 1", e.Message);

        var pooled = LatencyProbe.Medians(new Dictionary<int, List<double>> { [1] = [1, 9, 2] }, null, new Dictionary<int, List<double>> { [1] = [3, 4] });
        Assert.Equal(3.0, pooled[1]);   // the median of 1, 2, 3, 4, 9
    }

    [Fact]
    public void LatencyProbeMeasuresEachBatchSizeOnTheSameInputsAndRefusesTooFewSources()
    {
        Assert.Equal(2.0, Nanolora.Transformer.Stats.Median([3.0, 1.0, 2.0]));
        Assert.Equal(2.5, Nanolora.Transformer.Stats.Median([4.0, 1.0, 2.0, 3.0]));
        var (model, tokenizer) = Checkpoint.Load(CliTests.ShippedBase(), Device.Get("cpu"));
        using (model)
        {
            var sources = new[] { "a tool to list files", "library for parsing xml" }.Select(s => tokenizer.EncodeSource(s, 32)).ToList();
            var ms = LatencyProbe.Measure(model, sources, new LatencySettings(Steps: 2, Repeats: 1, Batches: [1, 2]));
            Assert.Equal([1, 2], ms.Keys.Order());
            Assert.All(ms.Values, v => Assert.True(double.IsFinite(v)));
            var e = Assert.Throws<ArgumentException>(() => LatencyProbe.Measure(model, sources, new LatencySettings(Steps: 2, Repeats: 1, Batches: [3])));
            Assert.Contains("batch 3 needs 3 sources, got 2", e.Message);
        }
    }
}
