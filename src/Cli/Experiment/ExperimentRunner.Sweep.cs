using Nanolora.Transformer;

namespace Nanolora.Cli;

// The validation sweep that chooses each method's learning rate.
public sealed partial class ExperimentRunner
{
    /// <summary>
    /// The rate of <paramref name="rates"/> whose short run scores best ROUGE-1 on the validation sample (one rate: no
    /// sweep). While the best is the lowest or highest rate tried, one grid step beyond it is tried too, up to
    /// <see cref="ExperimentOptions.SweepEdgeExtensions"/> times. The test split is never looked at here.
    /// </summary>
    float ChooseRate(string method, IReadOnlyList<float> rates, FineTuneOptions recipe, TaskData data, IReadOnlyList<Example> validation, string baseDir)
    {
        if (rates.Count == 1) return rates[0];
        void Try(float rate) =>
            Unit($"sweep:{method}:{rate.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}", () =>
            {
                var (model, tokenizer) = Checkpoint.Load(baseDir, device);
                using (model)
                {
                    var opt = recipe with { Method = method, LearningRate = rate, FullLearningRate = rate, Steps = o.SweepSteps };
                    Workflows.FineTune(model, tokenizer, data, opt, baseDir, title: $"sweep {method} lr {rate:G3}");
                    var e = Workflows.Evaluate(model, tokenizer, data.Name, validation, Decode(data.Name), $"sweep {method} lr {rate:G3}: validation");
                    _state.Sweep.Add(new RougeSweepPoint(method, rate, e.Rouge.Rouge1.F, o.SweepSteps, validation.Count));
                }
            });
        double Score(float rate)
        {
            if (!rates.Contains(rate)) Output.Terminal.Status($"{method}: the best rate so far is the sweep's edge; trying {rate:G3} too.");
            Try(rate);
            return _state.Sweep.First(p => p.Method == method && p.LearningRate == rate).ValidationRouge1;
        }
        var all = SweepEdge.Run(rates, Score, o.SweepEdgeExtensions);
        var best = all.MaxBy(x => x.Rouge1);   // ties: the grid's order, then the extensions'
        Output.Terminal.Status($"{method}: learning rate {best.Rate:G3} (validation ROUGE-1 {best.Rouge1:F4}; tried {string.Join(", ", all.OrderBy(x => x.Rate).Select(x => $"{x.Rate:G3} → {x.Rouge1:F4}"))})");
        var stale = _state.UnitsAtOtherRate(method, best.Rate);
        if (stale.Count > 0)
        {
            // Only a changed sweep (more extensions allowed on a resume) gets here: finished rows go only with consent.
            if (!o.RerunChanged)
                throw new ArgumentException($"experiment --resume: {method}'s sweep now chooses learning rate {best.Rate:G3}, not the rate its finished row was trained at; " +
                    $"pass --rerun-changed to rerun {string.Join(", ", stale)} at the new rate and keep the rest.");
            _state.Forget(stale);
            Output.Terminal.Status($"experiment: {method}'s learning rate is now {best.Rate:G3}; rerunning what was trained at another ({string.Join(", ", stale)}).");
        }
        return best.Rate;
    }
}
