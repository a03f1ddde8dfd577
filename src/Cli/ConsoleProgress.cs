using Nanolora.Cli.Output;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>
/// Spectre.Console progress bars for training (step, loss, tokens/s, ETA) and evaluation, drawn on stderr so that stdout
/// carries only results (when stderr is not a terminal, Spectre.Console prints a few milestone lines instead).
/// </summary>
public static class ConsoleProgress
{
    /// <summary>Runs <paramref name="run"/> with a training progress bar of <paramref name="totalSteps"/> steps on stderr and returns its result.</summary>
    public static T Train<T>(string title, int totalSteps, Func<IProgress<StepInfo>, T> run)
    {
        if (!Terminal.StderrIsTerminal)
        {
            // A log file gets a line per tenth of the run (and the last step), not a redrawn bar.
            var milestones = new Milestones(totalSteps, 10);
            return run(new SyncProgress<StepInfo>(s =>
            {
                if (!milestones.Passed(s.Step)) return;
                var val = s.ValidationLoss is float v ? $" val {v:F3}" : "";
                Console.Error.WriteLine($"{title}: step {s.Step}/{s.TotalSteps} loss {s.Loss:F3}{val} {s.TokensPerSecond:N0} tok/s");
            }));
        }
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

    /// <summary>Runs <paramref name="run"/> with a progress bar of <paramref name="total"/> items on stderr and returns its result.</summary>
    public static T Evaluate<T>(string title, int total, Func<IProgress<int>, T> run)
    {
        if (!Terminal.StderrIsTerminal)
        {
            var milestones = new Milestones(total, 4);
            return run(new SyncProgress<int>(done =>
            {
                if (milestones.Passed(done)) Console.Error.WriteLine($"{title}: {done:N0}/{total:N0}");
            }));
        }
        T result = default!;
        Columns().Start(ctx =>
        {
            var task = ctx.AddTask(Markup.Escape(title), maxValue: Math.Max(1, total));
            result = run(new SyncProgress<int>(done => task.Value = done));
            task.Value = task.MaxValue;
        });
        return result;
    }

    static Progress Columns() => Terminal.Stderr().Progress().AutoClear(false).HideCompleted(false).Columns(
        new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(),
        new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn());

    /// <summary>True once per crossing of each 1/<c>parts</c> of <c>total</c>, and at the end.</summary>
    sealed class Milestones(int total, int parts)
    {
        int _next = 1;

        public bool Passed(int done)
        {
            if (total <= 0 || done < (long)total * _next / parts) return false;
            while (_next <= parts && done >= (long)total * _next / parts) _next++;
            return true;
        }
    }

    /// <summary>Reports on the calling thread (System.Progress posts to the thread pool, out of order).</summary>
    sealed class SyncProgress<TValue>(Action<TValue> report) : IProgress<TValue>
    {
        public void Report(TValue value) => report(value);
    }
}
