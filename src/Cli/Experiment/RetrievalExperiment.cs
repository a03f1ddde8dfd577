using System.Diagnostics;
using System.Text;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>One learning rate tried for a method, scored on the validation split.</summary>
public sealed record SweepPoint(string Method, float LearningRate, double? ValidationRecallAt1, string? Note = null);

/// <summary>
/// One row of the retrieval table: a method's test scores and costs. <c>Targets</c> holds LoRA's targets or a PEFT method's
/// size ("factor 16"; null for base and full). Latency: median milliseconds to embed 1 and 32 queries
/// (<see cref="LatencyProbe.EncoderRun"/>), the method as trained and, where it folds into the weights (LoRA, (IA)³,
/// LN tuning), merged; null where not measured. <c>PairedBaseMsB1</c>/<c>B32</c>: the untouched MiniLM's latency measured
/// interleaved with the row's own (a fresh load, the two taking turns run by run), which the row's change is computed
/// against, so that load drifting over a long run does not pass for a method's cost.
/// </summary>
public sealed record RetrievalRow(string Method, int? Rank, string? Targets, float? LearningRate, double RecallAt1, double RecallAt10, double Mrr,
    int Queries, int Candidates, long TrainableParams, double TrainablePercent, long? OptimizerStateBytes, long? PeakBytes,
    IReadOnlyDictionary<string, long>? PeakBytesByCategory, double? StepMs, long? AdapterBytes, int? Steps,
    double? LatencyMsB1 = null, double? LatencyMsB32 = null, double? LatencyMsB1Merged = null, double? LatencyMsB32Merged = null,
    double? PairedBaseMsB1 = null, double? PairedBaseMsB32 = null);

/// <summary>Settings of <see cref="RetrievalExperiment"/>.</summary>
public sealed record RetrievalOptions
{
    /// <summary>Training steps per method.</summary>
    public int Steps { get; init; }
    /// <summary>Pairs per batch (the in-batch negatives).</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Descriptions are cut to this many word pieces.</summary>
    public int MaxSourceTokens { get; init; } = 128;
    /// <summary>Test pairs scored (0: the whole split, 3,240 queries against its distinct synopses).</summary>
    public int TestPairs { get; init; }
    /// <summary>Validation pairs scored per learning rate in the sweep (0: the whole split).</summary>
    public int ValidationPairs { get; init; }
    /// <summary>Learning rates tried for full fine-tuning on the validation split.</summary>
    public IReadOnlyList<float> FullLearningRates { get; init; } = [];
    /// <summary>Learning rates tried for LoRA on the validation split.</summary>
    public IReadOnlyList<float> LoraLearningRates { get; init; } = [];
    /// <summary>The PEFT methods trained after LoRA (issue #14's comparison on the pretrained encoder; empty: none).</summary>
    public IReadOnlyList<ComparisonEntry> Comparison { get; init; } = [];
    /// <summary>Each comparison method's learning rates: its recipe's default times these, chosen on validation when more than one.</summary>
    public IReadOnlyList<float> CompareRateFactors { get; init; } = [1f];
    /// <summary>How each row's embedding latency is measured (batch sizes and repeats; decode steps do not apply).</summary>
    public LatencySettings Latency { get; init; } = new(Repeats: 3);
    /// <summary>Seeds data order and dropout for every method.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>
    /// After the last method, measure every saved method's latency again beside an untouched model (unit
    /// <c>latency-paired</c>), all in one sitting. Not part of the recipe a resume checks: it trains nothing, and a run begun
    /// without it takes it on.
    /// </summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public bool PairedLatency { get; init; }

    /// <summary>
    /// The quick budget trains each method once at the learning rate the full run's sweep chose, and leaves the PEFT
    /// comparison to the full run (the main job's 15 minutes hold the seq2seq one); the full run sweeps three rates per
    /// method on the validation split and compares every PEFT family.
    /// </summary>
    public static RetrievalOptions Defaults(bool quick) => quick
        ? new() { Steps = 60, BatchSize = 16, MaxSourceTokens = 64, TestPairs = 500, ValidationPairs = 300, FullLearningRates = [2e-5f], LoraLearningRates = [3e-4f] }
        : new() { Steps = 100, BatchSize = 32, MaxSourceTokens = 64, TestPairs = 0, ValidationPairs = 300, FullLearningRates = [2e-5f, 5e-5f, 1e-4f], LoraLearningRates = [3e-4f, 1e-3f, 3e-3f],
                  Comparison = ComparisonEntry.Defaults, CompareRateFactors = [1f / 3, 1f, 3f], Latency = new(Repeats: 7), PairedLatency = true };
}

