using System.Diagnostics;
using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.DeviceRunner;

/// <summary>
/// <c>train-step --device D --preset small|transformer-base --method full|lora [--steps 10] [--small]</c>: one
/// training step (forward, cross-entropy, backward, AdamW, zero grads) as bench/LoraBench.cs's TrainStepCase times it,
/// in ms/step (median after 3 warm-ups), and the ledger's peak bytes by category (parameters, gradients, optimizer
/// state, activations), which is where LoRA's saving shows. Post-LN and vocabulary 8000, B 32, S 96, T 16 random
/// tokens, as bench/peers/torch_train_step.py builds the PyTorch peer. LoRA: r 8, α 16 on q, k, v, o (self and cross).
/// <c>--small</c> (B 4, S 16, T 8) is for a CPU smoke run.
/// </summary>
public static class TrainStepMode
{
    public static int Run(RunnerOptions o)
    {
        var device = o.Device();
        var preset = o.OneOf("preset", "small", "transformer-base");
        var method = o.OneOf("method", "full", "lora");
        bool small = o.Flag("small");
        int steps = o.Int("steps", small ? 3 : 10, 1, 1000);
        var (b, s, t) = small ? (4, 16, 8) : (32, 96, 16);
        var config = TransformerConfig.Preset(preset, 8000) with { PreNorm = false };

        using var model = new Seq2SeqTransformer(config, device);
        if (method == "lora") LoraModel.Inject(model, new LoraConfig { R = 8, Alpha = 16, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] });
        long trainable = model.ParameterCount(trainableOnly: true), total = model.ParameterCount();
        using var optimizer = new AdamW(model.TrainableParameters(), lr: 1e-4f);
        var batch = RandomBatch(config.VocabSize, b, s, t, 5);
        Console.WriteLine($"== train-step on {device}: {preset} (post-LN, d_model {config.DModel}, {config.EncoderLayers}+{config.DecoderLayers} layers), {method}," +
            $" B {b}, S {s}, T {t}; trainable {trainable:N0} of {total:N0} parameters");

        device.Ledger.ResetPeaks();
        var losses = new List<float>();
        for (int w = 0; w < 3; w++) losses.Add(Step(model, optimizer, batch, device));
        var times = new List<double>();
        var clock = new Stopwatch();
        for (int i = 0; i < steps; i++)
        {
            clock.Restart();
            losses.Add(Step(model, optimizer, batch, device));
            times.Add(clock.Elapsed.TotalSeconds);
        }
        var snap = device.Ledger.Snapshot();
        times.Sort();
        double median = steps % 2 == 1 ? times[steps / 2] : (times[steps / 2 - 1] + times[steps / 2]) / 2;
        bool finite = losses.All(float.IsFinite);
        Console.WriteLine($"step median {median * 1e3:F1} ms, best {times[0] * 1e3:F1} ms ({steps} steps); {b * (s + t) / median:N0} tokens/s;" +
            $" loss {losses[0]:F3} -> {losses[^1]:F3}{(finite ? "" : "  NOT FINITE")}; optimizer state {Results.MiB(optimizer.StateBytes)}");
        Console.WriteLine($"peak ledger {Results.MiB(snap.PeakBytes)} (pool reserved {Results.MiB(snap.PeakReservedBytes)}): " +
            string.Join(", ", snap.PeakByCategory.Select(kv => $"{kv.Key} {Results.MiB(kv.Value)}")));

        var results = Results.Start("train-step", device);
        results["preset"] = preset;
        results["method"] = method;
        results["batch"] = new JsonObject { ["B"] = b, ["S"] = s, ["T"] = t, ["vocab"] = config.VocabSize };
        results["trainable_parameters"] = trainable;
        results["total_parameters"] = total;
        results["optimizer_state_bytes"] = optimizer.StateBytes;
        results["steps"] = steps;
        results["ms_per_step_median"] = Math.Round(median * 1e3, 2);
        results["ms_per_step_best"] = Math.Round(times[0] * 1e3, 2);
        results["loss_first"] = losses[0];
        results["loss_last"] = losses[^1];
        results["memory"] = Results.Ledger(snap);
        Results.Write(o.JsonPath, results, finite);
        return finite ? 0 : 1;
    }

    static float Step(Seq2SeqTransformer model, Optimizer optimizer, Batch batch, Device device)
    {
        float loss = Trainer.StepOnce(model, optimizer, batch);
        device.Synchronize();
        return loss;
    }

    /// <summary>Uniformly random regular tokens (no padding): TargetInput = [Bos, y…], TargetOutput = [y…, Eos].</summary>
    static Batch RandomBatch(int vocab, int batch, int sourceLength, int targetLength, int seed)
    {
        var rng = new Random(seed);
        var src = Enumerable.Range(0, batch * sourceLength).Select(_ => rng.Next(4, vocab)).ToArray();
        var tin = new int[batch * targetLength];
        var tout = new int[batch * targetLength];
        for (int i = 0; i < batch; i++)
            for (int j = 0; j < targetLength; j++)
            {
                tout[i * targetLength + j] = j == targetLength - 1 ? SubwordTokenizer.Eos : rng.Next(4, vocab);
                tin[i * targetLength + j] = j == 0 ? SubwordTokenizer.Bos : tout[i * targetLength + j - 1];
            }
        return new Batch(src, tin, tout, batch, sourceLength, targetLength, Enumerable.Repeat(sourceLength, batch).ToArray());
    }
}
