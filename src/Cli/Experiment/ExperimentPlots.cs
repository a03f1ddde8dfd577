using Nanolora.Lora;
using ScottPlot;

namespace Nanolora.Cli;

/// <summary>
/// The experiment's two PNGs. Legends sit outside the data area (inside, they covered curves), a smoothed curve says its
/// window, a log axis says it is one, and a line measured on another budget than the points says which.
/// </summary>
internal static class ExperimentPlots
{
    /// <summary>Training loss of full fine-tuning and LoRA, each a moving average whose window the legend states.</summary>
    public static void Loss(IReadOnlyDictionary<string, List<float>> losses, ExperimentOptions o, string path)
    {
        var plot = new Plot();
        foreach (var (name, series) in losses)
        {
            int window = Plots.SmoothingWindow(series.Count, 50);
            var smooth = Plots.MovingAverage(series, window);
            var line = plot.Add.Scatter(Enumerable.Range(1, smooth.Length).Select(i => (double)i).ToArray(), smooth);
            string method = name == "full" ? "full fine-tuning" : $"LoRA r={LoraDefaults.Rank} ({string.Join(", ", LoraDefaults.TargetModules)})";
            line.LegendText = window > 1 ? $"{method}, moving average over {window} steps" : method;
            line.MarkerSize = 0;
        }
        plot.Title("Training loss: full fine-tuning vs LoRA (Debian synopses)");
        plot.XLabel("step");
        plot.YLabel("label-smoothed cross-entropy");
        plot.ShowLegend(Edge.Bottom);
        Plots.SaveAtomically(plot, path);
    }

    /// <summary>ROUGE-1 of the rank ablation's points, with the lead-8, base, full and LoRA r=8 rows as reference lines.</summary>
    public static void Rank(IReadOnlyList<ResultRow> rows, ExperimentOptions o, string path)
    {
        // One point per rank: the mean over the seeds, with a bar from the lowest to the highest seed's score.
        var ablation = rows.Where(r => r.Method == "lora-ablation" && r.Rank != null).GroupBy(r => r.Rank!.Value).OrderBy(g => g.Key)
            .Select(g => (Rank: g.Key, Mean: g.Average(r => r.Rouge1), Low: g.Min(r => r.Rouge1), High: g.Max(r => r.Rouge1), Seeds: g.Count(), g.First().EvalExamples)).ToList();
        var plot = new Plot();
        if (ablation.Count > 0)
        {
            var xs = ablation.Select(r => Math.Log2(r.Rank)).ToArray();
            var points = plot.Add.Scatter(xs, ablation.Select(r => r.Mean).ToArray());
            int seeds = ablation.Max(r => r.Seeds);
            points.LegendText = $"LoRA rank ablation: {o.AblationSteps} steps per rank, alpha 2r, {ablation[0].EvalExamples} test examples, " +
                (seeds > 1 ? $"mean of {seeds} seeds (bars: lowest to highest)" : "one seed");
            for (int i = 0; i < ablation.Count && seeds > 1; i++)
            {
                var bar = plot.Add.Line(xs[i], ablation[i].Low, xs[i], ablation[i].High);
                bar.Color = points.Color;
                bar.LineWidth = 2;
            }
            plot.Axes.Bottom.SetTicks(xs, ablation.Select(r => r.Rank.ToString()).ToArray());
            var references = new (string Method, string Label)[] { ("lead-8", "lead-8 (first 8 words of the source)"), ("base", "base model, not fine-tuned"),
                ("full", "full fine-tuning"), ("lora", $"LoRA r={LoraDefaults.Rank}") };
            foreach (var (method, label) in references)
                if (rows.FirstOrDefault(r => r.Method == method && r.Task == "debian") is { } row)
                {
                    var h = plot.Add.HorizontalLine(row.Rouge1);
                    // The lines come from the main rows, whose budget (steps, test sample) is not the ablation's.
                    h.LegendText = row.Steps is int steps ? $"{label}: {steps} steps, {row.EvalExamples} test examples" : $"{label}: {row.EvalExamples} test examples";
                    h.LinePattern = method is "lead-8" or "base" ? LinePattern.Dashed : LinePattern.Solid;
                }
        }
        plot.Title("ROUGE-1 vs LoRA rank (Debian synopses)");
        plot.XLabel("rank r (log₂ scale)");
        plot.YLabel("ROUGE-1 F");
        plot.ShowLegend(Edge.Bottom);
        Plots.SaveAtomically(plot, path, height: 640);
    }
}
