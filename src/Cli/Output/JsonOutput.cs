using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli.Output;

/// <summary>
/// The <c>--json</c> output of the result commands: one JSON document on stdout (snake_case names, a <c>schema</c> field
/// naming the layout and its version), documented in docs/cli-json.md. Progress and status stay on stderr, so stdout
/// parses as it is.
/// </summary>
internal static class JsonOutput
{
    /// <summary>
    /// snake_case property names, as results.json and the checkpoint files use. Dictionary keys are data (tensor names,
    /// metadata keys, ROUGE's own "rougeL") and are written as they are; the few that are ours are converted where made.
    /// </summary>
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        // NaN never reaches here (training stops on it), but a ratio of zero counts must not make serialization throw.
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
    };

    /// <summary>The same, on one line: for commands that write one document per input line (generate).</summary>
    public static readonly JsonSerializerOptions Lines = new(Options) { WriteIndented = false };

    /// <summary>The <c>--json</c> option, described the same way on every command.</summary>
    public static Option<bool> Option(string schema) =>
        new("--json") { Description = $"print the result as JSON on stdout (schema {schema}, see docs/cli-json.md) instead of a table" };

    /// <summary>Writes one document to stdout.</summary>
    public static void Write<T>(T document) => Console.Out.WriteLine(JsonSerializer.Serialize(document, Options));

    /// <summary>ROUGE as <c>rouge --json</c> prints it: {"rouge1":{"precision":P,"recall":R,"f":F}, …}.</summary>
    public static Dictionary<string, RougeJson> Rouge(RougeResult r) => new()
    {
        ["rouge1"] = new(r.Rouge1), ["rouge2"] = new(r.Rouge2), ["rougeL"] = new(r.RougeL), ["rougeLsum"] = new(r.RougeLsum),
    };

    /// <summary>A ledger snapshot's peaks, in bytes, by category in snake_case (parameter, gradient, optimizer_state, …).</summary>
    public static MemoryJson Memory(LedgerSnapshot m) => new(m.PeakBytes, m.PeakReservedBytes, MemoryReport.PeakRssBytes(),
        m.PeakByCategory.ToDictionary(kv => Snake(kv.Key.ToString()), kv => kv.Value));

    /// <summary>"OptimizerState" → "optimizer_state".</summary>
    public static string Snake(string name) => JsonNamingPolicy.SnakeCaseLower.ConvertName(name);
}

/// <summary>One ROUGE variant's precision, recall and F.</summary>
internal sealed record RougeJson(double Precision, double Recall, double F)
{
    public RougeJson(RougeScore s) : this(s.Precision, s.Recall, s.F) { }
}

/// <summary>Memory peaks of a training run, in bytes.</summary>
internal sealed record MemoryJson(long TensorPeakBytes, long PoolReservedPeakBytes, long ProcessPeakRssBytes, IReadOnlyDictionary<string, long> PeakBytesByCategory);
