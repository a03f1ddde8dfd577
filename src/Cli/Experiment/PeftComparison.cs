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
            using (model) Add(Main("full"), null, Paired(baseDir, model, tokenizer, latencyExamples, maxSource, "full", null), Bytes(Path.Combine(dir, Checkpoint.WeightsFile)));
        });
        unit("compare:lora", () => WithBase(baseDir, (model, tokenizer) =>
        {
            var lora = LoraModel.For(model);
            AdapterFiles.Load(lora, loraAdapter, "debian");
            lora.SetActiveAdapter("debian");
            Add(Main("lora"), $"r={Main("lora").Rank}", Paired(baseDir, model, tokenizer, latencyExamples, maxSource, "LoRA r=8", () => lora.Merge()),
                Bytes(Path.Combine(loraAdapter, AdapterFiles.WeightsFile)));
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
                var latency = Paired(baseDir, model, tokenizer, latencyExamples, maxSource, entry.Key, MergeOf(method));
                var row = ResultRow.Of(entry.Method, "debian", 0, eval.Rouge, result, 0, total, 0, test.Count, options.Steps) with { LearningRate = rate };
                Add(row, entry.Size, latency, Bytes(Path.Combine(dir, AdapterFiles.WeightsFile)));
            }));
        }
        if (o.PairedLatency)
            unit(ExperimentState.PairedLatencyUnit, () => PairedLatency(baseDir, loraAdapter, latencyExamples, maxSource));
        if (o.StepTimeSteps > 0)
            unit(ExperimentState.StepTimeUnit, () => StepTimes(debian, baseDir, recipe));
    }

    /// <summary>
    /// Times every trained row's training step again in one sitting — full fine-tuning, LoRA and each method, in turn on a
    /// fresh load, <see cref="ExperimentOptions.StepTimeSteps"/> steps of the same batches at the row's rate, the whole list
    /// twice (forward, then backward, so drift in the machine's load falls on both ends alike) — and records the median of
    /// each row's steps as <c>step_ms_same_sitting</c>. The rows' own step times come from their training runs, which a long
    /// experiment spreads over days and machines; these are comparable with each other.
    /// </summary>
    void StepTimes(TaskData debian, string baseDir, FineTuneOptions recipe)
    {
        var trained = Enumerable.Range(0, state.Comparison.Count).Where(i => state.Comparison[i].Method != "base").ToList();
        var samples = trained.ToDictionary(i => i, _ => new List<double>());
        foreach (int i in trained.Concat(Enumerable.Reverse(trained)))
        {
            var row = state.Comparison[i];
            var options = recipe with { Steps = o.StepTimeSteps, LearningRate = row.LearningRate ?? recipe.LearningRate, WarmupSteps = 1 };
            WithBase(baseDir, (model, tokenizer) =>
            {
                string title = $"step time {row.Method} {row.Size}".Trim();
                TrainResult result = row.Method switch
                {
                    "full" => Workflows.FineTune(model, tokenizer, debian, options with { Method = "full", FullLearningRate = options.LearningRate }, baseDir, title: title).Result,
                    "lora" => Workflows.FineTune(model, tokenizer, debian, options with { Method = "lora" }, baseDir, title: title).Result,
                    _ => Workflows.FineTunePeft(model, tokenizer, debian, EntryOptions(row, options), title).Result,
                };
                samples[i].AddRange(result.StepMilliseconds);   // the first step (the pool's buffers being built) is not among them
            });
        }
        foreach (int i in trained)
            state.Comparison[i] = state.Comparison[i] with { StepMsSameSitting = Nanolora.Transformer.Stats.Median(samples[i]) };
    }

    /// <summary>The comparison entry a row came from (its method and size).</summary>
    ComparisonEntry EntryOf(ComparisonRow row) => o.Comparison.FirstOrDefault(e => e.Method == row.Method && e.Size == row.Size)
        ?? throw new InvalidOperationException($"experiment: comparison row {row.Method} {row.Size} has no entry in the comparison's methods.");

    /// <summary>The fine-tuning options of the comparison entry a row came from.</summary>
    FineTuneOptions EntryOptions(ComparisonRow row, FineTuneOptions options)
    {
        var entry = EntryOf(row);
        return options with { Method = entry.Method, ReductionFactor = entry.ReductionFactor ?? PeftRecipes.DefaultReductionFactor, Layers = entry.Layers };
    }

    /// <summary>
    /// Re-measures every trained row's latency (LoRA and the comparison's methods, loaded from their saved files) as
    /// <see cref="Paired"/> does, for rows of a run begun before each unit measured its row that way (their base came
    /// hours earlier, under other load). Full fine-tuning keeps its measurement (rebuilding a missing checkpoint would retrain it).
    /// </summary>
    void PairedLatency(string baseDir, string loraAdapter, IReadOnlyList<Example> examples, int maxSource)
    {
        for (int i = 0; i < state.Comparison.Count; i++)
        {
            var row = state.Comparison[i];
            if (row.Method is "base" or "full") continue;
            WithBase(baseDir, (model, tokenizer) =>
            {
                string dir = row.Method == "lora" ? loraAdapter : Path.Combine(o.OutputDirectory, "adapters", "compare-" + EntryOf(row).Key);
                var merge = LoadSaved(model, row.Method == "lora", dir, "experiment");
                var m = Paired(baseDir, model, tokenizer, examples, maxSource, $"{row.Method} {row.Size}".Trim(), merge);
                state.Comparison[i] = row with
                {
                    LatencyMsB1 = LatencyProbe.At(m.Unmerged, 1), LatencyMsB32 = LatencyProbe.At(m.Unmerged, 32), LatencyMsB1Merged = LatencyProbe.At(m.Merged, 1),
                    LatencyMsB32Merged = LatencyProbe.At(m.Merged, 32), PairedBaseMsB1 = LatencyProbe.At(m.Base, 1), PairedBaseMsB32 = LatencyProbe.At(m.Base, 32),
                };
            });
        }
    }

    /// <summary>How a trained method folds into the weights for the merged latency; null where it cannot, or (selective methods) where merged is the same graph.</summary>
    internal static Action? MergeOf(IPeftMethod method) => method.CanMerge && method is not SelectiveModel ? () => method.Merge() : null;

    /// <summary>
    /// Puts a saved method back on <paramref name="model"/> for a latency re-measurement — a LoRA adapter (as instance
    /// "debian", active) or any other method by its peft_type — and returns how to merge it (<see cref="MergeOf"/>).
    /// </summary>
    internal static Action? LoadSaved(Nanolora.Autograd.Module model, bool lora, string dir, string option)
    {
        if (!lora) return MergeOf(PeftRecipes.Load(model, dir, option));
        var adapters = LoraModel.For(model);
        AdapterFiles.Load(adapters, dir, "debian");
        adapters.SetActiveAdapter("debian");
        return () => adapters.Merge();
    }

    /// <summary>
    /// Measures <paramref name="model"/> beside a freshly loaded base (<see cref="LatencyProbe.Paired"/>), unmerged and,
    /// after <paramref name="merge"/>, merged.
    /// </summary>
    PairedLatency Paired(string baseDir, Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, IReadOnlyList<Example> examples, int maxSource, string what, Action? merge)
    {
        var sources = examples.Select(e => tokenizer.EncodeSource(e.Source, maxSource)).ToList();
        var (baseModel, _) = Checkpoint.Load(baseDir, device);
        using (baseModel)
        {
            var result = LatencyProbe.Paired(o.Latency, LatencyProbe.DecoderRun(baseModel, sources, o.Latency), LatencyProbe.DecoderRun(model, sources, o.Latency), merge);
            Output.Terminal.Status($"latency {what}: {result} (medians of {o.Latency.Repeats} interleaved runs, {o.Latency.Steps} greedy steps)");
            return result;
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

    void Add(ResultRow row, string? size, PairedLatency latency, long? fileBytes) =>
        state.Comparison.Add(ComparisonRow.From(row, size, latency.Unmerged, latency.Merged, fileBytes) with
            { PairedBaseMsB1 = LatencyProbe.At(latency.Base, 1), PairedBaseMsB32 = LatencyProbe.At(latency.Base, 32) });

    static long Bytes(string path) => new FileInfo(path).Length;
}
