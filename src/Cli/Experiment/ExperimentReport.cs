using System.Text;
using System.Text.Json;
using Nanolora.Cli.Output;
using Nanolora.Lora;

namespace Nanolora.Cli;

/// <summary>results.json (schema nanolora.experiment/1, docs/cli-json.md): the document <c>experiment --json</c> prints.</summary>
public sealed record ExperimentJson(string Schema, bool Quick, double ElapsedSeconds, IReadOnlyList<ResultRow> Rows, IReadOnlyList<RougeSweepPoint> Sweep, ExperimentJson.RetrievalPart? Retrieval,
    IReadOnlyList<ComparisonRow>? Comparison = null)
{
    /// <summary>The layout's name and version, the value of <see cref="Schema"/>.</summary>
    public const string SchemaName = "nanolora.experiment/1";

    /// <summary>The file the experiment writes it to, in its --out folder.</summary>
    public const string File = "results.json";

    /// <summary>The retrieval table's rows and its learning-rate sweep.</summary>
    public sealed record RetrievalPart(IReadOnlyList<RetrievalRow> Rows, IReadOnlyList<SweepPoint> Sweep);
}

/// <summary>Writes results.json, results.md and the plots from the rows the runner measured, and prints the tables.</summary>
public sealed class ExperimentReport(ExperimentOptions o, IReadOnlyList<ResultRow> rows, IReadOnlyDictionary<string, List<float>> losses, TimeSpan elapsed,
    RetrievalExperiment? retrieval = null, IReadOnlyList<RougeSweepPoint>? sweep = null, IReadOnlyList<ComparisonRow>? comparison = null)
{
    readonly ComparisonReport _comparison = new(o, comparison ?? []);

    /// <summary>Writes results.json, results.md and the loss and rank plots into the output folder.</summary>
    public void Write()
    {
        var dir = o.OutputDirectory;
        var document = new ExperimentJson(ExperimentJson.SchemaName, o.Quick, Math.Round(elapsed.TotalSeconds), rows, sweep ?? [],
            retrieval == null ? null : new ExperimentJson.RetrievalPart(retrieval.Rows, retrieval.Sweep), comparison ?? []);
        Nanolora.Transformer.AtomicFile.WriteAllText(Path.Combine(dir, ExperimentJson.File), JsonSerializer.Serialize(document, JsonOutput.Options) + "\n");
        Nanolora.Transformer.AtomicFile.WriteAllText(Path.Combine(dir, "results.md"), (rows.Count > 0 ? Markdown() : $"# Nanolora experiment ({(o.Quick ? "quick" : "full")})\n") + _comparison.Markdown() +
            (retrieval != null ? "\n" + retrieval.Markdown() : ""));
        if (rows.Count > 0)
        {
            ExperimentPlots.Loss(losses, o, Path.Combine(dir, "loss_full_vs_lora.png"));
            ExperimentPlots.Rank(rows, o, Path.Combine(dir, "rouge1_vs_rank.png"));
        }
        if (comparison is { Count: > 1 }) ComparisonPlot(comparison, Path.Combine(dir, ComparisonPlotFile));
        if (retrieval != null && retrieval.Rows.Any(r => r.TrainablePercent > 0)) RetrievalPlot(retrieval.Rows, Path.Combine(dir, RetrievalPlotFile));
    }

    /// <summary>The PEFT comparison's plot: ROUGE-1 against trainable %, one point per method and size.</summary>
    public const string ComparisonPlotFile = "peft_comparison.png";

    /// <summary>The retrieval comparison's plot: recall@1 against trainable %.</summary>
    public const string RetrievalPlotFile = "retrieval_comparison.png";

    void ComparisonPlot(IReadOnlyList<ComparisonRow> compared, string path)
    {
        var points = compared.Select(r => new ExperimentPlots.MethodPoint(r.Size != null ? $"{r.Method} {r.Size}" : r.Method, r.TrainablePercent, r.Rouge1)).ToList();
        var lines = new List<ExperimentPlots.ReferenceLine>();
        if (rows.FirstOrDefault(r => r.Method == "lead-8" && r.Task == "debian") is { } lead) lines.Add(new("lead-8 (first 8 words of the source)", lead.Rouge1, true));
        if (compared.FirstOrDefault(r => r.Method == "base") is { } b) lines.Add(new("base model, not fine-tuned", b.Rouge1, true));
        if (compared.FirstOrDefault(r => r.Method == "full") is { } f) lines.Add(new("full fine-tuning", f.Rouge1, false));
        var examples = compared.Max(r => r.EvalExamples);
        ExperimentPlots.QualityVsParameters(points, lines, $"PEFT methods on Debian synopses: {o.Steps} steps of batch {o.BatchSize}, {examples} test examples",
            "ROUGE-1 F", path);
    }

    static void RetrievalPlot(IReadOnlyList<RetrievalRow> retrievalRows, string path)
    {
        var points = retrievalRows.Select(r => new ExperimentPlots.MethodPoint(RetrievalExperiment.Label(r), r.TrainablePercent, r.RecallAt1)).ToList();
        var lines = new List<ExperimentPlots.ReferenceLine>();
        if (retrievalRows.FirstOrDefault(r => r.Method == "base") is { } b) lines.Add(new("all-MiniLM-L6-v2, not fine-tuned", b.RecallAt1, true));
        if (retrievalRows.FirstOrDefault(r => r.Method == "full") is { } f) lines.Add(new("full fine-tuning", f.RecallAt1, false));
        var steps = retrievalRows.FirstOrDefault(r => r.Steps != null)?.Steps;
        ExperimentPlots.QualityVsParameters(points, lines, $"PEFT methods on all-MiniLM-L6-v2, description → synopsis retrieval: {steps} steps, {retrievalRows[0].Queries} queries",
            "recall@1", path);
    }

    /// <summary>The tables on stdout (or, with --json, results.json); where the files went on stderr.</summary>
    public void Print()
    {
        if (o.Json) Console.Out.Write(File.ReadAllText(Path.Combine(o.OutputDirectory, ExperimentJson.File)));
        else
        {
            if (rows.Count > 0) Terminal.Write(Table());
            if (_comparison.Rows.Count > 0)
            {
                Console.WriteLine();
                Terminal.Write(_comparison.Table());
            }
            if (retrieval != null)
            {
                if (rows.Count > 0) Console.WriteLine();
                Terminal.Write(RetrievalTable());
            }
        }
        Terminal.Status($"wrote {o.OutputDirectory}/{ExperimentJson.File}, results.md and plots in {elapsed:mm\\:ss}");
    }

    static string Mb(long? bytes) => bytes is long b ? (b / 1048576.0).ToString("F2") : TextTable.NotMeasured;
    static string Ms(double? ms) => ms is double v ? v.ToString("F0") : TextTable.NotMeasured;
    static string Blank(long? bytes) => bytes is long b ? Mb(b) : "";

    /// <summary>The seq2seq results as results.md's Markdown (tables and notes).</summary>
    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# Nanolora experiment ({(o.Quick ? "quick" : "full")})");
        sb.AppendLine();
        var fullRow = rows.FirstOrDefault(r => r.Method == "full");
        var loraRow = rows.FirstOrDefault(r => r.Method == "lora" && r.Task == "debian");
        sb.AppendLine($"Debian description → synopsis, test split ({rows.FirstOrDefault(r => r.Method == "base")?.EvalExamples ?? 0} examples spread over it), greedy decoding{(o.NoRepeatNgram > 0 ? $" never repeating a {o.NoRepeatNgram}-gram" : "")}. " +
                      $"Fine-tuning: {o.Steps} steps each (batch {o.BatchSize}), same data order and seed; AdamW, lr {fullRow?.LearningRate:G3} for full fine-tuning and {loraRow?.LearningRate:G3} for LoRA " +
                      $"(r=8, alpha 16, on {string.Join(" and ", o.LoraTargets)}{(o.LoraInit == Nanolora.Lora.LoraInit.LoraGa ? ", started by LoRA-GA from the gradients of the first 4 batches" : "")}){(sweep is { Count: > 0 } ? $", each chosen on {sweep[0].ValidationExamples} validation examples after {sweep[0].Steps} steps (`sweep` in results.json)" : "")}; " +
                      (o.Ranks.Count > 0 && o.AblationSeeds.Count > 0
                          ? $"rank ablation {o.AblationSteps} steps per rank and seed ({string.Join(", ", o.AblationSeeds)}; alpha 2r; on {string.Join(" and ", o.AblationTargetsUsed)}) on {rows.FirstOrDefault(r => r.Method == "lora-ablation")?.EvalExamples ?? 0} test examples. "
                          : "no rank ablation in this budget. ") +
                      $"Trainable % is of the base model's {BaseParameters():N0} parameters (adapters not counted). Step (ms) is the median step time. — marks a cost that was not measured (nothing trained). Ran in {elapsed:hh\\:mm\\:ss}.");
        sb.AppendLine();
        sb.AppendLine("| method | task | rank | ROUGE-1 | ROUGE-2 | ROUGE-L | trainable params | trainable % | optimizer state (MB) | peak memory (MB) | step (ms) | adapter (MB) | checkpoint (MB) |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
            sb.AppendLine($"| {r.Method} | {r.Task} | {r.Rank?.ToString() ?? ""} | {r.Rouge1:F4} | {r.Rouge2:F4} | {r.RougeL:F4} | {r.TrainableParams:N0} | {r.TrainablePercent:F2} | " +
                          $"{Mb(r.OptimizerStateBytes)} | {Mb(r.PeakBytes)} | {Ms(r.StepMs)} | {Blank(r.AdapterBytes)} | {Blank(r.CheckpointBytes)} |");
        var baseRow = rows.FirstOrDefault(r => r.Method == "base" && r.Task == "debian");
        var full = rows.FirstOrDefault(r => r.Method == "full");
        var lora = rows.FirstOrDefault(r => r.Method == "lora" && r.Task == "debian");
        if (baseRow != null && full != null && lora != null)
        {
            double fullGain = full.Rouge1 - baseRow.Rouge1, loraGain = lora.Rouge1 - baseRow.Rouge1;
            sb.AppendLine();
            sb.AppendLine($"ROUGE-1 gain over base: full {fullGain:+0.0000;-0.0000}, LoRA r={lora.Rank} {loraGain:+0.0000;-0.0000} " +
                          $"({ShareOfFullGain(loraGain, fullGain)}) with {lora.TrainablePercent:F2}% of the base model's parameters trainable.{ShareIntervalText(lora)}");
            sb.AppendLine();
            sb.AppendLine("Peak memory by category during training (MB, from the device ledger):");
            sb.AppendLine();
            sb.AppendLine("| method | parameters | gradients | optimizer state | activations | other | total peak | pool reserved peak | process peak RSS so far |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in new[] { full, lora })
            {
                var c = r.PeakBytesByCategory ?? new Dictionary<string, long>();
                long Get(string k) => c.TryGetValue(k, out var v) ? v : 0;
                sb.AppendLine($"| {r.Method} | {Mb(Get("parameter"))} | {Mb(Get("gradient"))} | {Mb(Get("optimizer_state"))} | {Mb(Get("activation"))} | {Mb(Get("other"))} | {Mb(r.PeakBytes)} | {Mb(r.PoolReservedPeakBytes)} | {Mb(r.ProcessPeakRssBytes)} |");
            }
        }
        var translation = rows.Where(r => r.Chrf != null).ToList();
        if (translation.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine($"Task swap: a second LoRA adapter ({translation[0].Task}; r={o.SwapRank} on {string.Join(", ", o.SwapTargets)}, lr {o.SwapLearningRate:G3}) trained and answered on the same loaded base, switched per task. " +
                          "chrF2 and BLEU exactly as sacrebleu computes them (corpus level, against the cased references); \"uncased\" lower-cases and strips " +
                          "accents on both sides first (not sacrebleu's default), since the uncased WordPiece vocabulary cannot write case or accents.");
            sb.AppendLine();
            sb.AppendLine("| method | task | chrF2 | BLEU | chrF2 uncased | BLEU uncased | test pairs | steps |");
            sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|");
            foreach (var r in translation)
                sb.AppendLine($"| {r.Method} | {r.Task} | {r.Chrf:F2} | {r.Bleu:F2} | {r.ChrfUncased:F2} | {r.BleuUncased:F2} | {r.EvalExamples} | {r.Steps?.ToString() ?? TextTable.NotMeasured} |");
        }
        sb.AppendLine();
        sb.AppendLine($"Plots: `loss_full_vs_lora.png` (training loss), `rouge1_vs_rank.png` (rank ablation){(comparison is { Count: > 1 } ? $", `{ComparisonPlotFile}` (the PEFT comparison: ROUGE-1 against trainable %)" : "")}.");
        return sb.ToString();
    }

    /// <summary>The base model's parameter count, recovered from a trained row (trainable / percent), for the text.</summary>
    long BaseParameters() => rows.FirstOrDefault(r => r.Method == "full") is { TrainablePercent: > 0 } f ? (long)Math.Round(f.TrainableParams * 100 / f.TrainablePercent) : 0;

    /// <summary>The seq2seq results table.</summary>
    public TextTable Table()
    {
        var t = new TextTable(new TextColumn("method"), new TextColumn("task"), new TextColumn("rank", true), new TextColumn("ROUGE-1", true),
            new TextColumn("ROUGE-2", true), new TextColumn("ROUGE-L", true), new TextColumn("chrF2", true), new TextColumn("trainable", true), new TextColumn("% of base", true),
            new TextColumn("opt state MB", true), new TextColumn("peak MB", true), new TextColumn("ms/step", true), new TextColumn("adapter MB", true));
        foreach (var r in rows)
            t.AddRow(r.Method, r.Task, r.Rank?.ToString() ?? "", r.Rouge1.ToString("F4"), r.Rouge2.ToString("F4"), r.RougeL.ToString("F4"), r.Chrf?.ToString("F2") ?? "",
                r.TrainableParams.ToString("N0"), r.TrainablePercent.ToString("F2"), Mb(r.OptimizerStateBytes), Mb(r.PeakBytes), Ms(r.StepMs), Blank(r.AdapterBytes));
        return t;
    }

    /// <summary>The retrieval results table.</summary>
    public TextTable RetrievalTable()
    {
        var t = new TextTable(new TextColumn("all-MiniLM-L6-v2"), new TextColumn("rank", true), new TextColumn("targets"), new TextColumn("lr", true),
            new TextColumn("recall@1", true), new TextColumn("recall@10", true), new TextColumn("MRR", true), new TextColumn("trainable", true),
            new TextColumn("% of base", true), new TextColumn("ms/step", true));
        foreach (var r in retrieval?.Rows ?? [])
            t.AddRow(r.Method, r.Rank?.ToString(), r.Targets, r.LearningRate?.ToString("G3"), r.RecallAt1.ToString("F4"), r.RecallAt10.ToString("F4"),
                r.Mrr.ToString("F4"), r.TrainableParams.ToString("N0"), r.TrainablePercent.ToString("F2"), r.StepMs is double ms ? ms.ToString("F0") : null);
        return t;
    }

    /// <summary>" The share's 95 % interval: …" from the prediction files, or nothing when they are not all there.</summary>
    internal string ShareIntervalText(ResultRow lora)
    {
        var interval = GainShareInterval.FromPredictions(Path.Combine(o.OutputDirectory, "predictions"), $"lora-r{lora.Rank}");
        return interval == null ? "" : $" The share's {interval.Level:P0} interval by a paired bootstrap over the {interval.Pairs:N0} test pairs " +
            $"({interval.Resamples:N0} resamples, seed {interval.Seed}): {Percent(interval.Low)} to {Percent(interval.High)}.";
    }

    static string Percent(double share) => double.IsNegativeInfinity(share) ? $"undefined (full gained under {GainShareInterval.MinFullGain} in that many resamples)" : $"{100 * share:F0}%";

    /// <summary>LoRA's gain as a share of full fine-tuning's, or why there is none (a gain that is nil or under
    /// <see cref="GainShareInterval.MinFullGain"/>).</summary>
    internal static string ShareOfFullGain(double loraGain, double fullGain) =>
        fullGain <= 0 ? "full fine-tuning did not gain"
        : fullGain < GainShareInterval.MinFullGain ? $"full fine-tuning gained {fullGain:0.0000}, too little for a share"
        : $"{100 * loraGain / fullGain:F0}% of full's gain";
}
