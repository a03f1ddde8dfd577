using System.Text.Json;
using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// Which modules a method applies to, with PEFT's matching rules: a list of names matches a module whose name equals
/// one or ends with "." + one; a single string is a regex that must match the whole name; exclusions win.
/// </summary>
public sealed record ModuleSelector(IReadOnlyList<string> Names, string? Regex = null, IReadOnlyList<string>? ExcludeNames = null, string? ExcludeRegex = null)
{
    /// <summary>Whether the module at <paramref name="path"/> is selected.</summary>
    public bool Matches(string path)
    {
        if (ExcludeRegex != null && System.Text.RegularExpressions.Regex.IsMatch(path, "^(?:" + ExcludeRegex + ")$")) return false;
        if (ExcludeNames != null && ExcludeNames.Any(n => EndsWithModule(path, n))) return false;
        return Regex != null ? System.Text.RegularExpressions.Regex.IsMatch(path, "^(?:" + Regex + ")$") : Names.Any(n => EndsWithModule(path, n));
    }

    /// <summary>PEFT's suffix rule: <paramref name="name"/> is <paramref name="suffix"/> or ends with "." + it.</summary>
    public static bool EndsWithModule(string name, string suffix) => name == suffix || name.EndsWith("." + suffix, StringComparison.Ordinal);

    /// <summary>The index of the layer list entry <paramref name="path"/> lies in (<c>.layers.3.</c> → 3), or null; <paramref name="patterns"/> names the list (empty: PEFT's usual names).</summary>
    public static int? LayerIndex(string path, IReadOnlyList<string> patterns)
    {
        var names = patterns.Count > 0 ? string.Join('|', patterns.Select(System.Text.RegularExpressions.Regex.Escape)) : "layers|layer|h|blocks?";
        var m = System.Text.RegularExpressions.Regex.Match(path, @"(?:^|\.)(?:" + names + @")\.(\d+)\.");
        return m.Success ? int.Parse(m.Groups[1].Value) : null;
    }

    /// <summary>The selector as adapter_config.json writes it: a list of names or a regex string.</summary>
    internal JsonNode? TargetsJson() => Regex != null ? JsonValue.Create(Regex) : PeftFiles.Names(Names);
    /// <summary>The exclusions as adapter_config.json writes them (null when none).</summary>
    internal JsonNode? ExcludeJson() => ExcludeRegex != null ? JsonValue.Create(ExcludeRegex) : ExcludeNames is { Count: > 0 } e ? PeftFiles.Names(e) : null;
}

/// <summary>
/// The on-disk form the non-LoRA methods share with PEFT: a directory with <c>adapter_config.json</c> and
/// <c>adapter_model.safetensors</c>, tensor names prefixed <c>base_model.model.</c> and with the instance name removed
/// (PEFT's get_peft_model_state_dict), so an instance loads under any name. Reading a config is strict as LoRA's is:
/// a field that would change the maths in a way not implemented is refused by name, an unknown field is reported.
/// </summary>
internal static class PeftFiles
{
    public const string Prefix = "base_model.model.";

    /// <summary>A parameter as the writer takes it: key, shape, values.</summary>
    public static (string Key, int[] Shape, float[] Data) Entry(string key, Parameter p) => (key, p.Data.ShapeArray(), p.Data.ToArray());

    public static JsonArray Names(IEnumerable<string> names) => new(names.Select(n => (JsonNode)JsonValue.Create(n)!).ToArray());

