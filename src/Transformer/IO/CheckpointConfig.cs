using System.Text.Json;
using System.Text.Json.Nodes;

namespace Nanolora.Transformer;

/// <summary>
/// A seq2seq checkpoint's configuration as JSON, snake_case like every Nanolora file: <c>config.json</c> beside
/// <c>model.safetensors</c> (so tools read it without parsing the weights, as in a Hugging Face folder) and the same text
/// in the weights' <c>config</c> metadata. Reading prefers config.json and refuses a folder whose two copies disagree;
/// checkpoints written before config.json existed (PascalCase metadata only) still load.
/// </summary>
public static class CheckpointConfig
{
    /// <summary>The file's name, beside model.safetensors.</summary>
    public const string FileName = "config.json";

    /// <summary>The <c>model_type</c> written into config.json (Hugging Face's key for the architecture).</summary>
    public const string ModelType = "nanolora-seq2seq";

    static readonly JsonSerializerOptions Snake = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>Names the naming policy gets wrong for this config: DFF is T5's and BART's <c>d_ff</c>, not "dff".</summary>
    static readonly (string Policy, string Written)[] Renamed = [("dff", "d_ff")];

    /// <summary>Derived values the policy would write and nothing reads (an edit there would be silently ignored).</summary>
    static readonly string[] Derived = ["head_width"];

    /// <summary>The config as snake_case JSON with <c>model_type</c> first.</summary>
    public static string Serialize(TransformerConfig config)
    {
        var node = JsonSerializer.SerializeToNode(config, Snake)!.AsObject();
        var root = new JsonObject { ["model_type"] = ModelType };
        foreach (var (key, value) in node.ToList())
        {
            node.Remove(key);
            if (Derived.Contains(key)) continue;
            root[Renamed.FirstOrDefault(r => r.Policy == key).Written ?? key] = value;
        }
        return root.ToJsonString(Snake);
    }

    /// <summary>Writes config.json into <paramref name="directory"/> atomically.</summary>
    public static void Write(string directory, TransformerConfig config) =>
        AtomicFile.WriteAllText(Path.Combine(directory, FileName), Serialize(config) + "\n");

    /// <summary>Parses either casing (snake_case now, PascalCase in older weights' metadata), then validates.</summary>
    public static TransformerConfig Parse(string json, string source)
    {
        TransformerConfig? config;
        try
        {
            var parsed = JsonNode.Parse(json);
            if (parsed == null) throw new InvalidDataException($"{source}: the config is null.");
            if (parsed is not JsonObject node) throw new InvalidDataException($"{source}: the config does not parse (a JSON {parsed.GetValueKind()}, expected an object).");
            bool snake = node.ContainsKey("d_model") || node.ContainsKey("model_type");
            foreach (var (policy, written) in Renamed)
                if (snake && node[written] is { } value) { node.Remove(written); node[policy] = value.DeepClone(); }
            config = node.Deserialize<TransformerConfig>(snake ? Snake : JsonSerializerOptions.Default);
        }
        catch (JsonException e) { throw new InvalidDataException($"{source}: the config does not parse ({e.Message})"); }
        if (config == null) throw new InvalidDataException($"{source}: the config is null.");
        try { config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{source}: config: {e.Message}"); }
        return config;
    }

    /// <summary>
    /// The config of the checkpoint in <paramref name="directory"/>: config.json if present, checked against the weights'
    /// metadata when that has one too; else the metadata alone.
    /// </summary>
    public static TransformerConfig Read(string directory, IReadOnlyDictionary<string, string> weightsMetadata, string weightsPath)
    {
        weightsMetadata.TryGetValue("config", out var embedded);
        var fromMetadata = embedded == null ? null : Parse(embedded, $"{weightsPath} ('config' metadata)");
        var file = Path.Combine(directory, FileName);
        if (!File.Exists(file))
            return fromMetadata ?? throw new InvalidDataException($"{weightsPath} has no 'config' metadata and there is no {FileName} beside it; it was not written by nanolora.");
        var fromFile = Parse(File.ReadAllText(file), file);
        if (fromMetadata != null && fromMetadata != fromFile)
            throw new InvalidDataException($"{file} and the 'config' metadata of {weightsPath} disagree ({Serialize(fromFile).ReplaceLineEndings(" ")} vs {Serialize(fromMetadata).ReplaceLineEndings(" ")}); the folder mixes two checkpoints.");
        return fromFile;
    }
}
