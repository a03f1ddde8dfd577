using System.Text.Json;
using System.Text.Json.Nodes;

namespace Nanolora.Lora;

/// <summary>
/// adapter_config.json ↔ <see cref="LoraConfig"/>, with PEFT's field names. Reading is strict: a field whose value
/// would change the adapter's maths in a way Nanolora does not implement (fan_in_fan_out, layer replication, …)
/// is refused with one line naming it; a field that does not (bookkeeping, initialization-only settings) is accepted;
/// a field PEFT does not define either is reported through the warning callback, never silently dropped.
/// </summary>
public static class AdapterConfigJson
{
    /// <summary>PEFT LoraConfig fields that only describe or initialize the adapter: loading a trained one ignores them.</summary>
    static readonly HashSet<string> Bookkeeping =
    [
        "peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
        "loftq_config", "eva_config", "corda_config", "lora_ga_config", "megatron_config", "megatron_core", "runtime_config", "qalora_group_size",
        "ensure_weight_tying", "peft_version",
    ];

    /// <summary>Fields Nanolora implements (read below).</summary>
    static readonly HashSet<string> Implemented =
    [
        "r", "lora_alpha", "lora_dropout", "target_modules", "bias", "modules_to_save", "use_rslora", "layers_to_transform",
        "layers_pattern", "rank_pattern", "alpha_pattern", "exclude_modules", "use_dora", "init_lora_weights",
    ];

    /// <summary>Fields that change the maths, with the value that leaves plain LoRA (anything else is refused).</summary>
    static readonly Dictionary<string, Func<JsonNode?, bool>> PlainLoraOnly = new()
    {
        ["fan_in_fan_out"] = n => n is null || (n is JsonValue v && v.TryGetValue(out bool b) && !b),
        ["lora_bias"] = n => n is null || (n is JsonValue v && v.TryGetValue(out bool b) && !b),
        ["use_qalora"] = n => n is null || (n is JsonValue v && v.TryGetValue(out bool b) && !b),
        ["layer_replication"] = n => n is null,
        ["trainable_token_indices"] = n => n is null,
        ["alora_invocation_tokens"] = n => n is null,
        ["arrow_config"] = n => n is null,
        ["target_parameters"] = n => n is null || n is JsonArray { Count: 0 },
    };

    static readonly Dictionary<string, string> Why = new()
    {
        ["fan_in_fan_out"] = "it stores A/B transposed for Conv1D layers, which this model does not have",
        ["lora_bias"] = "a bias on lora_B is not implemented",
        ["use_qalora"] = "QA-LoRA is not implemented",
        ["layer_replication"] = "layer replication is not implemented",
        ["trainable_token_indices"] = "trainable token embeddings are not implemented",
        ["alora_invocation_tokens"] = "activated LoRA is not implemented",
        ["arrow_config"] = "Arrow routing is not implemented",
        ["target_parameters"] = "LoRA on bare parameters is not implemented",
    };

