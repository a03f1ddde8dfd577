using System.Text.Json;
using System.Text.Json.Nodes;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// An adapter on disk in Hugging Face PEFT's layout: <c>adapter_config.json</c> and
/// <c>adapter_model.safetensors</c> with keys <c>base_model.model.{path}.lora_A.weight</c> [R, in] and
/// <c>.lora_B.weight</c> [out, R] (plus trained biases and modules to save, by their own names).
/// </summary>
public static class AdapterFiles
{
    public const string ConfigFile = "adapter_config.json", WeightsFile = "adapter_model.safetensors";
    const string Prefix = "base_model.model.";

    public static void Save(LoraModel lora, string adapterName, string directory)
    {
        if (!lora.Adapters.TryGetValue(adapterName, out var config)) throw new KeyNotFoundException($"No adapter '{adapterName}' to save.");
        Directory.CreateDirectory(directory);
        var tensors = new List<(string, int[], float[])>();
        foreach (var (path, adapter) in lora.AdapterWeights(adapterName))
        {
            tensors.Add(($"{Prefix}{path}.lora_A.weight", adapter.A.Data.ShapeArray(), adapter.A.Data.ToArray()));
            tensors.Add(($"{Prefix}{path}.lora_B.weight", adapter.B.Data.ShapeArray(), adapter.B.Data.ToArray()));
        }
        foreach (var (name, p) in ExtraTrained(lora, config))
            tensors.Add((Prefix + name, p.Data.ShapeArray(), lora.SavedModules.Owns(adapterName, p) ? lora.SavedModules.ValueOf(adapterName, p) : p.Data.ToArray()));
        Safetensors.Write(Path.Combine(directory, WeightsFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile), ConfigJson(config));
    }

    /// <summary>Biases and modules-to-save that the config trains, by their model names (with base_layer removed).</summary>
    static IEnumerable<(string Name, Nanolora.Autograd.Parameter P)> ExtraTrained(LoraModel lora, LoraConfig config)
    {
        foreach (var (name, p) in lora.Base.NamedParameters())
        {
            var clean = name.Replace(".base_layer.", ".");
            int dot = clean.LastIndexOf('.');
            bool isBias = clean.EndsWith(".bias");
            bool adapted = dot > 0 && lora.Layers.ContainsKey(clean[..dot]);
            if ((config.Bias == LoraBias.All && isBias) || (config.Bias == LoraBias.LoraOnly && isBias && adapted) ||
                (dot > 0 && config.SavesModule(clean[..dot])))
                yield return (clean, p);
        }
    }