/// <summary>
/// The pretrained model's table: all-MiniLM-L6-v2 as a bi-encoder for Debian description → synopsis retrieval,
/// zero-shot vs full fine-tuning vs LoRA (r=8 on query and value, and on every linear layer of the encoder) vs the other
/// PEFT methods of <see cref="RetrievalOptions.Comparison"/>, same data order, steps and seed for each, each method's
/// learning rate picked on the validation split, each row's embedding latency measured unmerged and (where the method
/// folds into the weights) merged.
/// </summary>
public sealed partial class RetrievalExperiment(RetrievalOptions o, string outputDirectory, Device device, bool resume = false, bool overwrite = false)
{
    /// <summary>Every Linear inside the encoder layers (PEFT's "all-linear" less the pooler, which mean pooling never uses).</summary>
    const string AllLinearRegex = @"encoder\.layer\.\d+\..*(query|key|value|dense)";

    RetrievalState _state = new();   // rows, sweep, losses and finished methods: written after each method, read by --resume
    List<string> _latencyTexts = [];
    /// <summary>Each trained row's per-step training losses, by row label.</summary>
    public IReadOnlyDictionary<string, List<float>> Losses => _state.Losses;
    /// <summary>The table's rows, filled by <see cref="Run"/>.</summary>
    public IReadOnlyList<RetrievalRow> Rows => _state.Rows;
    /// <summary>Every learning rate tried, filled by <see cref="Run"/>.</summary>
    public IReadOnlyList<SweepPoint> Sweep => _state.Sweep;

    /// <summary>
    /// What a trained method leaves to do: save its files into a folder of adapters/ called <paramref name="Folder"/> (null:
    /// nothing to save), and fold itself into the weights (null: it cannot).
    /// </summary>
    sealed record Applied(string? Folder, Action<string>? Save, Action? Merge);

    /// <summary>Scores all-MiniLM-L6-v2 zero-shot, then full fine-tuning, LoRA r=8 (query,value and all-linear) and the comparison's methods, each at its best validation learning rate.</summary>
    public void Run()
    {
        _state = RetrievalState.Open(o, outputDirectory, resume, overwrite);
        var debian = TaskData.Load("debian");
        var test = TaskData.Spread(debian.Test, o.TestPairs);
        var validation = TaskData.Spread(debian.Validation, o.ValidationPairs);
        // The latency inputs: as many test queries as the largest batch, spread over the split, the same for every row.
        _latencyTexts = TaskData.Spread(debian.Test, o.Latency.BatchSizes.Max()).Select(e => e.Source).ToList();

        if (!Kept("base"))
        {
            var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
            using (model)
            {
                _state.TotalParameters = model.ParameterCount();
                var zeroShot = Score(model, tokenizer, test, "zero-shot: scoring");
                var baseLatency = Latency(model, tokenizer, "base");
                _state.Rows.Add(new RetrievalRow("base", null, null, null, zeroShot.RecallAt1, zeroShot.RecallAt10, zeroShot.Mrr, zeroShot.Queries, zeroShot.Candidates,
                    0, 0, null, null, null, null, null, null, LatencyProbe.At(baseLatency, 1), LatencyProbe.At(baseLatency, 32)));   // zero-shot: nothing trained, no training cost
            }
            _state.Complete("base", outputDirectory);
        }
        long total = _state.TotalParameters;

        Method("full", "full", null, null, o.FullLearningRates, debian.Train, validation, test, total, m =>
        {
            foreach (var (name, p) in m.NamedParameters()) p.Trainable = !name.StartsWith("pooler.");   // no gradient reaches it
            return new Applied(null, null, null);
        });
        foreach (string targets in new[] { "query,value", "all-linear" })
            Method("lora", $"lora r=8 ({targets})", 8, targets, o.LoraLearningRates, debian.Train, validation, test, total, m =>
            {
                var config = targets == "all-linear"
                    ? new LoraConfig { R = 8, Alpha = 16, Dropout = 0.1f, TargetRegex = AllLinearRegex, TaskType = "FEATURE_EXTRACTION" }
                    : new LoraConfig { R = 8, Alpha = 16, Dropout = 0.1f, TargetModules = targets.Split(','), TaskType = "FEATURE_EXTRACTION" };
                var lora = LoraModel.Inject(m, config, "debian", o.Seed);
                return new Applied($"minilm-{(targets == "all-linear" ? "all-linear" : "qv")}-r8", dir => AdapterFiles.Save(lora, "debian", dir), () => lora.Merge());
            });
        foreach (var entry in o.Comparison)
        {
            var recipe = PeftRecipes.Find(entry.Method) ?? throw new ArgumentException($"retrieval: comparison method '{entry.Method}' is not one of {string.Join(", ", PeftRecipes.Names)}.");
            var options = new FineTuneOptions { Method = entry.Method, ReductionFactor = entry.ReductionFactor ?? PeftRecipes.DefaultReductionFactor, Layers = entry.Layers, Seed = o.Seed };
            Method(entry.Method, entry.Key, null, entry.Size, o.CompareRateFactors.Select(f => recipe.LearningRate * f).ToList(), debian.Train, validation, test, total, m =>
            {
                var method = recipe.Inject(m, options);
                // Selective methods train the base's own weights: merged is the same graph, nothing to measure twice.
                return new Applied($"minilm-{entry.Key}", dir => method.Save("default", dir), PeftComparison.MergeOf(method));
            });
        }
        if (o.PairedLatency && !Kept(PairedLatencyUnit)) PairedLatencyAgain();
    }

