using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// An adapter on disk in Hugging Face PEFT's layout: <c>adapter_config.json</c> and
/// <c>adapter_model.safetensors</c> with keys <c>base_model.model.{path}.lora_A.weight</c> [R, in] and
/// <c>.lora_B.weight</c> [out, R] (DoRA adds <c>.lora_magnitude_vector</c> [out]); a trained bias of an adapted layer as <c>{path}.base_layer.bias</c> (PEFT's key; the
/// older <c>{path}.bias</c> is accepted on read), other trained biases and modules to save by their own names. The file's
/// metadata carries the <see cref="BaseFingerprint"/> of the base it was trained on.
/// </summary>
public static class AdapterFiles
{
    /// <summary>File names in an adapter directory: the config, the weights, and PEFT's older pickle (recognized only to explain it cannot be read).</summary>
    public const string ConfigFile = "adapter_config.json", WeightsFile = "adapter_model.safetensors", PickleFile = "adapter_model.bin";
    internal const string Prefix = "base_model.model.";

    /// <summary>
    /// Writes adapter <paramref name="adapterName"/> to <paramref name="directory"/> (created if needed); refuses non-finite
    /// weights. A PiSSA or LoRA-GA adapter is written converted to a plain rank-2r LoRA for the original base (<see cref="Pissa.ConvertToLora"/>,
    /// <see cref="Pissa.ConvertedConfig"/>) with that base's fingerprint, so it loads onto the base on disk like any adapter.
    /// </summary>
    public static void Save(LoraModel lora, string adapterName, string directory)
    {
        if (!lora.Adapters.TryGetValue(adapterName, out var config)) throw new KeyNotFoundException($"No adapter '{adapterName}' to save.");
        Directory.CreateDirectory(directory);
        var tensors = new List<(string, int[], float[])>();
        var origin = lora.ResidualOrigin(adapterName);
        foreach (var (path, adapter) in lora.AdapterWeights(adapterName))
        {
            if (origin != null && lora.Layers[path].Residual is { } residual)
            {
                // A PiSSA adapter is saved as plain LoRA on the original base (PEFT's path_initial_model_for_weight_conversion).
                var (a, b) = Pissa.ConvertToLora(adapter, residual);
                tensors.Add(($"{Prefix}{path}.lora_A.weight", [2 * adapter.Rank, adapter.A.Data.Dim(1)], a));
                tensors.Add(($"{Prefix}{path}.lora_B.weight", [adapter.B.Data.Dim(0), 2 * adapter.Rank], b));
                // DoRA's direction W_res + s·B·A is W + s·B'·A' exactly, so its norm, and the magnitude m, carry over unchanged.
                if (adapter.Magnitude is { } converted) tensors.Add(($"{Prefix}{path}.{MagnitudeKey}", converted.Data.ShapeArray(), converted.Data.ToArray()));
                continue;
            }
            tensors.Add(($"{Prefix}{path}.lora_A.weight", adapter.A.Data.ShapeArray(), adapter.A.Data.ToArray()));
            tensors.Add(($"{Prefix}{path}.lora_B.weight", adapter.B.Data.ShapeArray(), adapter.B.Data.ToArray()));
            if (adapter.Magnitude is { } m) tensors.Add(($"{Prefix}{path}.{MagnitudeKey}", m.Data.ShapeArray(), m.Data.ToArray()));
        }
        foreach (var (name, p) in ExtraTrained(lora, config))
            tensors.Add((Prefix + SavedKey(lora, name), p.Data.ShapeArray(), lora.SavedModules.Owns(adapterName, p) ? lora.SavedModules.ValueOf(adapterName, p) : p.Data.ToArray()));
        foreach (var (name, _, data) in tensors) NonFinite.Require(Path.Combine(directory, WeightsFile), name, data, "Refusing to write the adapter");
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        if ((origin ?? BaseFingerprint.Of(lora, config)) is { } fingerprint) metadata[BaseFingerprint.MetadataKey] = fingerprint.Serialize();
        if (BaseFingerprint.IsBFloat16(lora)) metadata[BaseFingerprint.DTypeKey] = "bfloat16";
        Safetensors.Write(Path.Combine(directory, WeightsFile), tensors, metadata);
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile), ConfigJson(origin != null ? Pissa.ConvertedConfig(config) : config));
    }

    /// <summary>PEFT's key suffix for DoRA's magnitude m [out] (its state dict drops the DoraLinearLayer's ".weight").</summary>
    public const string MagnitudeKey = "lora_magnitude_vector";

    /// <summary>PEFT's key for a trained parameter: the bias of an adapted layer lives under its base_layer.</summary>
    static string SavedKey(LoraModel lora, string name) =>
        name.EndsWith(".bias", StringComparison.Ordinal) && lora.Layers.ContainsKey(name[..^".bias".Length])
            ? name[..^".bias".Length] + ".base_layer.bias" : name;

    /// <summary>Biases and modules-to-save that the config trains, by their model names (with base_layer removed).</summary>
    static IEnumerable<(string Name, Nanolora.Autograd.Parameter P)> ExtraTrained(LoraModel lora, LoraConfig config)
    {
        var linears = LinearPaths(lora);
        foreach (var (name, p) in lora.Base.NamedParameters())
        {
            var clean = name.Replace(".base_layer.", ".");
            int dot = clean.LastIndexOf('.');
            if (IsTrainedBias(lora, config, clean, linears) || (dot > 0 && config.SavesModule(clean[..dot])))
                yield return (clean, p);
        }
    }

    /// <summary>
    /// Whether the parameter <paramref name="cleanName"/> (base_layer removed) is a bias <paramref name="config"/> trains:
    /// any bias under "all" (<see cref="LoraConfig.IsBias"/>), an adapted layer's under "lora_only".
    /// </summary>
    internal static bool IsTrainedBias(LoraModel lora, LoraConfig config, string cleanName, IReadOnlySet<string> linearPaths)
    {
        if (!LoraConfig.IsBias(cleanName)) return false;
        int dot = cleanName.LastIndexOf('.');
        return config.Bias == LoraBias.All || (config.Bias == LoraBias.LoraOnly && dot > 0 && Adapts(lora, config, cleanName[..dot], linearPaths));
    }

    /// <summary>Whether <paramref name="config"/> adapts the layer at <paramref name="path"/>: wrapped already, or (loading onto a fresh base) a Linear it is about to wrap.</summary>
    internal static bool Adapts(LoraModel lora, LoraConfig config, string path, IReadOnlySet<string> linearPaths) =>
        lora.Layers.ContainsKey(path) || (config.Targets(path) && linearPaths.Contains(path));

    /// <summary>The paths of the base's plain Linear layers (the ones a config could still wrap).</summary>
    internal static IReadOnlySet<string> LinearPaths(LoraModel lora) =>
        lora.Base.NamedModules().Where(m => m.Module is Linear).Select(m => m.Name).ToHashSet();

    /// <summary>The adapter_config.json text for <paramref name="c"/>.</summary>
    public static string ConfigJson(LoraConfig c) => AdapterConfigJson.Write(c);

    /// <summary>Reads <paramref name="directory"/>'s adapter_config.json; <paramref name="warn"/> gets one line per unknown field, which is ignored (default: stderr).</summary>
    public static LoraConfig ReadConfig(string directory, Action<string>? warn = null)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {ConfigFile} in '{directory}'.", path);
        return AdapterConfigJson.Read(path, warn);
    }

    /// <summary>
    /// Adds the adapter stored in <paramref name="directory"/> under <paramref name="adapterName"/>. Everything is checked
    /// before the model is touched, and anything that does not fit is refused naming it: a tensor for a module the config
    /// does not target or the model lacks, a wrong shape, a NaN, DoRA magnitudes without use_dora, a base other than the one
    /// the adapter was trained on (unless <paramref name="force"/>). An adapter whose config says PiSSA (PEFT saves one so
    /// unless told to convert it) was trained on the residual base: the residual is rebuilt from this base by the same exact
    /// SVD, then the trained A and B replace the initial ones, and the adapter behaves as a PiSSA adapter from then on.
    /// </summary>
    public static void Load(LoraModel lora, string directory, string adapterName, bool force = false, Action<string>? warn = null)
    {
        var weightsPath = Path.Combine(directory, WeightsFile);
        if (!File.Exists(weightsPath) && File.Exists(Path.Combine(directory, PickleFile)))
            throw new InvalidDataException($"{directory}: only {PickleFile}, a Python pickle, which is never loaded (unpickling can run code). " +
                "Convert it with PEFT: PeftModel.from_pretrained(base, dir).save_pretrained(out, safe_serialization=True).");
        var config = ReadConfig(directory, warn);
        config.Validate();
        var file = Safetensors.Read(weightsPath);
        var entries = file.Entries.ToDictionary(e => e.Name);
        // A wrapped layer appears twice (the LoraLinear and its ".base_layer"); keep the wrapper, which knows its base.
        var modules = lora.Base.NamedModules().Where(m => !m.Name.EndsWith(".base_layer")).ToDictionary(m => m.Name, m => m.Module);
        var extra = ExtraTrained(lora, config).Select(x => x.Name).ToHashSet();
        var consumed = new HashSet<string>();
        foreach (var e in entries.Values)
        {
            if (!e.Name.StartsWith(Prefix)) throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' does not start with '{Prefix}'.");
            var key = e.Name[Prefix.Length..];
            if (key.EndsWith("." + MagnitudeKey))
            {
                var path = key[..^(MagnitudeKey.Length + 1)];
                if (!config.UseDora) throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' is a DoRA magnitude vector, but {ConfigFile}'s use_dora is false.");
                var linear = (modules.GetValueOrDefault(path) as Linear ?? (modules.GetValueOrDefault(path) as LoraLinear)?.BaseLayer)
                    ?? throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' targets '{path}', which is not a Linear layer of this base model.");
                if (!config.Targets(path)) throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' is for '{path}', which {ConfigFile} does not target.");
                if (!e.Shape.SequenceEqual([linear.OutFeatures]))
                    throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' has shape {ShapeMath.Format(e.Shape)}, but '{path}' needs [{linear.OutFeatures}].");
                consumed.Add(e.Name);
                continue;
            }
            if (key.Contains(".lora_embedding_A") || key.Contains(".lora_embedding_B"))
                throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' adapts an embedding; LoRA on embeddings is not implemented.");
            foreach (var part in new[] { ".lora_A.weight", ".lora_B.weight" })
            {
                if (!key.EndsWith(part)) continue;
                var path = key[..^part.Length];
                if (!modules.TryGetValue(path, out var module)) throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' targets '{path}', which this base model does not have.");
                var linear = module as Linear ?? (module as LoraLinear)?.BaseLayer
                    ?? throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' targets '{path}', which is a {module.GetType().Name}, not a Linear layer.");
                if (!config.Targets(path))
                    throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' is for '{path}', which {ConfigFile}'s target_modules/exclude_modules/layers_to_transform do not select.");
                int rank = config.RankFor(path);
                int[] expected = part.Contains("lora_A") ? [rank, linear.InFeatures] : [linear.OutFeatures, rank];
                if (!e.Shape.SequenceEqual(expected))
                    throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' has shape {ShapeMath.Format(e.Shape)}, but '{path}' needs {ShapeMath.Format(expected)} (rank {rank}).");
                consumed.Add(e.Name);
            }
            var plain = key.Replace(".base_layer.", ".");
            if (!consumed.Contains(e.Name) && extra.Contains(plain)) consumed.Add(e.Name);
            if (!consumed.Contains(e.Name))
                throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' has no place: it is neither a LoRA matrix of a targeted Linear nor a bias/module the config trains (bias '{config.Bias}', modules_to_save [{string.Join(", ", config.ModulesToSave)}]).");
        }
        // NaN/Inf adapter weights would make eval return empty predictions and merge write a NaN model: refuse them by name.
        foreach (var e in entries.Values) NonFinite.Require(weightsPath, e.Name, file.ReadFloats(e.Name), "Refusing to load the adapter");
        CheckBase(lora, config, file.Metadata.GetValueOrDefault(BaseFingerprint.MetadataKey), weightsPath, force, warn ?? Console.Error.WriteLine, file.Metadata.GetValueOrDefault(BaseFingerprint.DTypeKey));

        lora.AddAdapter(adapterName, config);
        foreach (var (path, adapter) in lora.AdapterWeights(adapterName))
        {
            var aKey = $"{Prefix}{path}.lora_A.weight";
            var bKey = $"{Prefix}{path}.lora_B.weight";
            if (!entries.ContainsKey(aKey) || !entries.ContainsKey(bKey))
            {
                lora.DeleteAdapter(adapterName);
                throw new InvalidDataException($"{weightsPath}: no weights for targeted module '{path}' ({aKey}).");
            }
            var mKey = $"{Prefix}{path}.{MagnitudeKey}";
            if (adapter.Magnitude != null && !entries.ContainsKey(mKey))
            {
                lora.DeleteAdapter(adapterName);
                throw new InvalidDataException($"{weightsPath}: use_dora is true but there is no magnitude for targeted module '{path}' ({mKey}).");
            }
            adapter.A.Data.CopyFrom(file.ReadFloats(aKey));
            adapter.B.Data.CopyFrom(file.ReadFloats(bKey));
            adapter.Magnitude?.Data.CopyFrom(file.ReadFloats(mKey));
        }
        foreach (var (name, p) in ExtraTrained(lora, config))
        {
            string? key = entries.ContainsKey(Prefix + SavedKey(lora, name)) ? Prefix + SavedKey(lora, name) : entries.ContainsKey(Prefix + name) ? Prefix + name : null;
            if (key == null) continue;
            var values = file.ReadFloats(key);
            // A module to save belongs to this adapter's own copy, not to whichever adapter is live now.
            if (lora.SavedModules.Owns(adapterName, p)) lora.SavedModules.SetValue(adapterName, p, values);
            else p.Data.CopyFrom(values);
        }
    }

    internal static void CheckBase(LoraModel lora, LoraConfig config, string? saved, string path, bool force, Action<string> warn, string? savedDType = null)
    {
        if (saved == null) return;   // written by PEFT or an older Nanolora: nothing to compare
        var expected = BaseFingerprint.Parse(saved) ?? throw new InvalidDataException($"{path}: metadata '{BaseFingerprint.MetadataKey}' is malformed ('{saved}').");
        bool trainedOn16Bit = savedDType == "bfloat16", here16Bit = BaseFingerprint.IsBFloat16(lora);
        var actual = BaseFingerprint.Of(lora, config, asBFloat16: trainedOn16Bit && !here16Bit);
        if (actual == null) { warn($"warning: {path}: an adapter is merged into the base, so its fingerprint cannot be checked."); return; }
        if (actual == expected) return;
        if (here16Bit && !trainedOn16Bit && actual.Structure == expected.Structure)
        {
            // Rounding lost the bits the float32 fingerprint hashed: only the names and shapes can be compared.
            warn($"warning: {path}: the adapter was trained on a float32 base and this base is stored in bfloat16, so only its parameter names and shapes could be checked (they match).");
            return;
        }
        string what = actual.Structure != expected.Structure ? "a base with other parameter names or shapes" : "a base with other weights";
        string message = $"{path}: the adapter was trained on another base (its {expected}; this model's {actual}) and this is {what}" +
            (config.BaseModelNameOrPath is { } name ? $"; it names '{name}' as its base" : "") + ".";
        if (!force) throw new InvalidDataException(message + " Load it onto that base, or force it (--force) if you know they match.");
        warn("warning: " + message + " Loading anyway (forced).");
    }
}