    public static string ConfigJson(LoraConfig c)
    {
        var json = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = c.TaskType,
            ["r"] = c.R,
            ["lora_alpha"] = c.Alpha,
            ["lora_dropout"] = c.Dropout,
            ["target_modules"] = c.TargetRegex != null ? JsonValue.Create(c.TargetRegex) : new JsonArray(c.TargetModules.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray()),
            ["bias"] = c.Bias switch { LoraBias.All => "all", LoraBias.LoraOnly => "lora_only", _ => "none" },
            ["modules_to_save"] = c.ModulesToSave.Count == 0 ? null : new JsonArray(c.ModulesToSave.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray()),
            ["init_lora_weights"] = c.Init == LoraInit.Gaussian ? "gaussian" : true,
            ["use_rslora"] = c.UseRsLora,
            ["layers_to_transform"] = c.LayersToTransform == null ? null : new JsonArray(c.LayersToTransform.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray()),
            ["rank_pattern"] = new JsonObject(c.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["fan_in_fan_out"] = false,
            ["inference_mode"] = true,
            ["base_model_name_or_path"] = c.BaseModelNameOrPath,
        };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    public static LoraConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {ConfigFile} in '{directory}'.", path);
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) ?? throw new InvalidDataException($"{path} is empty."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}"); }
        if ((string?)root["peft_type"] is { } type && type != "LORA") throw new InvalidDataException($"{path}: peft_type is '{type}', expected 'LORA'.");
        var targets = root["target_modules"];
        return new LoraConfig
        {
            R = (int?)root["r"] ?? throw new InvalidDataException($"{path}: missing 'r'."),
            Alpha = (float?)root["lora_alpha"] ?? 8f,   // PEFT's own default, which a file written without the field had
            Dropout = (float?)root["lora_dropout"] ?? 0f,
            TargetModules = targets is JsonArray arr ? arr.Select(n => (string)n!).ToList() : [],
            TargetRegex = targets is JsonValue v ? (string?)v : null,
            Bias = (string?)root["bias"] switch { "all" => LoraBias.All, "lora_only" => LoraBias.LoraOnly, _ => LoraBias.None },
            ModulesToSave = root["modules_to_save"] is JsonArray m ? m.Select(n => (string)n!).ToList() : [],
            UseRsLora = (bool?)root["use_rslora"] ?? false,
            // PEFT writes either a list of layer indices or a single index.
            LayersToTransform = root["layers_to_transform"] switch
            {
                JsonArray l => l.Select(n => (int)n!).ToList(),
                JsonValue one => [(int)one],
                _ => null,
            },
            RankPattern = root["rank_pattern"] is JsonObject rp ? rp.ToDictionary(kv => kv.Key, kv => (int)kv.Value!) : new Dictionary<string, int>(),
            AlphaPattern = root["alpha_pattern"] is JsonObject ap ? ap.ToDictionary(kv => kv.Key, kv => (float)kv.Value!) : new Dictionary<string, float>(),
            BaseModelNameOrPath = (string?)root["base_model_name_or_path"],
            TaskType = (string?)root["task_type"] ?? "SEQ_2_SEQ_LM",
        };
    }

    /// <summary>
    /// Adds the adapter stored in <paramref name="directory"/> under <paramref name="adapterName"/>. Refuses a file
    /// whose target modules or shapes do not fit this base model, naming the first mismatch.
    /// </summary>
    public static void Load(LoraModel lora, string directory, string adapterName)
    {
        var config = ReadConfig(directory);
        var file = Safetensors.Read(Path.Combine(directory, WeightsFile));
        var entries = file.Entries.ToDictionary(e => e.Name);
        // Check before touching the model, so a bad file leaves it as it was.
        // A wrapped layer appears twice (the LoraLinear and its ".base_layer"); keep the wrapper, which knows its base.
        var modules = lora.Base.NamedModules().Where(m => !m.Name.EndsWith(".base_layer")).ToDictionary(m => m.Name, m => m.Module);
        foreach (var e in entries.Values)
        {
            if (!e.Name.StartsWith(Prefix)) throw new InvalidDataException($"Adapter tensor '{e.Name}' does not start with '{Prefix}'.");
            var key = e.Name[Prefix.Length..];
            foreach (var part in new[] { ".lora_A.weight", ".lora_B.weight" })
            {
                if (!key.EndsWith(part)) continue;
                var path = key[..^part.Length];
                if (!modules.TryGetValue(path, out var module)) throw new InvalidDataException($"Adapter targets '{path}', which this base model does not have.");
                var linear = module as Linear ?? (module as LoraLinear)?.BaseLayer
                    ?? throw new InvalidDataException($"Adapter targets '{path}', which is a {module.GetType().Name}, not a Linear layer.");
                int rank = config.RankFor(path);
                int[] expected = part.Contains("lora_A") ? [rank, linear.InFeatures] : [linear.OutFeatures, rank];
                if (!e.Shape.SequenceEqual(expected))
                    throw new InvalidDataException($"Adapter tensor '{e.Name}' has shape {ShapeMath.Format(e.Shape)}, but '{path}' needs {ShapeMath.Format(expected)}.");
            }
        }
        // NaN/Inf adapter weights would make eval return empty predictions and merge write a NaN model: refuse them by name.
        foreach (var e in entries.Values)
            NonFinite.Require(Path.Combine(directory, WeightsFile), e.Name, file.ReadFloats(e.Name), "Refusing to load the adapter");
        lora.AddAdapter(adapterName, config);
        foreach (var (path, adapter) in lora.AdapterWeights(adapterName))
        {
            var aKey = $"{Prefix}{path}.lora_A.weight";
            var bKey = $"{Prefix}{path}.lora_B.weight";
            if (!entries.ContainsKey(aKey) || !entries.ContainsKey(bKey))
            {
                lora.DeleteAdapter(adapterName);
                throw new InvalidDataException($"Adapter file has no weights for targeted module '{path}' ({aKey}).");
            }
            adapter.A.Data.CopyFrom(file.ReadFloats(aKey));
            adapter.B.Data.CopyFrom(file.ReadFloats(bKey));
        }
        foreach (var (name, p) in ExtraTrained(lora, config))
        {
            if (!entries.ContainsKey(Prefix + name)) continue;
            var values = file.ReadFloats(Prefix + name);
            // A module to save belongs to this adapter's own copy, not to whichever adapter is live now.
            if (lora.SavedModules.Owns(adapterName, p)) lora.SavedModules.SetValue(adapterName, p, values);
            else p.Data.CopyFrom(values);
        }
    }
}