    /// <summary>The unit that re-measures every saved method's latency in one sitting.</summary>
    public const string PairedLatencyUnit = "latency-paired";

    /// <summary>
    /// Loads each trained row's saved method (LoRA and the comparison's; full fine-tuning saves no model and runs the
    /// untouched model's graph) onto a fresh MiniLM and measures it again as <see cref="Paired"/> does, one row after
    /// another: rows measured hours apart, or while something else ran, become comparable.
    /// </summary>
    void PairedLatencyAgain()
    {
        for (int i = 0; i < _state.Rows.Count; i++)
        {
            var row = _state.Rows[i];
            if (row.Method is "base" or "full") continue;
            string folder = row.Method == "lora" ? $"minilm-{(row.Targets == "all-linear" ? "all-linear" : "qv")}-r{row.Rank}"
                : "minilm-" + (o.Comparison.FirstOrDefault(e => e.Method == row.Method && e.Size == row.Targets)?.Key
                    ?? throw new InvalidOperationException($"retrieval: row {row.Method} {row.Targets} has no entry in the comparison's methods."));
            string dir = Path.Combine(outputDirectory, "adapters", folder);
            var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
            using (model)
            {
                var merge = PeftComparison.LoadSaved(model, row.Method == "lora", dir, "retrieval");
                var (latency, merged, paired) = Paired(model, tokenizer, Label(row) + " (again)", merge);
                _state.Rows[i] = row with
                {
                    LatencyMsB1 = LatencyProbe.At(latency, 1), LatencyMsB32 = LatencyProbe.At(latency, 32), LatencyMsB1Merged = LatencyProbe.At(merged, 1),
                    LatencyMsB32Merged = LatencyProbe.At(merged, 32), PairedBaseMsB1 = LatencyProbe.At(paired, 1), PairedBaseMsB32 = LatencyProbe.At(paired, 32),
                };
            }
        }
        _state.Complete(PairedLatencyUnit, outputDirectory);
    }

    /// <summary>Whether <paramref name="label"/> finished in an earlier chunk (its rows are kept, and it says so).</summary>
    bool Kept(string label)
    {
        if (!_state.Done.Contains(label)) return false;
        Output.Terminal.Status($"retrieval: '{label}' was done in an earlier run; its rows are kept.");
        return true;
    }

    RetrievalScores Score(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<Example> pairs, string title) =>
        ConsoleProgress.Evaluate(title, pairs.Count, p => Retrieval.Evaluate(model, tokenizer, pairs, o.MaxSourceTokens, 64, p));


    IReadOnlyDictionary<int, double> Latency(BertModel model, BertWordPieceTokenizer tokenizer, string what)
    {
        var ms = LatencyProbe.Medians(LatencyProbe.Interleaved(o.Latency, [LatencyProbe.EncoderRun(model, tokenizer, _latencyTexts, o.MaxSourceTokens)])[0]);
        Output.Terminal.Status($"latency {what}: {string.Join(", ", ms.Select(kv => $"batch {kv.Key} {kv.Value:F0} ms"))} (median of {o.Latency.Repeats})");
        return ms;
    }

