using Nanolora.Lora;
using ScottPlot;

namespace Nanolora.Cli;

/// <summary>
/// The experiment's PNGs. Legends sit outside the data area (inside, they covered curves), a smoothed curve says its
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
            // The row's own targets and start (the legend once named the library default, q_proj and v_proj, whatever ran).
            string method = name == "full" ? "full fine-tuning"
                : $"LoRA r={LoraDefaults.Rank} ({string.Join(", ", o.LoraTargets)}{(o.LoraInit == LoraInit.LoraGa ? "; LoRA-GA start" : "")})";
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

    /// <summary>A point of <see cref="QualityVsParameters"/>: one method and size, its trainable share and its score.</summary>
    public sealed record MethodPoint(string Label, double TrainablePercent, double Score);

    /// <summary>A horizontal reference line of <see cref="QualityVsParameters"/>; dashed for what trains nothing.</summary>
    public sealed record ReferenceLine(string Label, double Score, bool Dashed);

    /// <summary>
    /// The seed's trade-off in one picture: each method's score against the share of the base's parameters it trains, on a
    /// log axis (prompt tuning's 0.05 % and full fine-tuning's 100 % are four decades apart), each point named beside it.
    /// The methods that train nothing (lead-8, the base) are lines, so every gain reads as height above them.
    /// </summary>
    public static void QualityVsParameters(IReadOnlyList<MethodPoint> points, IReadOnlyList<ReferenceLine> lines, string title, string yLabel, string path)
    {
        var plot = new Plot();
        plot.Add.Palette = new ScottPlot.Palettes.Tsitsulin();   // a dozen methods: 25 saturated colours, none repeated
        var trained = points.Where(p => p.TrainablePercent > 0).ToList();
        // Neutral colours for the lines (the palette's belong to the methods' points), one shade per line.
        Color[] shades = [Colors.Gray, Colors.Black, Colors.DarkGray, Colors.DimGray];
        for (int i = 0; i < lines.Count; i++)
        {
            var h = plot.Add.HorizontalLine(lines[i].Score);
            h.LegendText = lines[i].Label;
            h.LinePattern = lines[i].Dashed ? LinePattern.Dashed : LinePattern.Solid;
            h.Color = shades[i % shades.Length];
        }
        foreach (var p in trained)
        {
            double x = Math.Log10(p.TrainablePercent);
            var marker = plot.Add.Marker(x, p.Score);
            marker.MarkerSize = 9;
            var text = plot.Add.Text(p.Label, x, p.Score);
            text.LabelFontSize = 11;
            text.LabelOffsetX = 7;
            text.LabelOffsetY = -7;
            text.LabelFontColor = marker.Color;
        }
        if (trained.Count > 0)
        {
            // Decade ticks over the points' range, labelled as percentages, and room on the right for the last label.
            int low = (int)Math.Floor(trained.Min(p => Math.Log10(p.TrainablePercent))), high = (int)Math.Ceiling(trained.Max(p => Math.Log10(p.TrainablePercent)));
            var decades = Enumerable.Range(low, high - low + 1).Select(d => (double)d).ToArray();
            plot.Axes.Bottom.SetTicks(decades, decades.Select(d => Math.Pow(10, d).ToString("0.###") + " %").ToArray());
            var scores = trained.Select(p => p.Score).Concat(lines.Select(l => l.Score)).ToList();
            double pad = Math.Max(0.01, (scores.Max() - scores.Min()) * 0.08);
            plot.Axes.SetLimits(low - 0.1, high + 0.6, scores.Min() - pad, scores.Max() + pad);
        }
        plot.Title(title);
        plot.XLabel("trainable parameters, % of the base model (log₁₀ scale)");
        plot.YLabel(yLabel);
        plot.ShowLegend(Edge.Bottom);
        Plots.SaveAtomically(plot, path, width: 1000, height: 660);
    }
}
