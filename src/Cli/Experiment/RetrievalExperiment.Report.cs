using System.Text;

namespace Nanolora.Cli;

/// <summary>The retrieval table as Markdown: scores, costs, latency against the base, memory by category, the sweep.</summary>
public sealed partial class RetrievalExperiment
{
    static string Mb(long? bytes) => bytes is long b ? (b / 1048576.0).ToString("F2") : "—";

    /// <summary>Milliseconds with the change against the base's latency in the same run, as the seq2seq comparison shows it.</summary>
    static string Ms(double? ms, double? baseMs) => ms is not double v ? "—"
        : baseMs is double b && b > 0 ? $"{v:F1} ({100 * (v - b) / b:+0;-0}%)" : v.ToString("F1");

    /// <summary>A row's name in the tables: the method, with LoRA's targets or a PEFT method's size.</summary>
    internal static string Label(RetrievalRow r) => r.Targets != null ? $"{r.Method} {r.Targets}" : r.Method;

    /// <summary>The retrieval table and its sweep as Markdown for results.md.</summary>
    public string Markdown()
    {
        var sb = new StringBuilder();
        var baseRow = _state.Rows.FirstOrDefault(r => r.Method == "base");
        sb.AppendLine("## The pretrained model: all-MiniLM-L6-v2, description → synopsis retrieval");
        sb.AppendLine();
        sb.AppendLine($"Queries: Debian test descriptions ({baseRow?.Queries ?? 0}, cut to {o.MaxSourceTokens} word pieces); candidates: their " +
                      $"{baseRow?.Candidates ?? 0} distinct synopses. One shared encoder, MultipleNegativesRankingLoss (in-batch negatives, scale 20), " +
                      $"{o.Steps} steps of batch {o.BatchSize} for each method, same data order and seed; AdamW with 10% warm-up then linear decay. " +
                      $"LoRA: r=8, alpha 16, dropout 0.1. Trainable % is of the model's {_state.TotalParameters:N0} parameters; full fine-tuning trains all but the pooler, which mean pooling never uses. " +
                      $"Latency: embedding {string.Join(" and ", o.Latency.BatchSizes.Select(b => b == 1 ? "one query" : $"{b} queries"))} as one batch (tokenizing included), " +
                      $"median of {o.Latency.Repeats} after a warm-up; in brackets the change against the untouched model measured interleaved with each row (a fresh load, the two taking turns run by run), so load that drifts cancels; *merged*: the method folded into the weights.");
        sb.AppendLine();
        sb.AppendLine("| method | rank | targets / size | lr | recall@1 | recall@10 | MRR | trainable params | trainable % | optimizer state (MB) | peak memory (MB) | step (ms) | latency b=1 (ms) | latency b=32 (ms) | merged b=1 (ms) | merged b=32 (ms) | adapter (MB) |");
        sb.AppendLine("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var r in _state.Rows)
            sb.AppendLine($"| {r.Method} | {r.Rank?.ToString() ?? "—"} | {r.Targets ?? "—"} | {(r.LearningRate is float lr ? lr.ToString("G3") : "—")} | {r.RecallAt1:F4} | {r.RecallAt10:F4} | {r.Mrr:F4} | " +
                          $"{r.TrainableParams:N0} | {r.TrainablePercent:F2} | {Mb(r.OptimizerStateBytes)} | {Mb(r.PeakBytes)} | {(r.StepMs is double ms ? ms.ToString("F0") : "—")} | " +
                          $"{Ms(r.LatencyMsB1, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1)} | {Ms(r.LatencyMsB32, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32)} | {Ms(r.LatencyMsB1Merged, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1)} | {Ms(r.LatencyMsB32Merged, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32)} | {Mb(r.AdapterBytes)} |");
        var full = _state.Rows.FirstOrDefault(r => r.Method == "full");
        if (baseRow != null && full != null)
        {
            double fullGain = full.RecallAt1 - baseRow.RecallAt1;
            sb.AppendLine();
            foreach (var l in _state.Rows.Where(r => r.Method is not ("base" or "full")))
            {
                double gain = l.RecallAt1 - baseRow.RecallAt1;
                string name = l.Rank is int rank ? $"LoRA r={rank} ({l.Targets})" : l.Targets != null ? $"{l.Method} ({l.Targets})" : l.Method;
                sb.AppendLine($"- {name}: recall@1 gain {gain:+0.0000;-0.0000} vs full fine-tuning's {fullGain:+0.0000;-0.0000}" +
                              (fullGain > 0 ? $" = {100 * gain / fullGain:F0}% of full's gain" : "") + $", with {l.TrainablePercent:F2}% of the parameters trainable.");
            }
            sb.AppendLine();
            sb.AppendLine("Peak memory by category during training (MB, from the device ledger):");
            sb.AppendLine();
            sb.AppendLine("| method | parameters | gradients | optimizer state | activations | other | total peak |");
            sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|");
            foreach (var r in _state.Rows.Where(r => r.PeakBytesByCategory != null))
            {
                long Get(string k) => r.PeakBytesByCategory!.TryGetValue(k, out var v) ? v : 0;
                sb.AppendLine($"| {Label(r)} | {Mb(Get("parameter"))} | {Mb(Get("gradient"))} | {Mb(Get("optimizer_state"))} | {Mb(Get("activation"))} | {Mb(Get("other"))} | {Mb(r.PeakBytes)} |");
            }
        }
        if (_state.Rows.Any(r => r.TrainablePercent > 0))
        {
            sb.AppendLine();
            sb.AppendLine($"Plot: `{ExperimentReport.RetrievalPlotFile}` (recall@1 against trainable %, one point per method).");
        }
        if (_state.Sweep.Any(s => s.ValidationRecallAt1 != null || s.Note != null))
        {
            sb.AppendLine();
            sb.AppendLine($"Learning-rate sweep (recall@1 on {o.ValidationPairs} validation pairs; the best of each method is the row above):");
            sb.AppendLine();
            sb.AppendLine("| method | lr | validation recall@1 |");
            sb.AppendLine("|---|---:|---:|");
            foreach (var s in _state.Sweep) sb.AppendLine($"| {s.Method} | {s.LearningRate:G3} | {(s.ValidationRecallAt1 is double v ? v.ToString("F4") : "diverged")} |");
        }
        else
        {
            sb.AppendLine();
            sb.AppendLine("Learning rates: the quick run trains each method once, at the rate the full run's validation sweep chose (see README).");
        }
        return sb.ToString();
    }
}
