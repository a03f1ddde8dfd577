using System.Diagnostics;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Bench;

/// <summary>
/// Where a training step's time goes, full fine-tuning beside LoRA r=8 on q,k,v,o, and LoRA on a 16-bit frozen base
/// (FrozenWeights.ToBFloat16): forward, backward and optimizer (median of N steps each, the models' steps alternating),
/// the peak ledger bytes of each, then the per-op table (NANOLORA_PROFILE's counters, summed over the same N steps) for
/// full and LoRA side by side, so a cut on the frozen path shows op by op.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll step-profile [device] [preset:BxSxT ...] [steps=N]
/// </summary>
public static class StepProfileQuick
{
    public static void Run(string deviceId, string[] rest)
    {
        var device = Device.Get(deviceId);
        var (cases, steps) = CheckpointStepQuick.StepsAndCases(rest, 5);
        Console.WriteLine($"== training step profile on {device}: vocab 8000, AdamW, medians of {steps} steps after one warm-up step, full and LoRA steps alternating");
        foreach (var spec in cases)
        {
            var (preset, b, s, t) = CheckpointStepQuick.Parse(spec);
            var config = TransformerConfig.Preset(preset, 8000);
            using var full = new TrainStepCase(false, device, config, b, s, t);
            using var lora = new TrainStepCase(true, device, config, b, s, t);
            using var lora16 = new TrainStepCase(true, device, config, b, s, t, base16: true);
            var cs = new[] { full, lora, lora16 };
            string[] names = ["full", "LoRA", "LoRA, 16-bit base"];
            var phases = cs.Select(_ => new List<(double F, double B, double O)>()).ToArray();
            var ops = new Dictionary<string, (double F, double B, long N)>[2];
            foreach (var c in cs) Timed(c);   // warm-up: optimizer state, pool
            // The three models share one ledger, so memory is each model's own parameter bytes (ckpt-step reads whole peaks).
            var parameterBytes = cs.Select(c => c.Model.Parameters().Sum(p => p.Data.Length * (p.Data.DType == DType.BFloat16 ? 2L : 4L))).ToArray();
            for (int k = 0; k < 2; k++)
            {
                Profiler.Enabled = true;
                Profiler.Reset();
                for (int i = 0; i < steps; i++) Timed(cs[k]);
                ops[k] = Profiler.Totals();
                Profiler.Enabled = false;
            }
            for (int i = 0; i < steps; i++)
                for (int k = 0; k < cs.Length; k++) phases[k].Add(Timed(cs[k]));
            Console.WriteLine($"\n### {preset} (B {b}, S {s}, T {t}): full {full.TrainableParameters:N0} trainable, LoRA {lora.TrainableParameters:N0}");
            Console.WriteLine("| method | forward ms | backward ms | optimizer ms | step ms | parameter bytes |");
            Console.WriteLine("|---|---:|---:|---:|---:|---:|");
            var totals = new double[cs.Length];
            for (int k = 0; k < cs.Length; k++)
            {
                double f = Median(phases[k].Select(p => p.F)), bw = Median(phases[k].Select(p => p.B)), o = Median(phases[k].Select(p => p.O));
                totals[k] = Median(phases[k].Select(p => p.F + p.B + p.O));
                Console.WriteLine($"| {names[k]} | {f:F0} | {bw:F0} | {o:F1} | {totals[k]:F0} | {BenchModels.Mb(parameterBytes[k])} |");
            }
            Console.WriteLine($"   {preset}: LoRA step / full step = {totals[1] / totals[0]:F3}");
            Console.WriteLine($"   {preset}: 16-bit base: step {totals[2] / totals[1]:F3}× LoRA's, parameters {(double)parameterBytes[2] / parameterBytes[1]:F3}× LoRA's");
            Console.WriteLine($"\n| op (ms per step) | full forward | full backward | LoRA forward | LoRA backward |");
            Console.WriteLine("|---|---:|---:|---:|---:|");
            foreach (var name in ops[0].Keys.Union(ops[1].Keys).OrderByDescending(n => Sum(ops[0], n) + Sum(ops[1], n)))
            {
                var a = ops[0].GetValueOrDefault(name); var l = ops[1].GetValueOrDefault(name);
                Console.WriteLine($"| {name} | {a.F / steps:F1} | {a.B / steps:F1} | {l.F / steps:F1} | {l.B / steps:F1} |");
            }
        }
    }

    static double Sum(Dictionary<string, (double F, double B, long N)> d, string n) => d.TryGetValue(n, out var v) ? v.F + v.B : 0;

    /// <summary>One step split into forward (loss), backward and optimizer (step + zero grad), in milliseconds.</summary>
    static (double F, double B, double O) Timed(TrainStepCase c)
    {
        var clock = Stopwatch.StartNew();
        double f, b;
        using (new GraphScope())
        {
            Profiler.Mark();
            var loss = c.Model.Loss(c.Batch, 0f);
            float value = loss.Data.Item();
            f = clock.Elapsed.TotalMilliseconds;
            loss.Backward(freeValues: true);   // as the Trainer does
            b = clock.Elapsed.TotalMilliseconds - f;
            if (!float.IsFinite(value)) throw new InvalidOperationException($"Training step produced loss {value}.");
        }
        double before = clock.Elapsed.TotalMilliseconds;
        c.Optimizer.Step();
        c.Optimizer.ZeroGrad();
        c.Device.Synchronize();
        return (f, b, clock.Elapsed.TotalMilliseconds - before);
    }

    static double Median(IEnumerable<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }
}
