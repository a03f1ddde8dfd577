using Nanolora.Cli;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>
/// The retrieval table's PEFT comparison on all-MiniLM-L6-v2, end to end at a tiny budget (2 steps of 4 pairs, 8 test
/// pairs): every method gets a row with its own parameter count, a saved adapter that loads back onto a fresh MiniLM and
/// gives the trained model's embeddings, latency unmerged and — only where the method merges — merged.
/// </summary>
public class RetrievalComparisonTests
{
    [Fact]
    public void EveryMethodGetsARowAnAdapterThatReloadsAndLatencyWhereItApplies()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var o = new RetrievalOptions
        {
            Steps = 2, BatchSize = 4, MaxSourceTokens = 16, TestPairs = 8, ValidationPairs = 4, FullLearningRates = [2e-5f], LoraLearningRates = [3e-4f],
            Comparison = [new("ia3"), new("adapter-pfeiffer", ReductionFactor: 16)], Latency = new(Repeats: 1, Batches: [1, 4]),
        };
        var experiment = new RetrievalExperiment(o, dir, Device.Cpu);
        experiment.Run();

        Assert.Equal(["base", "full", "lora", "lora", "ia3", "adapter-pfeiffer"], experiment.Rows.Select(r => r.Method));
        var rows = experiment.Rows.ToDictionary(r => r.Method + (r.Targets ?? ""));
        Assert.True(rows.Values.All(r => r.LatencyMsB1 > 0 && r.LatencyMsB32 == null));   // batch 32 was not asked for
        Assert.True(rows.Values.Where(r => r.Method != "base").All(r => r.PairedBaseMsB1 > 0));   // the base measured beside each row
        Assert.Null(rows["base"].PairedBaseMsB1);
        Assert.True(rows["ia3"].LatencyMsB1Merged > 0);                   // (IA)³ folds into the weights
        Assert.Null(rows["adapter-pfeifferfactor 16"].LatencyMsB1Merged);  // a bottleneck adapter cannot
        Assert.Null(rows["full"].LatencyMsB1Merged);
        // (IA)³ on BERT rescales key, value and the feed-forward output's input in each of the 6 layers: 384 + 384 + 1536.
        Assert.Equal(6 * (384 + 384 + 1536), rows["ia3"].TrainableParams);
        // Pfeiffer: one bottleneck per layer after the feed-forward block, 384 → 24 → 384 with biases.
        Assert.Equal(6 * (384 * 24 + 24 + 24 * 384 + 384), rows["adapter-pfeifferfactor 16"].TrainableParams);
        Assert.All(experiment.Rows.Skip(1), r => Assert.True(r.StepMs > 0 && r.PeakBytes > 0));

        // The saved (IA)³ vectors reload onto a fresh MiniLM and change its embeddings (a trained method is not the identity).
        var (fresh, tokenizer) = PretrainedBert.LoadMiniLm(Device.Cpu);
        using (fresh)
        {
            string[] texts = ["a library for parsing XML", "command line tool to convert images"];
            var before = SentenceEmbedder.Embed(fresh, tokenizer, texts);
            var method = PeftRecipes.Load(fresh, Path.Combine(dir, "adapters", "minilm-ia3"), "test");
            Assert.True(method.CanMerge);
            var after = SentenceEmbedder.Embed(fresh, tokenizer, texts);
            Assert.NotEqual(before[0], after[0]);
        }
        Assert.True(File.Exists(Path.Combine(dir, "adapters", "minilm-adapter-pfeiffer-rf16", AdapterFiles.WeightsFile)));
        Assert.True(File.Exists(Path.Combine(dir, "adapters", "minilm-qv-r8", AdapterFiles.WeightsFile)));

