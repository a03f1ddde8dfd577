using System.Text.Json.Serialization;

namespace Nanolora.Cli;

/// <summary>
/// One method and size of the experiment's comparison (<c>comparison[]</c> in results.json): the base, full fine-tuning,
/// LoRA r=8 and every <see cref="ExperimentOptions.Comparison"/> entry on the same base, task, data order, step budget and
/// seed — quality, what training cost, inference latency (unmerged and, where the method merges, merged) and the size of
/// what it saves. Null where not measured or not applicable (the base trains nothing; adapters cannot merge).
/// <c>PairedBaseMsB1</c>/<c>B32</c>: a freshly loaded base's latency measured interleaved with this row's, which its change
/// is computed against; null for the base row and for rows of runs older than that measurement. <c>StepMsSameSitting</c>:
/// the median training step timed again for every row in one sitting (<see cref="ExperimentOptions.StepTimeSteps"/>), where
/// <c>StepMs</c> comes from the row's own training run; null when not re-timed.
/// </summary>
public sealed record ComparisonRow(string Method, string? Size, double Rouge1, double Rouge2, [property: JsonPropertyName("rougeL")] double RougeL,
    long TrainableParams, double TrainablePercent, long? OptimizerStateBytes, long? PeakBytes, IReadOnlyDictionary<string, long>? PeakBytesByCategory, double? StepMs,
    double? LatencyMsB1, double? LatencyMsB32, double? LatencyMsB1Merged, double? LatencyMsB32Merged, long? FileBytes, int EvalExamples, int? Steps, float? LearningRate,
    double? PairedBaseMsB1 = null, double? PairedBaseMsB32 = null, double? StepMsSameSitting = null)
{
    /// <summary>A comparison row from a seq2seq table row and the latencies measured for it (batch size → median ms).</summary>
    public static ComparisonRow From(ResultRow r, string? size, IReadOnlyDictionary<int, double> latency, IReadOnlyDictionary<int, double>? merged, long? fileBytes) =>
        new(r.Method, size, r.Rouge1, r.Rouge2, r.RougeL, r.TrainableParams, r.TrainablePercent, r.OptimizerStateBytes, r.PeakBytes, r.PeakBytesByCategory, r.StepMs,
            LatencyProbe.At(latency, 1), LatencyProbe.At(latency, 32), LatencyProbe.At(merged, 1), LatencyProbe.At(merged, 32), fileBytes, r.EvalExamples, r.Steps, r.LearningRate);

}

/// <summary>
/// A method of the comparison beyond base, full and LoRA: a <see cref="PeftRecipes"/> name and its size. Adding a method or
/// size to the table is one more entry in <see cref="ExperimentOptions.Comparison"/>.
/// </summary>
/// <param name="Method">The <see cref="PeftRecipes"/> name (results.json's <c>method</c>).</param>
/// <param name="ReductionFactor">Bottleneck adapters: model width ÷ bottleneck width.</param>
/// <param name="Layers">Selective methods: the layers that train.</param>
public sealed record ComparisonEntry(string Method, int? ReductionFactor = null, IReadOnlyList<int>? Layers = null)
{
    /// <summary>The unit key's and folder's name: the method, with its size when it has one (<c>adapter-houlsby-rf16</c>).</summary>
    public string Key => Method + (ReductionFactor is int f ? $"-rf{f}" : "") + (Layers != null ? $"-layers{string.Join('_', Layers)}" : "");

    /// <summary>How <c>experiment --compare</c> spells it: <c>ia3</c>, <c>adapter-pfeiffer:4</c>, <c>selective:4_5</c>.</summary>
    public string Option => Method + (ReductionFactor is int f ? $":{f}" : "") + (Layers != null ? $":{string.Join('_', Layers)}" : "");

    /// <summary>The size column: "factor 16", "layers 0,2", or null.</summary>
    public string? Size => ReductionFactor is int f ? $"factor {f}" : Layers != null ? $"layers {string.Join(',', Layers)}" : null;

    /// <summary>The full run's methods beside LoRA: every family of the seed (selective, reparameterization, adapters, soft prompts).</summary>
    public static readonly IReadOnlyList<ComparisonEntry> Defaults =
    [
        new("bitfit"),
        new("ln-tuning"),
        new("ia3"),
        new("adapter-houlsby", ReductionFactor: 16),
        new("adapter-pfeiffer", ReductionFactor: 16),
        new("prompt-tuning"),
        new("prefix-tuning"),
        // Chosen layers (layers_to_transform) at index 5: the top layer of a 6-layer encoder (MiniLM, and the seq2seq
        // base's encoder, whose decoder has only 3 layers, so none of them). A run begun before it resumes into it (its rows kept).
        new("selective", Layers: [5]),
    ];

    /// <summary>
    /// The quick run's: one method of each family beside the base, full and LoRA rows — BitFit (selective), (IA)³
    /// (a rescaling that merges away), Houlsby adapters (additive, staying in the path: the LoRA paper's latency point)
    /// and prompt tuning (a soft prompt). Each costs the quick run about a minute on 2 cores (100 steps, 400 test
    /// decodes, the latency probe); the whole main job measured 7 min 26 s with the middle two only.
    /// </summary>
    public static readonly IReadOnlyList<ComparisonEntry> Quick =
    [
        new("bitfit"),
        new("ia3"),
        new("adapter-houlsby", ReductionFactor: 16),
        new("prompt-tuning"),
    ];
}
