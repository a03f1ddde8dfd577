using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>Spectre.Console progress bars for training (step, loss, tokens/s, ETA) and evaluation.</summary>
public static class ConsoleProgress
{
    public static T Train<T>(string title, int totalSteps, Func<IProgress<StepInfo>, T> run)
    {
        T result = default!;
        Columns().Start(ctx =>
        {
            var task = ctx.AddTask(Markup.Escape(title), maxValue: totalSteps);
            var progress = new SyncProgress<StepInfo>(s =>
            {
                task.Value = s.Step;
                var val = s.ValidationLoss is float v ? $" val {v:F3}" : "";
                task.Description = Markup.Escape($"{title}: step {s.Step}/{s.TotalSteps} loss {s.Loss:F3}{val} {s.TokensPerSecond:N0} tok/s");
            });
            result = run(progress);
            task.Value = totalSteps;
        });
        return result;
    }

    public static T Evaluate<T>(string title, int total, Func<IProgress<int>, T> run)
    {
        T result = default!;
        Columns().Start(ctx =>
        {
            var task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, total));
            result = run(new SyncProgress<int>(done => task.Value = done));
            task.Value = task.MaxValue;
        });
        return result;
    }

    static Progress Columns() => AnsiConsole.Progress().AutoClear(false).HideCompleted(false).Columns(
        new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
        new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn());

    /// <summary>Reports on the calling thread (System.Progress posts to the thread pool, out of order).</summary>
    sealed class SyncProgress<TValue>(Action<TValue> report) : IProgress<TValue>
    {
        public void Report(TValue value) => report(value);
    }
}