        var md = experiment.Markdown();
        Assert.Contains("| ia3 |", md);
        Assert.Contains("| adapter-pfeiffer |", md);
        Assert.Contains("- ia3:", md);
        Assert.Contains(ExperimentReport.RetrievalPlotFile, md);
        new ExperimentReport(ExperimentOptions.Defaults(true, dir), [], new Dictionary<string, List<float>>(), TimeSpan.Zero, retrieval: experiment).Write();
        Assert.True(new FileInfo(Path.Combine(dir, ExperimentReport.RetrievalPlotFile)).Length > 10_000);
        // results.json names the retrieval rows' fields as the seq2seq comparison does (docs/cli-json.md).
        var jsonRows = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, ExperimentJson.File))).RootElement.GetProperty("retrieval").GetProperty("rows").EnumerateArray().ToList();
        Assert.Equal(["base", "full", "lora", "lora", "ia3", "adapter-pfeiffer"], jsonRows.Select(r => r.GetProperty("method").GetString()));
        Assert.All(jsonRows, r => Assert.True(r.GetProperty("latency_ms_b1").GetDouble() > 0));
        Assert.True(jsonRows[4].GetProperty("latency_ms_b1_merged").GetDouble() > 0);
        Assert.Equal(System.Text.Json.JsonValueKind.Null, jsonRows[5].GetProperty("latency_ms_b1_merged").ValueKind);

        // The folder now holds a retrieval state: a fresh run refuses it, a resume with other settings refuses naming them.
        Assert.Contains("--resume", Assert.Throws<ArgumentException>(() => new RetrievalExperiment(o, dir, Device.Cpu).Run()).Message);
        Assert.Contains("retrieval settings differ", Assert.Throws<ArgumentException>(() => new RetrievalExperiment(o with { Steps = 3 }, dir, Device.Cpu, resume: true).Run()).Message);

        // A run stopped inside the last method resumes with the finished ones kept as measured and only that one run again.
        string statePath = Path.Combine(dir, RetrievalState.File);
        var state = System.Text.Json.JsonSerializer.Deserialize<RetrievalState>(File.ReadAllText(statePath), Nanolora.Cli.Output.JsonOutput.Options)!;
        Assert.Equal(["base", "full", "lora r=8 (query,value)", "lora r=8 (all-linear)", "ia3", "adapter-pfeiffer-rf16"], state.Done);
        state.Done.Remove("adapter-pfeiffer-rf16");
        state.Rows.RemoveAll(r => r.Method == "adapter-pfeiffer");
        File.WriteAllText(statePath, System.Text.Json.JsonSerializer.Serialize(state, Nanolora.Cli.Output.JsonOutput.Options));
        var resumed = new RetrievalExperiment(o, dir, Device.Cpu, resume: true);
        resumed.Run();
        Assert.Equal(experiment.Rows.Select(r => r.Method), resumed.Rows.Select(r => r.Method));
        for (int i = 0; i < 5; i++) Assert.Equal(experiment.Rows[i].LatencyMsB1, resumed.Rows[i].LatencyMsB1);   // kept, not measured again
        Assert.Equal(experiment.Rows[5].TrainableParams, resumed.Rows[5].TrainableParams);
        Assert.NotEqual(experiment.Rows[5].LatencyMsB1, resumed.Rows[5].LatencyMsB1);                            // measured again

        // The paired re-measurement is no setting of any row's training: a finished run resumes into it, and it measures
        // every saved method again from its files (full fine-tuning saves no model and keeps its numbers).
        var again = new RetrievalExperiment(o with { PairedLatency = true }, dir, Device.Cpu, resume: true);
        again.Run();
        var final = System.Text.Json.JsonSerializer.Deserialize<RetrievalState>(File.ReadAllText(statePath), Nanolora.Cli.Output.JsonOutput.Options)!;
        Assert.Equal(RetrievalExperiment.PairedLatencyUnit, final.Done[^1]);
        Assert.Equal(resumed.Rows[1].LatencyMsB1, again.Rows[1].LatencyMsB1);   // full: kept
        for (int i = 2; i < 6; i++)
        {
            Assert.NotEqual(resumed.Rows[i].LatencyMsB1, again.Rows[i].LatencyMsB1);
            Assert.True(again.Rows[i].PairedBaseMsB1 > 0);
        }
        Assert.True(again.Rows[4].LatencyMsB1Merged > 0);   // (IA)³ merges; the adapter row does not
        Assert.Null(again.Rows[5].LatencyMsB1Merged);
    }
}
