using System.Text;
using System.Text.Json;
using Nanolora.Transformer;
using ScottPlot;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>Writes results.json, results.md and the two plots from the rows the runner measured.</summary>
public sealed class ExperimentReport(ExperimentOptions o, IReadOnlyList<ResultRow> rows, IReadOnlyDictionary<string, List<float>> losses, TimeSpan elapsed,
    RetrievalExperiment? retrieval = null, IReadOnlyList<RougeSweepPoint>? sweep = null)
{
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public void Write()
    {
        var dir = o.OutputDirectory;
        var retrievalJson = retrieval == null ? null : new { rows = retrieval.Rows, sweep = retrieval.Sweep };
        AtomicFile.WriteAllText(Path.Combine(dir, "results.json"), JsonSerializer.Serialize(new { rows, sweep = sweep ?? [], retrieval = retrievalJson, elapsed_seconds = Math.Round(elapsed.TotalSeconds), quick = o.Quick }, Json));
        AtomicFile.WriteAllText(Path.Combine(dir, "results.md"), (rows.Count > 0 ? Markdown() : $"# Nanolora experiment ({(o.Quick ? "quick" : "full")})\n") +
            (retrieval != null ? "\n" + retrieval.Markdown() : ""));
        if (rows.Count > 0)
        {
            LossPlot(Path.Combine(dir, "loss_full_vs_lora.png"));
            RankPlot(Path.Combine(dir, "rouge1_vs_rank.png"));
        }
    }

    static string Mb(long bytes) => (bytes / 1048576.0).ToString("F2");

    public string Markdown()
    {
        var sb = new StringBuilder();
        sb.AppendLine($"# Nanolora experiment ({(o.Quick ? "quick" : "full")})");
        sb.AppendLine();
        var fullRow = rows.FirstOrDefault(r => r.Method == "full");
        var loraRow = rows.FirstOrDefault(r => r.Method == "lora" && r.Task == "debian");
        sb.AppendLine($"Debian description → synopsis, test split ({rows.FirstOrDefault(r => r.Method == "base")?.EvalExamples ?? 0} examples spread over it), greedy decoding. " +
                      $"Fine-tuning: {o.Steps} steps each (batch {o.BatchSize}), same data order and seed; AdamW, lr {fullRow?.LearningRate:G3} for full fine-tuning and {loraRow?.LearningRate:G3} for LoRA " +
                      $"(r=8, alpha 16, on q_proj and v_proj){(sweep is { Count: > 0 } ? $", each chosen on {sweep[0].ValidationExamples} validation examples after {sweep[0].Steps} steps (`sweep` in results.json)" : "")}; " +
                      $"rank ablation {o.AblationSteps} steps per rank and seed ({string.Join(", ", o.AblationSeeds)}) on {rows.FirstOrDefault(r => r.Method == "lora-ablation")?.EvalExamples ?? 0} test examples. Ran in {elapsed:hh\\:mm\\:ss}.");
        sb.AppendLine();
        sb.AppendLine("| method | task | rank | ROUGE-1 | ROUGE-2 | ROUGE-L | trainable params | trainable % | optimizer state (MB) | peak memory (MB) | step (ms) | adapter (MB) | checkpoint (MB) |");
        sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
            sb.AppendLine($"| {r.Method} | {r.Task} | {(r.Rank > 0 ? r.Rank : "")} | {r.Rouge1:F4} | {r.Rouge2:F4} | {r.RougeL:F4} | {r.TrainableParams:N0} | {r.TrainablePercent:F2} | " +
                          $"{Mb(r.OptimizerStateBytes)} | {Mb(r.PeakBytes)} | {r.StepMs:F0} | {(r.AdapterBytes > 0 ? Mb(r.AdapterBytes) : "")} | {(r.CheckpointBytes > 0 ? Mb(r.CheckpointBytes) : "")} |");
        var baseRow = rows.FirstOrDefault(r => r.Method == "base" && r.Task == "debian");
        var full = rows.FirstOrDefault(r => r.Method == "full");
        var lora = rows.FirstOrDefault(r => r.Method == "lora" && r.Task == "debian");
        if (baseRow != null && full != null && lora != null)
        {
            double fullGain = full.Rouge1 - baseRow.Rouge1, loraGain = lora.Rouge1 - baseRow.Rouge1;
            sb.AppendLine();
            sb.AppendLine($"ROUGE-1 gain over base: full {fullGain:+0.0000;-0.0000}, LoRA r=8 {loraGain:+0.0000;-0.0000} " +
                          $"({(fullGain > 0 ? (100 * loraGain / fullGain).ToString("F0") + "% of full's gain" : "full fine-tuning did not gain")}) with {lora.TrainablePercent:F2}% of the parameters trainable.");
            sb.AppendLine();
            sb.AppendLine("Peak memory by category during training (MB, from the device ledger):");
            sb.AppendLine();
            sb.AppendLine("| method | parameters | gradients | optimizer state | activations | other | total peak | pool reserved peak | process peak RSS so far |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
            foreach (var r in new[] { full, lora })
            {
                var c = r.PeakBytesByCategory ?? new Dictionary<string, long>();
                long Get(string k) => c.TryGetValue(k, out var v) ? v : 0;
                sb.AppendLine($"| {r.Method} | {Mb(Get("Parameter"))} | {Mb(Get("Gradient"))} | {Mb(Get("OptimizerState"))} | {Mb(Get("Activation"))} | {Mb(Get("Other"))} | {Mb(r.PeakBytes)} | {Mb(r.PoolReservedPeakBytes)} | {Mb(r.ProcessPeakRssBytes)} |");
            }
        }
        sb.AppendLine();
        sb.AppendLine("Plots: `loss_full_vs_lora.png` (training loss), `rouge1_vs_rank.png` (rank ablation).");
        return sb.ToString();
    }

    public Spectre.Console.Table Table()
    {
        var t = new Spectre.Console.Table().AddColumns("method", "task", "rank", "ROUGE-1", "ROUGE-2", "ROUGE-L", "trainable", "%", "opt state MB", "peak MB", "ms/step", "adapter MB");
        foreach (var r in rows)
            t.AddRow(r.Method, r.Task, r.Rank > 0 ? r.Rank.ToString() : "", r.Rouge1.ToString("F4"), r.Rouge2.ToString("F4"), r.RougeL.ToString("F4"),
                r.TrainableParams.ToString("N0"), r.TrainablePercent.ToString("F2"), Mb(r.OptimizerStateBytes), Mb(r.PeakBytes), r.StepMs.ToString("F0"), r.AdapterBytes > 0 ? Mb(r.AdapterBytes) : "");
        return t;
    }

    public Spectre.Console.Table RetrievalTable()
    {
        var t = new Spectre.Console.Table().AddColumns("all-MiniLM-L6-v2", "rank", "targets", "lr", "recall@1", "recall@10", "MRR", "trainable", "%", "ms/step");
        foreach (var r in retrieval?.Rows ?? [])
            t.AddRow(r.Method, r.Rank?.ToString() ?? "—", r.Targets ?? "—", r.LearningRate?.ToString("G3") ?? "—", r.RecallAt1.ToString("F4"), r.RecallAt10.ToString("F4"),
                r.Mrr.ToString("F4"), r.TrainableParams.ToString("N0"), r.TrainablePercent.ToString("F2"), r.StepMs?.ToString("F0") ?? "—");
        return t;
    }

    void LossPlot(string path)
    {
        var plot = new Plot();
        foreach (var (name, series) in losses)
        {
            // A moving average keeps the curves readable; the raw values are in the loss lists.
            var smooth = Plots.MovingAverage(series, Math.Max(1, series.Count / 50));
            var line = plot.Add.Scatter(Enumerable.Range(1, smooth.Length).Select(i => (double)i).ToArray(), smooth);
            line.LegendText = name == "full" ? "full fine-tuning" : "LoRA r=8 (q, v)";
            line.MarkerSize = 0;
        }
        plot.Title("Training loss: full fine-tuning vs LoRA (Debian synopses)");
        plot.XLabel("step");
        plot.YLabel("label-smoothed cross-entropy");
        plot.ShowLegend();
        Plots.SaveAtomically(plot, path);
    }

    void RankPlot(string path)
    {
        // One point per rank: the mean over seeds, with a bar from the lowest to the highest seed's score.
        var byRank = rows.Where(r => r.Method == "lora-ablation").GroupBy(r => r.Rank).OrderBy(g => g.Key)
            .Select(g => (Rank: g.Key, Mean: g.Average(r => r.Rouge1), Low: g.Min(r => r.Rouge1), High: g.Max(r => r.Rouge1), Seeds: g.Count())).ToList();
        var plot = new Plot();
        if (byRank.Count > 0)
        {
            var xs = byRank.Select(r => Math.Log2(r.Rank)).ToArray();
            var line = plot.Add.Scatter(xs, byRank.Select(r => r.Mean).ToArray());
            int seeds = byRank.Max(r => r.Seeds);
            line.LegendText = seeds > 1 ? $"LoRA (mean of {seeds} seeds; bars: min–max)" : "LoRA (one seed)";
            if (seeds > 1)
            {
                for (int i = 0; i < byRank.Count; i++)
                {
                    var bar = plot.Add.Line(xs[i], byRank[i].Low, xs[i], byRank[i].High);
                    bar.Color = line.Color;
                }
            }
            plot.Axes.Bottom.SetTicks(xs, byRank.Select(r => r.Rank.ToString()).ToArray());
            foreach (var (method, label) in new[] { ("lead-8", "lead-8 baseline"), ("base", "base (zero-shot)"), ("full", "full fine-tuning") })
                if (rows.FirstOrDefault(r => r.Method == method && r.Task == "debian") is { } row)
                {
                    var h = plot.Add.HorizontalLine(row.Rouge1);
                    h.LegendText = method == "full" && row.Steps != o.AblationSteps ? $"{label} ({row.Steps} steps)" : label;
                }
        }
        plot.Title("ROUGE-1 vs LoRA rank (Debian synopses)");
        plot.XLabel("rank r (log scale)");
        plot.YLabel("ROUGE-1 F");
        plot.ShowLegend(Alignment.LowerRight);
        Plots.SaveAtomically(plot, path);
    }
}
