using System.Diagnostics;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Bench;

/// <summary>
/// Activation checkpointing's trade: peak ledger bytes by category and step time, full fine-tuning vs LoRA r=8 on
/// q,k,v,o, each with and without GradientCheckpointing, on the presets given (default: small and transformer-base).
/// Memory is read with one model alive; times alternate the two models' steps (a shared machine's load swings hit both).
/// Before timing, the first step's loss with checkpointing is checked to be bitwise the one without.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll ckpt-step [device] [preset:BxSxT ...] [steps=N]
/// e.g. ckpt-step cpu small:32x96x16 transformer-base:8x64x64 steps=3; a preset name ending in -postln (small-postln:32x96x16)
/// puts its LayerNorms after each sublayer, as BERT and the main job's base do.
/// </summary>
public static class CheckpointStepQuick
{
    static readonly MemoryCategory[] Columns = [MemoryCategory.Parameter, MemoryCategory.Gradient, MemoryCategory.OptimizerState, MemoryCategory.Activation, MemoryCategory.Other];

    public static void Run(string deviceId, string[] rest)
    {
        var device = Device.Get(deviceId);
        var (cases, steps) = StepsAndCases(rest, 3);
        Console.WriteLine($"== activation checkpointing on {device}: vocab 8000, AdamW, peaks of one step after a warm-up step (one model alive); time: the median of {steps} steps, plain and checkpointed models alternating");
        // At the peak: what was live when the total peaked (sums to the total); the activation peak is that category's own maximum.
        Console.WriteLine("| preset (B×S×T) | method | checkpointing | step median (min) | peak total | at the peak: " + string.Join(" | ", Columns) + " | activation peak |");
        Console.WriteLine("|---|---|---|---:|---:|" + string.Concat(Columns.Select(_ => "---:|")) + "---:|");
        foreach (var spec in cases)
        {
            var (preset, b, s, t) = Parse(spec);
            // "small-postln": the preset with its norms after each sublayer (BERT's and the main job's base), not before.
            bool postLn = preset.EndsWith("-postln");
            var config = TransformerConfig.Preset(postLn ? preset[..^"-postln".Length] : preset, 8000) with { PreNorm = !postLn };
            var results = new Dictionary<(bool Lora, bool Ckpt), (double Ms, LedgerSnapshot Memory)>();
            TrainStepCase Make(bool lora, bool ckpt)
            {
                var c = new TrainStepCase(lora, device, config, b, s, t);
                c.Model.GradientCheckpointing = ckpt;
                return c;
            }
            foreach (bool lora in new[] { false, true })
            {
                // Memory: one model at a time, so the ledger sees only its bytes (deterministic).
                var memory = new Dictionary<bool, LedgerSnapshot>();
                foreach (bool ckpt in new[] { false, true })
                {
                    using var c = Make(lora, ckpt);
                    c.Run();   // creates AdamW's state and fills the pool
                    device.Ledger.ResetPeaks();
                    c.Run();
                    memory[ckpt] = device.Ledger.Snapshot();
                }
                // Time: both models alive, steps alternating, so load swings on a shared machine hit both alike.
                using var plain = Make(lora, false);
                using var checkpointed = Make(lora, true);
                float p = plain.Run(), q = checkpointed.Run();
                if (BitConverter.SingleToInt32Bits(p) != BitConverter.SingleToInt32Bits(q))
                    throw new InvalidOperationException($"{preset} {(lora ? "LoRA" : "full")}: the first loss with checkpointing is {q:R}, without {p:R}.");
                var times = new Dictionary<bool, List<double>> { [false] = new(), [true] = new() };
                for (int i = 0; i < steps; i++)
                    foreach (bool ckpt in new[] { false, true })
                    {
                        var clock = Stopwatch.StartNew();
                        (ckpt ? checkpointed : plain).Run();
                        times[ckpt].Add(clock.Elapsed.TotalMilliseconds);
                    }
                foreach (bool ckpt in new[] { false, true })
                {
                    var sorted = times[ckpt].Order().ToList();
                    double median = sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
                    var snap = memory[ckpt];
                    results[(lora, ckpt)] = (median, snap);
                    Console.WriteLine($"| {preset} ({b}×{s}×{t}) | {(lora ? $"LoRA r=8 q,k,v,o ({plain.TrainableParameters:N0} trainable)" : $"full ({plain.TrainableParameters:N0})")} | {(ckpt ? "on" : "off")} " +
                        $"| {median:F0} ms ({sorted[0]:F0}) | {BenchModels.Mb(snap.PeakBytes)} | " + string.Join(" | ", Columns.Select(k => BenchModels.Mb(snap.AtPeakByCategory![k]))) +
                        $" | {BenchModels.Mb(snap.PeakByCategory[MemoryCategory.Activation])} |");
                }
            }
            foreach (bool lora in new[] { false, true })
            {
                var (off, on) = (results[(lora, false)], results[(lora, true)]);
                Console.WriteLine($"   {preset} {(lora ? "LoRA" : "full")}: activation peak {Ratio(off.Memory, on.Memory, MemoryCategory.Activation):F2}× lower, step time {100 * (on.Ms / off.Ms - 1):+0;-0}%");
            }
            foreach (bool ckpt in new[] { false, true })
                Console.WriteLine($"   {preset} checkpointing {(ckpt ? "on" : "off")}: LoRA peak / full peak = {(double)results[(true, ckpt)].Memory.PeakBytes / results[(false, ckpt)].Memory.PeakBytes:F3}");
        }
    }

    static double Ratio(LedgerSnapshot off, LedgerSnapshot on, MemoryCategory c) => (double)off.PeakByCategory[c] / on.PeakByCategory[c];

    /// <summary>A training-step bench's arguments: preset:BxSxT cases (default small and transformer-base) and steps=N.</summary>
    internal static (List<string> Cases, int Steps) StepsAndCases(string[] rest, int defaultSteps)
    {
        int steps = rest.Where(a => a.StartsWith("steps=")).Select(a => int.Parse(a["steps=".Length..])).DefaultIfEmpty(defaultSteps).First();
        var cases = rest.Where(a => !a.StartsWith("steps=")).ToList();
        return (cases.Count > 0 ? cases : ["small:32x96x16", "transformer-base:8x64x64"], steps);
    }

    /// <summary>"small:32x96x16" → (small, 32, 96, 16); a bare preset gets B 32, S 96, T 16.</summary>
    internal static (string Preset, int B, int S, int T) Parse(string spec)
    {
        var parts = spec.Split(':');
        if (parts.Length == 1) return (parts[0], 32, 96, 16);
        var n = parts[1].Split('x').Select(int.Parse).ToArray();
        if (n.Length != 3) throw new ArgumentException($"Expected preset:BxSxT, got '{spec}'.");
        return (parts[0], n[0], n[1], n[2]);
    }
}