    /// <paramref name="c"/> as PEFT's adapter_config.json, with PEFT's field names.
    public static string Write(LoraConfig c)
    {
        JsonNode Names(IReadOnlyList<string> names) => new JsonArray(names.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray());
        var json = new JsonObject
        {
            ["peft_type"] = "LORA",
            ["task_type"] = c.TaskType,
            ["r"] = c.R,
            ["lora_alpha"] = c.Alpha,
            ["lora_dropout"] = c.Dropout,
            ["target_modules"] = c.TargetRegex != null ? JsonValue.Create(c.TargetRegex)
                : c.TargetModules is [LoraConfig.AllLinear] ? JsonValue.Create(LoraConfig.AllLinear) : Names(c.TargetModules),
            ["exclude_modules"] = c.ExcludeRegex != null ? JsonValue.Create(c.ExcludeRegex) : c.ExcludeModules.Count == 0 ? null : Names(c.ExcludeModules),
            ["bias"] = c.Bias switch { LoraBias.All => "all", LoraBias.LoraOnly => "lora_only", _ => "none" },
            ["modules_to_save"] = c.ModulesToSave.Count == 0 ? null : Names(c.ModulesToSave),
            ["init_lora_weights"] = c.Init == LoraInit.KaimingUniform ? true : LoraConfig.InitName(c.Init),
            ["use_rslora"] = c.UseRsLora,
            ["layers_to_transform"] = c.LayersToTransform == null ? null : new JsonArray(c.LayersToTransform.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray()),
            ["layers_pattern"] = c.LayersPattern.Count == 0 ? null : Names(c.LayersPattern),
            ["rank_pattern"] = new JsonObject(c.RankPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["alpha_pattern"] = new JsonObject(c.AlphaPattern.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)JsonValue.Create(kv.Value)))),
            ["fan_in_fan_out"] = false,
            ["use_dora"] = c.UseDora,
            ["inference_mode"] = true,
            ["base_model_name_or_path"] = c.BaseModelNameOrPath,
        };
        if (c.Init == LoraInit.LoraGa) json["lora_ga_config"] = new JsonObject { ["direction"] = "ArB2r", ["scale"] = "stable", ["stable_gamma"] = c.LoraGaStableGamma };
        return json.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Reads and checks a config; <paramref name="warn"/> gets one line per field PEFT does not define (default: stderr).</summary>
    public static LoraConfig Read(string path, Action<string>? warn = null)
    {
        warn ??= Console.Error.WriteLine;
        JsonObject root;
        try { root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: the top level is not a JSON object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is not valid JSON: {e.Message}"); }
        InvalidDataException Bad(string field, string expected, JsonNode? actual) =>
            new($"{path}: '{field}' must be {expected}, got {actual?.ToJsonString() ?? "null"}.");

        if (root["peft_type"] is JsonNode pt && (string?)pt != "LORA") throw Bad("peft_type", "\"LORA\" (only LoRA adapters are read here)", pt);
        foreach (var (field, value) in root)
        {
            if (PlainLoraOnly.TryGetValue(field, out var plain))
            {
                if (!plain(value)) throw new InvalidDataException($"{path}: '{field}' is {value?.ToJsonString()}: {Why[field]}, so this adapter cannot be loaded.");
            }
            else if (!Bookkeeping.Contains(field) && !Implemented.Contains(field))
                warn($"warning: {path}: unknown field '{field}' ignored (not a PEFT LoraConfig field Nanolora knows).");
        }
        var init = ReadInit(root["init_lora_weights"], path, warn, Bad);
        int rank = root["r"] is JsonValue rv && rv.TryGetValue(out int r) && r >= 1 ? r : throw Bad("r", "an integer ≥ 1", root["r"]);
        float alpha = root["lora_alpha"] switch
        {
            null => 8f,
            JsonValue av when av.TryGetValue(out double a) && double.IsFinite(a) => (float)a,
            var other => throw Bad("lora_alpha", "a finite number", other),
        };
        float dropout = root["lora_dropout"] switch
        {
            null => 0f,
            JsonValue dv when dv.TryGetValue(out double d) && d is >= 0 and < 1 => (float)d,
            var other => throw Bad("lora_dropout", "a number in [0, 1)", other),
        };
        var bias = root["bias"] switch
        {
            null => LoraBias.None,
            JsonValue bv when bv.TryGetValue(out string? b) && b is "none" or "all" or "lora_only" =>
                b switch { "all" => LoraBias.All, "lora_only" => LoraBias.LoraOnly, _ => LoraBias.None },
            var other => throw Bad("bias", "\"none\", \"all\" or \"lora_only\"", other),
        };
        var (targets, targetRegex) = NamesOrRegex(root["target_modules"], "target_modules", Bad);
        var (exclude, excludeRegex) = NamesOrRegex(root["exclude_modules"], "exclude_modules", Bad);
        var config = new LoraConfig
        {
            R = rank, Alpha = alpha, Dropout = dropout, Bias = bias,
            TargetModules = targets is [LoraConfig.AllLinear] || targetRegex == LoraConfig.AllLinear ? [LoraConfig.AllLinear] : targets,
            TargetRegex = targetRegex == LoraConfig.AllLinear ? null : targetRegex,
            ExcludeModules = exclude, ExcludeRegex = excludeRegex,
            ModulesToSave = Strings(root["modules_to_save"], "modules_to_save", Bad),
            UseRsLora = root["use_rslora"] switch { null => false, JsonValue v when v.TryGetValue(out bool b) => b, var other => throw Bad("use_rslora", "true or false", other) },
            UseDora = root["use_dora"] switch { null => false, JsonValue v when v.TryGetValue(out bool b) => b, var other => throw Bad("use_dora", "true or false", other) },
            Init = init,
            // PEFT writes either a list of layer indices or a single index.
            LayersToTransform = root["layers_to_transform"] switch
            {
                null => null,
                JsonArray l => l.Select(n => n is JsonValue v && v.TryGetValue(out int i) && i >= 0 ? i : throw Bad("layers_to_transform", "layer indices ≥ 0", n)).ToList(),
                JsonValue one when one.TryGetValue(out int i) && i >= 0 => [i],
                var other => throw Bad("layers_to_transform", "a layer index or a list of them", other),
            },
            LayersPattern = root["layers_pattern"] is JsonValue lp && lp.TryGetValue(out string? pattern) ? [pattern] : Strings(root["layers_pattern"], "layers_pattern", Bad),
            RankPattern = root["rank_pattern"] is JsonObject rp
                ? rp.ToDictionary(kv => kv.Key, kv => kv.Value is JsonValue v && v.TryGetValue(out int x) && x >= 1 ? x : throw Bad($"rank_pattern.{kv.Key}", "an integer ≥ 1", kv.Value))
                : new Dictionary<string, int>(),
            AlphaPattern = root["alpha_pattern"] is JsonObject ap
                ? ap.ToDictionary(kv => kv.Key, kv => kv.Value is JsonValue v && v.TryGetValue(out double x) && double.IsFinite(x) ? (float)x : throw Bad($"alpha_pattern.{kv.Key}", "a finite number", kv.Value))
                : new Dictionary<string, float>(),
            BaseModelNameOrPath = (string?)root["base_model_name_or_path"],
            TaskType = (string?)root["task_type"] ?? "SEQ_2_SEQ_LM",
        };
        if (config.TargetRegex == null && config.TargetModules.Count == 0) throw Bad("target_modules", "a module name, a list of them, a regex or \"all-linear\"", root["target_modules"]);
        return config;
    }

    /// <summary>
    /// init_lora_weights: true/false (Kaiming A), "gaussian", "pissa" or PEFT's "pissa_niter_N" (read as "pissa": Nanolora
    /// runs the exact SVD, said in one warning line). OLoRA, CorDA and LoRA-GA, which change the base in ways not rebuilt here
    /// (LoRA-GA's from gradients of training data the file does not hold), are
    /// refused: such a file only works on the base PEFT left behind. Other names only set the adapter's starting values,
    /// which loading replaces, and read as the default.
    /// </summary>
    static LoraInit ReadInit(JsonNode? node, string path, Action<string> warn, Func<string, string, JsonNode?, InvalidDataException> bad)
    {
        if (node is null || node is JsonValue b && b.TryGetValue(out bool _)) return LoraInit.KaimingUniform;
        if (node is not JsonValue v || !v.TryGetValue(out string? name)) throw bad("init_lora_weights", "true, false or a method name", node);
        if (name == "gaussian") return LoraInit.Gaussian;
        if (name == "pissa") return LoraInit.Pissa;
        if (name.StartsWith("pissa_niter_", StringComparison.Ordinal) && int.TryParse(name["pissa_niter_".Length..], out int iterations) && iterations >= 0)
        {
            warn($"warning: {path}: init_lora_weights \"{name}\" asks for PEFT's randomized SVD ({iterations} iterations); Nanolora runs the exact SVD instead.");
            return LoraInit.Pissa;
        }
        if (name is "olora" or "corda" or "lora_ga")
            throw new InvalidDataException($"{path}: 'init_lora_weights' is {node.ToJsonString()}: such an adapter belongs to a base that initialisation changed; " +
                "save it converted to plain LoRA (PEFT's path_initial_model_for_weight_conversion) and load that.");
        return LoraInit.KaimingUniform;
    }

    static (IReadOnlyList<string> Names, string? Regex) NamesOrRegex(JsonNode? node, string field, Func<string, string, JsonNode?, InvalidDataException> bad) => node switch
    {
        null => ([], null),
        JsonValue v when v.TryGetValue(out string? s) => ([], s),
        _ => (Strings(node, field, bad), null),
    };

    static IReadOnlyList<string> Strings(JsonNode? node, string field, Func<string, string, JsonNode?, InvalidDataException> bad) => node switch
    {
        null => [],
        JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue(out string? s) ? s : throw bad(field, "a list of module names", n)).ToList(),
        _ => throw bad(field, "a list of module names", node),
    };
}
