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
        List<(float Rate, double Rouge1)> Scored() =>
            _state.Sweep.Where(p => p.Method == method).Select(p => (Rate: p.LearningRate, Rouge1: p.ValidationRouge1)).OrderBy(x => x.Rate).ToList();
        foreach (float rate in rates) Try(rate);
        for (int extension = 0; extension < o.SweepEdgeExtensions; extension++)
        {
            var scored = Scored();
            float? beyond = SweepEdge.Beyond(scored);
            if (beyond == null) break;
            Output.Terminal.Status($"{method}: the best rate so far is the sweep's edge; trying {beyond.Value:G3} too.");
            Try(beyond.Value);
        }
        var all = Scored();
        var best = all.MaxBy(x => x.Rouge1);
        Output.Terminal.Status($"{method}: learning rate {best.Rate:G3} (validation ROUGE-1 {best.Rouge1:F4}; tried {string.Join(", ", all.Select(x => $"{x.Rate:G3} → {x.Rouge1:F4}"))})");
        if (_state.ForgetRowAtOtherRate(method, best.Rate) is { Count: > 0 } stale)
            Output.Terminal.Status($"experiment: {method}'s learning rate is now {best.Rate:G3}; rerunning what was trained at another ({string.Join(", ", stale)}).");
        return best.Rate;
    }
}
