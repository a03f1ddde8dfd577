using System.Text.Json.Serialization;
using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// One row of results.json's seq2seq table: a method's scores and costs. A cost that was not measured (lead-8 and the base
/// train nothing, so they have no step time, peak or optimizer) is null, never 0; the tables show it as "—". Trainable %
/// is of the base model's parameters (adapters excluded), as everywhere in Nanolora.
/// </summary>
public sealed record ResultRow(string Method, string Task, int? Rank, double Rouge1, double Rouge2, [property: JsonPropertyName("rougeL")] double RougeL,
    long TrainableParams, double TrainablePercent, long? OptimizerStateBytes, long? PeakBytes, double? StepMs, long? AdapterBytes, long? CheckpointBytes,
    int EvalExamples, int? Steps, IReadOnlyDictionary<string, long>? PeakBytesByCategory, long? PoolReservedPeakBytes = null, long? ProcessPeakRssBytes = null,
    float? LearningRate = null, ulong? Seed = null, double? Chrf = null, double? Bleu = null, double? ChrfUncased = null, double? BleuUncased = null)
{
    /// <summary>A row from what the runner measured; 0 for rank, sizes or steps means "none".</summary>
    public static ResultRow Of(string method, string task, int rank, RougeResult rouge, TrainResult? train, long adapterBytes, long baseParameters,
        long checkpointBytes, int examples, int steps)
    {
        long trainable = train?.TrainableParameters ?? 0;
        return new ResultRow(method, task, rank > 0 ? rank : null, rouge.Rouge1.F, rouge.Rouge2.F, rouge.RougeL.F, trainable,
            TrainableReport.PercentOfBase(trainable, baseParameters), train?.OptimizerStateBytes, train?.Memory.PeakBytes, train?.MedianStepMilliseconds,
            adapterBytes > 0 ? adapterBytes : null, checkpointBytes > 0 ? checkpointBytes : null, examples, steps > 0 ? steps : null,
            train?.Memory.PeakByCategory.ToDictionary(kv => JsonOutput.Snake(kv.Key.ToString()), kv => kv.Value), train?.Memory.PeakReservedBytes,
            train != null ? MemoryReport.PeakRssBytes() : null);
    }
}
