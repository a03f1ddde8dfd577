using System.Text;
using Nanolora.Cli.Output;

namespace Nanolora.Cli;

/// <summary>The PEFT comparison's part of results.md and of the printed tables (<see cref="PeftComparison"/> measures it).</summary>
internal sealed class ComparisonReport(ExperimentOptions o, IReadOnlyList<ComparisonRow> rows)
{
    /// <summary>The comparison's rows, in the order measured.</summary>
    public IReadOnlyList<ComparisonRow> Rows => rows;

    static string Mb(long? bytes) => bytes is long b ? (b / 1048576.0).ToString("F2") : TextTable.NotMeasured;
    static string Ms(double? ms) => ms is double v ? v.ToString("F0") : TextTable.NotMeasured;

    /// <summary>"812 (+4%)": a latency and its change against the base's at the same batch size.</summary>
    static string Latency(double? ms, double? baseMs) => ms is not double v ? TextTable.NotMeasured
        : baseMs is double b && b > 0 ? $"{v:F0} ({Math.Round((v / b - 1) * 100):+0;-0;+0}%)" : v.ToString("F0");

    /// <summary>The comparison as Markdown (empty when nothing was compared yet).</summary>
    public string Markdown()
    {
        if (rows.Count == 0) return "";
        var baseRow = rows.FirstOrDefault(r => r.Method == "base");
        var sb = new StringBuilder();
        sb.AppendLine();
        sb.AppendLine("## PEFT methods compared");
        sb.AppendLine();
        sb.AppendLine($"The same base, task (Debian description → synopsis), data order, seed ({o.Seed}) and step budget ({o.Steps} steps of batch {o.BatchSize}) for every method; " +
                      $"ROUGE F on the same {rows.Max(r => r.EvalExamples)} test examples as the table above. Each new method trains at its default learning rate" +
                      (o.CompareRateFactors.Count > 1 ? $" × the factor ({string.Join(", ", o.CompareRateFactors.Select(f => f.ToString("G3")))}) that scored best on validation (`sweep` in results.json)" : " (not swept in this budget)") +
                      ". Step (ms): the median training step of the row's own run" +
                      (rows.Any(r => r.StepMsSameSitting != null) ? $"; *step, one sitting*: every row timed again one after another, {o.StepTimeSteps} steps each (the first not counted), the list run forward then backward — the column to compare rows by, since a long run's rows trained on different days and machines. " : ". ") +
                      $"Latency: encoding the batch and {o.Latency.Steps} greedy decode steps with the KV cache (always all of them, so every row does the same work), " +
                      $"on the same {o.Latency.BatchSizes.Max()} test sources (batch 1: the first), median of {o.Latency.Repeats} runs after a warm-up; " +
                      (rows.Any(r => r.PairedBaseMsB1 != null)
                          ? "each row interleaved with a freshly loaded base (the two take turns run by run, so load that drifts falls on both), and in brackets the change against that base's median; rows whose base is not recorded: against the base row. "
                          : "in brackets the change against the base model's latency in the same run. ") +
                      "*Merged*: the method folded into the weights (LoRA, (IA)³, LN tuning); " +
                      "bottleneck adapters cannot merge, and BitFit trains the base's own weights (nothing to fold). " +
                      "Wall-clock numbers depend on the machine and on what else ran on it; read them against the base row of the same run.");
        sb.AppendLine();
        bool sitting = rows.Any(r => r.StepMsSameSitting != null);
        sb.AppendLine($"| method | size | ROUGE-1 | ROUGE-2 | ROUGE-L | trainable params | trainable % | optimizer state (MB) | peak memory (MB) | step (ms) | {(sitting ? "step, one sitting (ms) | " : "")}latency b=1 (ms) | latency b=32 (ms) | merged b=1 (ms) | merged b=32 (ms) | file (MB) | lr |");
        sb.AppendLine($"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|{(sitting ? "---:|" : "")}---:|---:|---:|---:|---:|---:|");
        foreach (var r in rows)
            sb.AppendLine($"| {r.Method} | {r.Size ?? ""} | {r.Rouge1:F4} | {r.Rouge2:F4} | {r.RougeL:F4} | {r.TrainableParams:N0} | {r.TrainablePercent:F3} | {Mb(r.OptimizerStateBytes)} | " +
                          $"{Mb(r.PeakBytes)} | {Ms(r.StepMs)} | {(sitting ? Ms(r.StepMsSameSitting) + " | " : "")}{Latency(r.LatencyMsB1, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1)} | {Latency(r.LatencyMsB32, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32)} | " +
                          $"{Latency(r.LatencyMsB1Merged, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1)} | {Latency(r.LatencyMsB32Merged, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32)} | {(r.FileBytes is long f ? Mb(f) : "")} | {r.LearningRate?.ToString("G3") ?? ""} |");
        var trained = rows.Where(r => r.PeakBytesByCategory != null).ToList();
        if (trained.Count > 0)
        {
            sb.AppendLine();
            sb.AppendLine("Peak memory by category during training (MB, from the device ledger):");
            sb.AppendLine();
            sb.AppendLine("| method | size | parameters | gradients | optimizer state | activations | other | total peak |");
            sb.AppendLine("|---|---|---:|---:|---:|---:|---:|---:|");
            foreach (var r in trained)
            {
                long Get(string k) => r.PeakBytesByCategory!.TryGetValue(k, out var v) ? v : 0;
                sb.AppendLine($"| {r.Method} | {r.Size ?? ""} | {Mb(Get("parameter"))} | {Mb(Get("gradient"))} | {Mb(Get("optimizer_state"))} | {Mb(Get("activation"))} | {Mb(Get("other"))} | {Mb(r.PeakBytes)} |");
            }
        }
        return sb.ToString();
    }

    /// <summary>The comparison table printed on stdout.</summary>
    public TextTable Table()
    {
        var baseRow = rows.FirstOrDefault(r => r.Method == "base");
        var t = new TextTable(new TextColumn("method"), new TextColumn("size"), new TextColumn("ROUGE-1", true), new TextColumn("ROUGE-L", true),
            new TextColumn("trainable", true), new TextColumn("% of base", true), new TextColumn("opt state MB", true), new TextColumn("ms/step", true),
            new TextColumn("b=1 ms", true), new TextColumn("b=32 ms", true), new TextColumn("merged b=1", true), new TextColumn("merged b=32", true), new TextColumn("file MB", true));
        foreach (var r in rows)
            t.AddRow(r.Method, r.Size ?? "", r.Rouge1.ToString("F4"), r.RougeL.ToString("F4"), r.TrainableParams.ToString("N0"), r.TrainablePercent.ToString("F3"),
                Mb(r.OptimizerStateBytes), Ms(r.StepMs), Latency(r.LatencyMsB1, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1), Latency(r.LatencyMsB32, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32),
                Latency(r.LatencyMsB1Merged, r.PairedBaseMsB1 ?? baseRow?.LatencyMsB1), Latency(r.LatencyMsB32Merged, r.PairedBaseMsB32 ?? baseRow?.LatencyMsB32), r.FileBytes is long f ? Mb(f) : "");
        return t;
    }
}
