using Nanolora.Transformer;
using ScottPlot;

namespace Nanolora.Cli;

/// <summary>PNG plots shared by the experiment report and the train command.</summary>
public static class Plots
{
    /// <summary>Training loss (moving average) and validation loss of one run, e.g. a checkpoint's trainer_state.json.</summary>
    public static void TrainingCurve(IReadOnlyList<float> losses, IReadOnlyList<ValidationPoint> validation, string title, string path)
    {
        var plot = new Plot();
        // A moving average keeps the curve readable; the raw values are in trainer_state.json (log_history).
        int window = SmoothingWindow(losses.Count, 100);
        var smooth = MovingAverage(losses, window);
        var train = plot.Add.Scatter(Enumerable.Range(1, smooth.Length).Select(i => (double)i).ToArray(), smooth);
        train.LegendText = window > 1 ? $"training, moving average over {window} steps" : "training";
        train.MarkerSize = 0;
        if (validation.Count > 0)
        {
            var val = plot.Add.Scatter(validation.Select(v => (double)v.Step).ToArray(), validation.Select(v => (double)v.Loss).ToArray());
            val.LegendText = "validation (unsmoothed)";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("label-smoothed cross-entropy");
        plot.ShowLegend(Edge.Bottom);   // outside the data area: inside, it covered the curve
        SaveAtomically(plot, path);
    }

    /// <summary>The moving-average window that leaves about <paramref name="points"/> independent points of a series (at least 1).</summary>
    public static int SmoothingWindow(int count, int points) => Math.Max(1, count / points);

    /// <summary>Trailing mean over <paramref name="window"/> values (fewer at the start, where fewer exist).</summary>
    public static double[] MovingAverage(IReadOnlyList<float> values, int window)
    {
        var result = new double[values.Count];
        double sum = 0;
        for (int i = 0; i < values.Count; i++)
        {
            sum += values[i];
            if (i >= window) sum -= values[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }

    /// <summary>Writes the PNG beside its destination, then renames it into place.</summary>
    public static void SaveAtomically(Plot plot, string path, int width = 900, int height = 580)
    {
        var tmp = path + ".tmp.png";
        plot.SavePng(tmp, width, height);
        File.Move(tmp, path, overwrite: true);
    }
}
