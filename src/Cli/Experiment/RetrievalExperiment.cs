using System.Diagnostics;
using System.Text;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>One learning rate tried for a method, scored on the validation split.</summary>
public sealed record SweepPoint(string Method, float LearningRate, double? ValidationRecallAt1, string? Note = null);

/// <summary>One row of the retrieval table: a method's test scores and costs.</summary>
public sealed record RetrievalRow(string Method, int? Rank, string? Targets, float? LearningRate, double RecallAt1, double RecallAt10, double Mrr,
    int Queries, int Candidates, long TrainableParams, double TrainablePercent, long? OptimizerStateBytes, long? PeakBytes,
    IReadOnlyDictionary<string, long>? PeakBytesByCategory, double? StepMs, long? AdapterBytes, int? Steps);

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
    /// <summary>Seeds data order and dropout for every method.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>
    /// The quick budget trains each method once at the learning rate the full run's sweep chose; the full run sweeps
    /// three rates per method on the validation split.
    /// </summary>
    public static RetrievalOptions Defaults(bool quick) => quick
        ? new() { Steps = 60, BatchSize = 16, MaxSourceTokens = 64, TestPairs = 500, ValidationPairs = 300, FullLearningRates = [2e-5f], LoraLearningRates = [3e-4f] }
        : new() { Steps = 100, BatchSize = 32, MaxSourceTokens = 64, TestPairs = 0, ValidationPairs = 300, FullLearningRates = [2e-5f, 5e-5f, 1e-4f], LoraLearningRates = [3e-4f, 1e-3f, 3e-3f] };
}

/// <summary>
/// The pretrained model's table: all-MiniLM-L6-v2 as a bi-encoder for Debian description → synopsis retrieval,
/// zero-shot vs full fine-tuning vs LoRA (r=8 on query and value, and on every linear layer of the encoder), same
/// data order, steps and seed for each, each method's learning rate picked on the validation split.
/// </summary>
public sealed class RetrievalExperiment(RetrievalOptions o, string outputDirectory, Device device)
{
    /// <summary>Every Linear inside the encoder layers (PEFT's "all-linear" less the pooler, which mean pooling never uses).</summary>
    const string AllLinearRegex = @"encoder\.layer\.\d+\..*(query|key|value|dense)";

    readonly List<RetrievalRow> _rows = new();
    long _totalParameters;
    readonly List<SweepPoint> _sweep = new();
    /// <summary>Each trained row's per-step training losses, by row label.</summary>
    public readonly Dictionary<string, List<float>> Losses = new();
    /// <summary>The table's rows, filled by <see cref="Run"/>.</summary>
    public IReadOnlyList<RetrievalRow> Rows => _rows;
    /// <summary>Every learning rate tried, filled by <see cref="Run"/>.</summary>
    public IReadOnlyList<SweepPoint> Sweep => _sweep;

    /// <summary>Scores all-MiniLM-L6-v2 zero-shot, then full fine-tuning and LoRA r=8 (query,value and all-linear), each at its best validation learning rate.</summary>
    public void Run()
    {
        var debian = TaskData.Load("debian");
        var test = TaskData.Spread(debian.Test, o.TestPairs);
        var validation = TaskData.Spread(debian.Validation, o.ValidationPairs);

        var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
        long total = _totalParameters = model.ParameterCount();
        var zeroShot = Score(model, tokenizer, test, "zero-shot: scoring");
        _rows.Add(new RetrievalRow("base", null, null, null, zeroShot.RecallAt1, zeroShot.RecallAt10, zeroShot.Mrr, zeroShot.Queries, zeroShot.Candidates,
            0, 0, null, null, null, null, null, null));   // zero-shot: nothing trained, no cost measured
        model.Dispose();

        Method("full", null, null, o.FullLearningRates, debian.Train, validation, test, total);
        Method("lora", 8, "query,value", o.LoraLearningRates, debian.Train, validation, test, total);
        Method("lora", 8, "all-linear", o.LoraLearningRates, debian.Train, validation, test, total);
    }