    /// <summary>The model as it stands beside an untouched MiniLM (<see cref="LatencyProbe.Paired"/>), unmerged and, after <paramref name="merge"/>, merged.</summary>
    PairedLatency Paired(BertModel m, BertWordPieceTokenizer tok, string label, Action? merge)
    {
        var (untouched, untouchedTokenizer) = PretrainedBert.LoadMiniLm(device);
        using (untouched)
        {
            var result = LatencyProbe.Paired(o.Latency, LatencyProbe.EncoderRun(untouched, untouchedTokenizer, _latencyTexts, o.MaxSourceTokens),
                LatencyProbe.EncoderRun(m, tok, _latencyTexts, o.MaxSourceTokens), merge);
            Output.Terminal.Status($"latency {label}: {result} (medians of {o.Latency.Repeats} interleaved runs)");
            return result;
        }
    }

    /// <summary>
    /// Trains the method (<paramref name="apply"/> puts it on a freshly loaded MiniLM and freezes the rest) at each learning
    /// rate, keeps the one best on validation, scores it on test, saves it and measures its latency, unmerged then merged.
    /// </summary>
    void Method(string method, string label, int? rank, string? targets, IReadOnlyList<float> rates, IReadOnlyList<Example> train,
        IReadOnlyList<Example> validation, IReadOnlyList<Example> test, long total, Func<BertModel, Applied> apply)
    {
        if (Kept(label)) return;
        _state.Sweep.RemoveAll(s => s.Method == label);   // points of a run interrupted inside this method are measured again
        (BertModel Model, BertWordPieceTokenizer Tokenizer, Applied Applied, TrainResult Result, float Lr, double Val)? best = null;
        // With one rate there is nothing to choose: no validation pass.
        foreach (float lr in rates)
        {
            var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
            var applied = apply(model);
            var options = new ContrastiveOptions { Steps = o.Steps, BatchSize = o.BatchSize, LearningRate = lr, MaxSourceTokens = o.MaxSourceTokens, Seed = o.Seed };
            TrainResult result;
            try
            {
                result = ConsoleProgress.Train($"{label} lr {lr:G3}", o.Steps,
                    p => ContrastiveTrainer.Train(model, tokenizer, train, model.TrainableParameters().ToList(), options, p));
            }
            catch (InvalidOperationException e) when (rates.Count > 1)
            {
                // A rate that diverges is a result of the sweep, not a reason to lose the others.
                _state.Sweep.Add(new SweepPoint(label, lr, null, e.Message));
                model.Dispose();
                continue;
            }
            double? val = rates.Count > 1 ? Score(model, tokenizer, validation, $"{label} lr {lr:G3}: validation").RecallAt1 : null;
            _state.Sweep.Add(new SweepPoint(label, lr, val));
            if (best == null || (val ?? 0) > best.Value.Val)
            {
                best?.Model.Dispose();
                best = (model, tokenizer, applied, result, lr, val ?? 0);
            }
            else model.Dispose();
        }
        if (best == null) throw new InvalidOperationException($"{label}: every learning rate of the sweep diverged ({string.Join(", ", rates)}).");
        var (m, tok, done, res, bestLr, _) = best.Value;
        var scores = Score(m, tok, test, $"{label}: scoring");
        long? adapterBytes = null;
        if (done is { Folder: string folder, Save: { } save })
        {
            string dir = Path.Combine(outputDirectory, "adapters", folder);
            save(dir);
            adapterBytes = new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length;
        }
        var (latency, merged, paired) = Paired(m, tok, label, done.Merge);
        _state.Rows.Add(new RetrievalRow(method, rank, targets, bestLr, scores.RecallAt1, scores.RecallAt10, scores.Mrr, scores.Queries, scores.Candidates,
            res.TrainableParameters, TrainableReport.PercentOfBase(res.TrainableParameters, total), res.OptimizerStateBytes, res.Memory.PeakBytes,
            res.Memory.PeakByCategory.ToDictionary(kv => Output.JsonOutput.Snake(kv.Key.ToString()), kv => kv.Value), res.MedianStepMilliseconds, adapterBytes, o.Steps,
            LatencyProbe.At(latency, 1), LatencyProbe.At(latency, 32), LatencyProbe.At(merged, 1), LatencyProbe.At(merged, 32), LatencyProbe.At(paired, 1), LatencyProbe.At(paired, 32)));
        _state.Losses[label] = res.Losses;
        m.Dispose();
        _state.Complete(label, outputDirectory);
    }
}