    /// <summary>
    /// Writes config and tensors (keys without the prefix); refuses non-finite values, naming the tensor. <paramref name="prefix"/>
    /// is put before every key (prompt learning's <c>prompt_embeddings</c> has none in PEFT's files).
    /// </summary>
    public static void Write(string directory, JsonObject config, IEnumerable<(string Key, int[] Shape, float[] Data)> tensors, string prefix = Prefix)
    {
        Directory.CreateDirectory(directory);
        var weightsPath = Path.Combine(directory, AdapterFiles.WeightsFile);
        var list = tensors.Select(t => (prefix + t.Key, t.Shape, t.Data)).ToList();
        foreach (var (name, _, data) in list) NonFinite.Require(weightsPath, name, data, "Refusing to write the adapter");
        Safetensors.Write(weightsPath, list, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(directory, AdapterFiles.ConfigFile), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }

    /// <summary>
    /// Reads adapter_config.json, checks its <c>peft_type</c>, refuses a field of <paramref name="refused"/> whose value is not
    /// its harmless one, and reports (through <paramref name="warn"/>, default stderr) a field in none of the lists.
    /// </summary>
    public static JsonObject ReadConfig(string directory, string peftType, IReadOnlySet<string> known,
        IReadOnlyDictionary<string, (Func<JsonNode?, bool> Harmless, string Why)> refused, Action<string>? warn)
    {
        warn ??= Console.Error.WriteLine;
        var path = Path.Combine(directory, AdapterFiles.ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {AdapterFiles.ConfigFile} in '{directory}'.", path);
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: the top level is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}"); }
        if ((string?)root["peft_type"] != peftType)
            throw new InvalidDataException($"{path}: 'peft_type' must be \"{peftType}\" here, got {root["peft_type"]?.ToJsonString() ?? "nothing"}.");
        foreach (var (field, value) in root)
        {
            if (refused.TryGetValue(field, out var rule))
            {
                if (!rule.Harmless(value)) throw new InvalidDataException($"{path}: '{field}' is {value?.ToJsonString()}: {rule.Why}, so this adapter cannot be loaded.");
            }
            else if (!known.Contains(field) && !Bookkeeping.Contains(field))
                warn($"warning: {path}: unknown field '{field}' ignored (not a {peftType} field Nanolora knows).");
        }
        return root;
    }

    /// <summary>PeftConfig's fields every method has, which describe the adapter without changing its maths.</summary>
    static readonly HashSet<string> Bookkeeping = ["peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping", "peft_version"];

    public static bool IsNullOrFalse(JsonNode? n) => n is null || (n is JsonValue v && v.TryGetValue(out bool b) && !b);
    public static bool IsNullOrEmpty(JsonNode? n) => n is null || n is JsonArray { Count: 0 };

    public static InvalidDataException Bad(string directory, string field, string expected, JsonNode? actual) =>
        new($"{Path.Combine(directory, AdapterFiles.ConfigFile)}: '{field}' must be {expected}, got {actual?.ToJsonString() ?? "null"}.");

    /// <summary>A list of module names, or a single regex string (PEFT's Union[list[str], str]).</summary>
    public static (IReadOnlyList<string> Names, string? Regex) NamesOrRegex(string directory, JsonObject root, string field) => root[field] switch
    {
        null => ([], null),
        JsonValue v when v.TryGetValue(out string? s) => ([], s),
        JsonArray a => (a.Select(n => n is JsonValue v && v.TryGetValue(out string? s) ? s : throw Bad(directory, field, "a list of module names or a regex", n)).ToList(), null),
        var other => throw Bad(directory, field, "a list of module names or a regex", other),
    };

    public static bool Bool(string directory, JsonObject root, string field, bool fallback) => root[field] switch
    {
        null => fallback,
        JsonValue v when v.TryGetValue(out bool b) => b,
        var other => throw Bad(directory, field, "true or false", other),
    };

    /// <summary>
    /// Reads the weights file and checks every tensor against <paramref name="expected"/> (key without prefix → shape):
    /// a missing, extra or misshapen tensor, or a NaN, is refused by name before anything is copied. Keys start with
    /// <paramref name="prefix"/> in the file.
    /// </summary>
    public static Dictionary<string, float[]> ReadWeights(string directory, IReadOnlyDictionary<string, int[]> expected, string prefix = Prefix)
    {
        var path = Path.Combine(directory, AdapterFiles.WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {AdapterFiles.WeightsFile} in '{directory}'.", path);
        var file = Safetensors.Read(path);
        var values = new Dictionary<string, float[]>();
        foreach (var e in file.Entries)
        {
            var key = e.Name.StartsWith(prefix, StringComparison.Ordinal) ? e.Name[prefix.Length..]
                : throw new InvalidDataException($"{path}: tensor '{e.Name}' does not start with '{prefix}'.");
            if (!expected.TryGetValue(key, out var shape))
                throw new InvalidDataException($"{path}: tensor '{e.Name}' has no place in this model under this config.");
            if (!e.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{path}: tensor '{e.Name}' has shape {ShapeMath.Format(e.Shape)}, but the model needs {ShapeMath.Format(shape)}.");
            var data = file.ReadFloats(e.Name);
            NonFinite.Require(path, e.Name, data, "Refusing to load the adapter");
            values[key] = data;
        }
        foreach (var key in expected.Keys)
            if (!values.ContainsKey(key)) throw new InvalidDataException($"{path}: no tensor '{prefix}{key}', which this config needs.");
        return values;
    }
}