    RetrievalScores Score(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<Example> pairs, string title) =>
        ConsoleProgress.Evaluate(title, pairs.Count, p => Retrieval.Evaluate(model, tokenizer, pairs, o.MaxSourceTokens, 64, p));

    /// <summary>Trains the method at each learning rate, keeps the one best on validation and scores it on test.</summary>
    void Method(string method, int? rank, string? targets, IReadOnlyList<float> rates, IReadOnlyList<Example> train,
        IReadOnlyList<Example> validation, IReadOnlyList<Example> test, long total)
    {
        string label = rank == null ? method : $"{method} r={rank} ({targets})";
        (BertModel Model, BertWordPieceTokenizer Tokenizer, LoraModel? Lora, TrainResult Result, float Lr, double Val)? best = null;
        // With one rate there is nothing to choose: no validation pass.
        foreach (float lr in rates)
        {
            var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
            LoraModel? lora = null;
            if (rank is int r)
            {
                var config = targets == "all-linear"
                    ? new LoraConfig { R = r, Alpha = 2 * r, Dropout = 0.1f, TargetRegex = AllLinearRegex, TaskType = "FEATURE_EXTRACTION" }
                    : new LoraConfig { R = r, Alpha = 2 * r, Dropout = 0.1f, TargetModules = targets!.Split(','), TaskType = "FEATURE_EXTRACTION" };
                lora = LoraModel.Inject(model, config, "debian", o.Seed);
            }
            else foreach (var (name, p) in model.NamedParameters()) p.Trainable = !name.StartsWith("pooler.");   // no gradient reaches it
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
                _sweep.Add(new SweepPoint(label, lr, null, e.Message));
                model.Dispose();
                continue;
            }
            double? val = rates.Count > 1 ? Score(model, tokenizer, validation, $"{label} lr {lr:G3}: validation").RecallAt1 : null;
            _sweep.Add(new SweepPoint(label, lr, val));
            if (best == null || (val ?? 0) > best.Value.Val)
            {
                best?.Model.Dispose();
                best = (model, tokenizer, lora, result, lr, val ?? 0);
            }
            else model.Dispose();
        }
        if (best == null) throw new InvalidOperationException($"{label}: every learning rate of the sweep diverged ({string.Join(", ", rates)}).");
        var (m, tok, l, res, bestLr, _) = best.Value;
        var scores = Score(m, tok, test, $"{label}: scoring");
        long? adapterBytes = null;
        if (l != null)
        {
            string dir = Path.Combine(outputDirectory, "adapters", $"minilm-{(targets == "all-linear" ? "all-linear" : "qv")}-r{rank}");
            AdapterFiles.Save(l, "debian", dir);
            adapterBytes = new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length;
        }
        _rows.Add(new RetrievalRow(method, rank, targets, bestLr, scores.RecallAt1, scores.RecallAt10, scores.Mrr, scores.Queries, scores.Candidates,
            res.TrainableParameters, TrainableReport.PercentOfBase(res.TrainableParameters, total), res.OptimizerStateBytes, res.Memory.PeakBytes,
            res.Memory.PeakByCategory.ToDictionary(kv => Output.JsonOutput.Snake(kv.Key.ToString()), kv => kv.Value), res.MedianStepMilliseconds, adapterBytes, o.Steps));
        Losses[label] = res.Losses;
        m.Dispose();
    }

    static string Mb(long? bytes) => bytes is long b ? (b / 1048576.0).ToString("F2") : "—";

    /// <summary>The retrieval table and its sweep as Markdown for results.md.</summary>
    public string Markdown()
    {
        var sb = new StringBuilder();
        var baseRow = _rows.FirstOrDefault(r => r.Method == "base");
        sb.AppendLine("## The pretrained model: all-MiniLM-L6-v2, description → synopsis retrieval");
        sb.AppendLine();
        sb.AppendLine($"Queries: Debian test descriptions ({baseRow?.Queries ?? 0}, cut to {o.MaxSourceTokens} word pieces); candidates: their " +
                      $"{baseRow?.Candidates ?? 0} distinct synopses. One shared encoder, MultipleNegativesRankingLoss (in-batch negatives, scale 20), " +
                      $"{o.Steps} steps of batch {o.BatchSize} for each method, same data order and seed; AdamW with 10% warm-up then linear decay. " +
                      $"LoRA: r=8, alpha 16, dropout 0.1. Trainable % is of the model's {_totalParameters:N0} parameters; full fine-tuning trains all but the pooler, which mean pooling never uses.");
        sb.AppendLine();
        sb.AppendLine("| method | rank | targets | lr | recall@1 | recall@10 | MRR | trainable params | trainable % | optimizer state (MB) | peak memory (MB) | step (ms) | adapter (MB) |");
        sb.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in _rows)
            sb.AppendLine($"| {r.Method} | {r.Rank?.ToString() ?? "—"} | {r.Targets ?? "—"} | {(r.LearningRate is float lr ? lr.ToString("G3") : "—")} | {r.RecallAt1:F4} | {r.RecallAt10:F4} | {r.Mrr:F4} | " +
                          $"{r.TrainableParams:N0} | {r.TrainablePercent:F2} | {Mb(r.OptimizerStateBytes)} | {Mb(r.PeakBytes)} | {(r.StepMs is double ms ? ms.ToString("F0") : "—")} | {Mb(r.AdapterBytes)} |");
        var full = _rows.FirstOrDefault(r => r.Method == "full");
        if (baseRow != null && full != null)
        {
            double fullGain = full.RecallAt1 - baseRow.RecallAt1;
            sb.AppendLine();
            foreach (var l in _rows.Where(r => r.Method == "lora"))
            {
                double gain = l.RecallAt1 - baseRow.RecallAt1;
                sb.AppendLine($"- LoRA r={l.Rank} ({l.Targets}): recall@1 gain {gain:+0.0000;-0.0000} vs full fine-tuning's {fullGain:+0.0000;-0.0000}" +
                              (fullGain > 0 ? $" = {100 * gain / fullGain:F0}% of full's gain" : "") + $", with {l.TrainablePercent:F2}% of the parameters trainable.");
            }
            sb.AppendLine();
            sb.AppendLine("Peak memory by category during training (MB, from the device ledger):");
            sb.AppendLine();
            sb.AppendLine("| method | parameters | gradients | optimizer state | activations | other | total peak |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var r in _rows.Where(r => r.PeakBytesByCategory != null))
            {
                long Get(string k) => r.PeakBytesByCategory!.TryGetValue(k, out var v) ? v : 0;
                sb.AppendLine($"| {r.Method}{(r.Targets != null ? " " + r.Targets : "")} | {Mb(Get("parameter"))} | {Mb(Get("gradient"))} | {Mb(Get("optimizer_state"))} | {Mb(Get("activation"))} | {Mb(Get("other"))} | {Mb(r.PeakBytes)} |");
            }
        }
        if (_sweep.Any(s => s.ValidationRecallAt1 != null || s.Note != null))
        {
            sb.AppendLine();
            sb.AppendLine($"Learning-rate sweep (recall@1 on {o.ValidationPairs} validation pairs; the best of each method is the row above):");
            sb.AppendLine();
            sb.AppendLine("| method | lr | validation recall@1 |");
            sb.AppendLine("|---|---:|---:|");
            foreach (var s in _sweep) sb.AppendLine($"| {s.Method} | {s.LearningRate:G3} | {(s.ValidationRecallAt1 is double v ? v.ToString("F4") : "diverged")} |");
        }
        else
        {
            sb.AppendLine();
            sb.AppendLine("Learning rates: the quick run trains each method once, at the rate the full run's validation sweep chose (see README).");
        }
        return sb.ToString();
    }
}
