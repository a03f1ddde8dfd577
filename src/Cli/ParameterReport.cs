using System.Text;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// The seed's worked example (one 512×64 per-head projection: 32,768 weights vs rank-r LoRA's r·(512+64))
/// and the real counts of a built model with LoRA injected.
/// </summary>
public static class ParameterReport
{
    public static string Build(string preset, int rank, IReadOnlyList<string> targets, int vocab)
    {
        var config = TransformerConfig.Preset(preset, vocab);
        var sb = new StringBuilder();
        int d = config.DModel, head = config.HeadWidth;
        long full = (long)d * head, lora = (long)rank * (d + head);
        sb.AppendLine($"One {d}×{head} per-head projection: {full:N0} parameters; rank-{rank} LoRA (B [{d}×{rank}], A [{rank}×{head}]): {lora:N0} = {rank}·({d}+{head}), {100.0 * (1 - (double)lora / full):F0}% fewer.");
        long fullSquare = (long)d * d, loraSquare = (long)rank * (d + d);
        sb.AppendLine($"One {d}×{d} projection (all heads): {fullSquare:N0} parameters; rank-{rank} LoRA: {loraSquare:N0}, {100.0 * (1 - (double)loraSquare / fullSquare):F1}% fewer.");
        sb.AppendLine();
        // Count on a real model, so the numbers come from the code that trains.
        using var model = new Seq2SeqTransformer(config with { Dropout = 0 }, Device.Cpu);
        long total = model.ParameterCount();
        var lm = LoraModel.Inject(model, new LoraConfig { R = rank, Alpha = rank, TargetModules = targets });
        var report = lm.Report();
        int adapted = lm.Layers.Count;
        sb.AppendLine($"Model '{preset}' (d_model {d}, {config.Heads} heads of {head}, d_ff {config.DFF}, {config.EncoderLayers}+{config.DecoderLayers} layers, vocabulary {vocab:N0}): {total:N0} parameters.");
        sb.AppendLine($"LoRA r={rank} on [{string.Join(", ", targets)}]: {adapted} adapted layers.");
        sb.AppendLine($"Full fine-tuning trains {total:N0} parameters; AdamW keeps {2 * total * 4:N0} bytes of state.");
        sb.AppendLine($"LoRA trains {report.Trainable:N0} parameters ({report.Percent:F3}% of {report.Total:N0}); AdamW keeps {2 * report.Trainable * 4:N0} bytes of state.");
        sb.Append(report.ToString());
        return sb.ToString();
    }
}
