using Nanolora.Lora;
using Nanolora.Lora.Selective;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// The experiment's PEFT comparison (issue #14): on the same base, task, data order, step budget and seed as the full and
/// LoRA rows, every <see cref="ExperimentOptions.Comparison"/> method trains, is scored on the same test examples, saves
/// its adapter, and has its inference latency measured (<see cref="LatencyProbe"/>) unmerged and, where it merges,
/// merged — beside the base, the full fine-tuned checkpoint and LoRA r=8 (unmerged and merged), whose quality and costs
/// are the main table's. Each method is one resumable unit (<c>compare:KEY</c>), run after all the older units.
/// </summary>
internal sealed class PeftComparison(ExperimentOptions o, Device device, ExperimentState state, Action<string, Action> unit,
    Func<string, EvalResult, EvalResult> save, DecodeOptions decode)
{
    /// <summary>
    /// Runs the comparison's units; <paramref name="loraAdapter"/> is the main LoRA row's saved adapter, and
    /// <paramref name="fullCheckpoint"/> gives the fully fine-tuned checkpoint's folder (rebuilding it when absent).
    /// </summary>
    public void Run(TaskData debian, IReadOnlyList<Example> test, IReadOnlyList<Example> validation, string baseDir, FineTuneOptions recipe, string loraAdapter,
        Func<string> fullCheckpoint)
    {
        long total = state.BaseParameters;
        // The latency inputs: 32 (the largest batch) test sources spread over the split, the same for every row.
        var latencyExamples = TaskData.Spread(debian.Test, o.Latency.BatchSizes.Max());
        int maxSource = Lengths.For("debian").Source;

        unit("compare:base", () => WithBase(baseDir, (model, tokenizer) =>
            Add(Main("base"), null, Latency(model, tokenizer, latencyExamples, maxSource, "base"), null, null)));
        unit("compare:full", () =>
        {
            string dir = fullCheckpoint();
            var (model, tokenizer) = Checkpoint.Load(dir, device);
            using (model) Add(Main("full"), null, Latency(model, tokenizer, latencyExamples, maxSource, "full"), null, Bytes(Path.Combine(dir, Checkpoint.WeightsFile)));
        });
        unit("compare:lora", () => WithBase(baseDir, (model, tokenizer) =>
        {
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, loraAdapter, "debian");
            lora.SetActiveAdapter("debian");
            var unmerged = Latency(model, tokenizer, latencyExamples, maxSource, "LoRA r=8 unmerged");
            lora.Merge();
            var merged = Latency(model, tokenizer, latencyExamples, maxSource, "LoRA r=8 merged");
            Add(Main("lora"), $"r={Main("lora").Rank}", unmerged, merged, Bytes(Path.Combine(loraAdapter, AdapterFiles.WeightsFile)));
        }));

        foreach (var entry in o.Comparison)
        {
            var spec = PeftRecipes.Find(entry.Method) ?? throw new ArgumentException($"experiment: comparison method '{entry.Method}' is not one of {string.Join(", ", PeftRecipes.Names)}.");
            var options = recipe with { Method = entry.Method, ReductionFactor = entry.ReductionFactor ?? PeftRecipes.DefaultReductionFactor, Layers = entry.Layers };
            float rate = ChooseRate(entry, spec, options, debian, validation, baseDir);
            unit($"compare:{entry.Key}", () => WithBase(baseDir, (model, tokenizer) =>
            {
                var (result, method) = Workflows.FineTunePeft(model, tokenizer, debian, options with { LearningRate = rate }, $"compare {entry.Key}");
                var eval = save($"compare-{entry.Key}", Workflows.Evaluate(model, tokenizer, "debian", test, decode, $"{entry.Key}: evaluating"));
                string dir = Path.Combine(o.OutputDirectory, "adapters", $"compare-{entry.Key}");
                method.Save("default", dir);
                var unmerged = Latency(model, tokenizer, latencyExamples, maxSource, $"{entry.Key} unmerged");
                // Selective methods train the base's own weights: merged is the same graph, nothing to measure twice.
                IReadOnlyDictionary<int, double>? merged = null;
                if (method.CanMerge && method is not SelectiveModel)
                {
                    method.Merge();
                    merged = Latency(model, tokenizer, latencyExamples, maxSource, $"{entry.Key} merged");
                }
                var row = ResultRow.Of(entry.Method, "debian", 0, eval.Rouge, result, 0, total, 0, test.Count, options.Steps) with { LearningRate = rate };
                Add(row, entry.Size, unmerged, merged, Bytes(Path.Combine(dir, AdapterFiles.WeightsFile)));
            }));
        }
        if (o.PairedLatency)
            unit(ExperimentState.PairedLatencyUnit, () => PairedLatency(baseDir, loraAdapter, latencyExamples, maxSource));
    }

    /// <summary>
    /// Re-measures every trained row's latency (LoRA and the comparison's methods, loaded from their saved files) each
    /// right after the base's on the same fresh load, and records that base measurement beside it: the difference is then
    /// the method's, not the machine's load an hour apart. Full fine-tuning keeps its one measurement (its checkpoint has
    /// the base's shape, and rebuilding a missing one would retrain it).
    /// </summary>
    void PairedLatency(string baseDir, string loraAdapter, IReadOnlyList<Example> examples, int maxSource)
    {
        for (int i = 0; i < state.Comparison.Count; i++)
        {
            var row = state.Comparison[i];
            if (row.Method is "base" or "full") continue;
            WithBase(baseDir, (model, tokenizer) =>
            {
                var paired = Latency(model, tokenizer, examples, maxSource, $"base, before {row.Method}");
                Action? merge;
                if (row.Method == "lora")
                {
                    var lora = LoraModel.For(model);
                    AdapterFiles.Load(lora, loraAdapter, "debian");
                    lora.SetActiveAdapter("debian");
                    merge = () => lora.Merge();
                }
                else
                {
                    var key = o.Comparison.FirstOrDefault(e => e.Method == row.Method && e.Size == row.Size)?.Key
                        ?? throw new InvalidOperationException($"experiment: comparison row {row.Method} {row.Size} has no entry in the comparison's methods.");
                    var method = PeftRecipes.Load(model, Path.Combine(o.OutputDirectory, "adapters", $"compare-{key}"), "experiment");
                    merge = method.CanMerge && method is not SelectiveModel ? () => method.Merge() : null;
                }
                var unmerged = Latency(model, tokenizer, examples, maxSource, $"{row.Method} {row.Size} unmerged (paired)");
                IReadOnlyDictionary<int, double>? merged = null;
                if (merge != null) { merge(); merged = Latency(model, tokenizer, examples, maxSource, $"{row.Method} {row.Size} merged (paired)"); }
                state.Comparison[i] = row with
                {
                    LatencyMsB1 = LatencyProbe.At(unmerged, 1), LatencyMsB32 = LatencyProbe.At(unmerged, 32), LatencyMsB1Merged = LatencyProbe.At(merged, 1), LatencyMsB32Merged = LatencyProbe.At(merged, 32),
                    PairedBaseMsB1 = LatencyProbe.At(paired, 1), PairedBaseMsB32 = LatencyProbe.At(paired, 32),
                };
            });
        }
    }


    /// <summary>The rate among the method's default × <see cref="ExperimentOptions.CompareRateFactors"/> whose short run scores best ROUGE-1 on validation.</summary>
    float ChooseRate(ComparisonEntry entry, PeftRecipe spec, FineTuneOptions options, TaskData data, IReadOnlyList<Example> validation, string baseDir)
    {
        var rates = o.CompareRateFactors.Select(f => spec.LearningRate * f).ToList();
        if (rates.Count == 1) return rates[0];
        foreach (float rate in rates)
            unit($"sweep:{entry.Key}:{rate.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}", () => WithBase(baseDir, (model, tokenizer) =>
            {
                Workflows.FineTunePeft(model, tokenizer, data, options with { LearningRate = rate, Steps = o.SweepSteps }, $"sweep {entry.Key} lr {rate:G3}");
                var e = Workflows.Evaluate(model, tokenizer, data.Name, validation, decode, $"sweep {entry.Key} lr {rate:G3}: validation");
                state.Sweep.Add(new RougeSweepPoint(entry.Key, rate, e.Rouge.Rouge1.F, o.SweepSteps, validation.Count));
            }));
        var best = state.Sweep.Where(p => p.Method == entry.Key).MaxBy(p => p.ValidationRouge1)!;
        Output.Terminal.Status($"{entry.Key}: learning rate {best.LearningRate:G3} (validation ROUGE-1 {best.ValidationRouge1:F4})");
        return best.LearningRate;
    }

    void WithBase(string baseDir, Action<Seq2SeqTransformer, ISeq2SeqTokenizer> work)
    {
        var (model, tokenizer) = Checkpoint.Load(baseDir, device);
        using (model) work(model, tokenizer);
    }

    /// <summary>The main table's Debian row of <paramref name="method"/> (base, full, lora), which an earlier unit measured.</summary>
    ResultRow Main(string method) => state.Rows.FirstOrDefault(r => r.Method == method && r.Task == "debian")
        ?? throw new InvalidOperationException($"experiment: the comparison needs the '{method}' row of the main table, which is missing from the state.");

    IReadOnlyDictionary<int, double> Latency(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, IReadOnlyList<Example> examples, int maxSource, string what)
    {
        var sources = examples.Select(e => tokenizer.EncodeSource(e.Source, maxSource)).ToList();
        var ms = LatencyProbe.Measure(model, sources, o.Latency);
        Output.Terminal.Status($"latency {what}: {string.Join(", ", ms.Select(kv => $"batch {kv.Key} {kv.Value:F0} ms"))} (median of {o.Latency.Repeats}, {o.Latency.Steps} greedy steps)");
        return ms;
    }

    void Add(ResultRow row, string? size, IReadOnlyDictionary<int, double> latency, IReadOnlyDictionary<int, double>? merged, long? fileBytes) =>
        state.Comparison.Add(ComparisonRow.From(row, size, latency, merged, fileBytes));

    static long Bytes(string path) => new FileInfo(path).Length;
}
