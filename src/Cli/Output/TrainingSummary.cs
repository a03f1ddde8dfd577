using Nanolora.Transformer;

namespace Nanolora.Cli.Output;

/// <summary>
/// What pretrain, train and finetune print when they finish: one line of text plus the memory line, or with
/// <c>--json</c> one document (schema nanolora.train/1, docs/cli-json.md). The per-step losses are in the run's
/// trainer_state.json (log_history), not repeated here.
/// </summary>
internal static class TrainingSummary
{
    public const string Schema = "nanolora.train/1";

    /// <summary>Prints the summary of <paramref name="result"/>; <paramref name="baseParameters"/> is the trainable-% denominator; <paramref name="loraPlusRatio"/> the LoRA+ ratio of the run, if any; <paramref name="riemannianReg"/> the damping of its Riemannian preconditioner, if any.</summary>
    public static void Write(bool json, string command, string method, string task, string device, string output, int steps, long baseParameters, TrainResult result, float? loraPlusRatio = null,
        float? riemannianReg = null)
    {
        double percent = Nanolora.Lora.TrainableReport.PercentOfBase(result.TrainableParameters, baseParameters);
        if (json)
        {
            JsonOutput.Write(new TrainJson(Schema, command, method, task, device, output, steps, result.Losses.Count, result.TrainableParameters, baseParameters, percent,
                result.Losses.Count > 0 ? result.Losses[^1] : null, result.MeanStepMilliseconds, result.MedianStepMilliseconds, result.OptimizerStateBytes,
                result.ValidationLosses.Select(v => new ValidationJson(v.Step, v.Loss)).ToList(), JsonOutput.Memory(result.Memory)) { LoraplusLrRatio = loraPlusRatio, RiemannianReg = riemannianReg });
            return;
        }
        string loss = result.Losses.Count > 0 ? $"final loss {result.Losses[^1]:F3}" : "no steps run";
        string loraPlus = (loraPlusRatio is float r ? $" (LoRA+: B at {r:G}× the learning rate)" : "") + (riemannianReg is float reg ? $" (Riemannian preconditioned, reg {reg:G})" : "");
        Console.WriteLine($"{command}: trained {result.TrainableParameters:N0} parameters ({percent:F2}% of the base model's {baseParameters:N0}){loraPlus} on {device}, {loss}, " +
                          $"{result.MedianStepMilliseconds:F0} ms/step (median), optimizer state {result.OptimizerStateBytes:N0} B → {output}");
        Console.WriteLine(MemoryReport.Line(result.Memory));
    }
}

/// <summary>The summary document of a training command.</summary>
internal sealed record TrainJson(string Schema, string Command, string Method, string Task, string Device, string Output, int Steps, int StepsRun,
    long TrainableParameters, long BaseParameters, double TrainablePercent, float? FinalLoss, double MeanStepMs, double MedianStepMs, long OptimizerStateBytes,
    IReadOnlyList<ValidationJson> ValidationLosses, MemoryJson Memory)
{
    /// <summary>LoRA+'s ratio of B's learning rate to A's (PEFT's loraplus_lr_ratio); omitted when the run did not use LoRA+.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public float? LoraplusLrRatio { get; init; }
    /// <summary>The damping of the Riemannian preconditioner (PEFT's create_riemannian_optimizer reg); omitted when the run did not use it.</summary>
    [System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)]
    public float? RiemannianReg { get; init; }
}

/// <summary>A validation loss and the step it was measured after.</summary>
internal sealed record ValidationJson(int Step, float Loss);
