using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

public sealed partial class LoraModel
{
    /// <summary>
    /// PEFT's <c>hotswap_adapter</c>: the adapter saved in <paramref name="directory"/> replaces the weights of the existing slot
    /// <paramref name="adapterName"/> in place — the same Parameter objects and buffers, nothing re-injected — and the slot
    /// takes its config (scaling recomputed per layer from its lora_alpha, alpha_pattern and use_rslora; its dropout). Like
    /// PEFT, a different lora_alpha is allowed; unlike PEFT (which refuses them) so are a different use_rslora, alpha_pattern
    /// or dropout, since the scaling and dropout are set from the new config exactly. Refused, naming the module or field:
    /// another rank, other target modules (PEFT zeroes a layer the new adapter lacks; here both must adapt the same layers),
    /// DoRA, trained biases or modules_to_save on either side, a merged slot, non-finite weights, and a base other than the
    /// adapter's (unless <paramref name="force"/>). Everything is checked before a weight is written.
    /// </summary>
    /// <param name="directory">A PEFT-layout adapter directory.</param>
    /// <param name="adapterName">The slot to swap into; it keeps its name.</param>
    /// <param name="force">Swap in even if the adapter's recorded base fingerprint differs from this model's.</param>
    /// <param name="warn">Receives warnings (unknown config fields, a forced base mismatch); default stderr.</param>
    public void HotswapAdapter(string directory, string adapterName, bool force = false, Action<string>? warn = null)
    {
        const string what = "hotswap";
        if (!_configs.TryGetValue(adapterName, out var old)) throw new KeyNotFoundException($"{what}: no adapter '{adapterName}' to swap into. Adapters: {string.Join(", ", _configs.Keys)}.");
        var slot = AdapterWeights(adapterName).ToDictionary(x => x.Path, x => x.Adapter);
        foreach (var (path, layer) in _layers)
        {
            if (layer.MergedAdapter == adapterName)
                throw new InvalidOperationException($"{what}: adapter '{adapterName}' is merged into '{path}'; unmerge it first (swapping merged weights would corrupt the base).");
            if (slot.ContainsKey(path)) RequirePlainLora(layer, path, adapterName, what);
        }
        var weightsPath = Path.Combine(directory, AdapterFiles.WeightsFile);
        if (!File.Exists(weightsPath)) throw new FileNotFoundException($"{what}: no {AdapterFiles.WeightsFile} in '{directory}'.", weightsPath);
        var config = AdapterFiles.ReadConfig(directory, warn);
        config.Validate();
        foreach (var (side, c) in new[] { ($"slot '{adapterName}'", old), ($"'{directory}'", config) })
            if (c.Bias != LoraBias.None || c.ModulesToSave.Count > 0)
                throw new NotSupportedException($"{what}: {side} trains bias '{c.Bias}' / modules_to_save [{string.Join(", ", c.ModulesToSave)}]; hotswap replaces LoRA matrices only (bias none, no modules_to_save).");

        // The layers the new config would adapt on this model must be the slot's layers.
        var targeted = Base.NamedModules()
            .Where(m => (m.Module is Linear || m.Module is LoraLinear) && !m.Name.EndsWith(".base_layer") && config.Targets(m.Name))
            .Select(m => m.Name).ToHashSet();
        if (targeted.FirstOrDefault(p => !slot.ContainsKey(p)) is string extra)
            throw new InvalidDataException($"{what}: {AdapterFiles.ConfigFile}'s targets select '{extra}', which slot '{adapterName}' does not adapt; hotswap needs the same target modules.");
        if (slot.Keys.FirstOrDefault(p => !targeted.Contains(p)) is string missing)
            throw new InvalidDataException($"{what}: slot '{adapterName}' adapts '{missing}', which {AdapterFiles.ConfigFile}'s target_modules do not select; hotswap needs the same target modules.");
        foreach (var (path, adapter) in slot)
            if (config.RankFor(path) != adapter.Rank)
                throw new InvalidDataException($"{what}: {AdapterFiles.ConfigFile} gives '{path}' rank {config.RankFor(path)} (r/rank_pattern), but slot '{adapterName}' has rank {adapter.Rank} there; hotswap needs equal ranks.");

        var file = Safetensors.Read(weightsPath);
        var values = new Dictionary<string, float[]>();
        foreach (var e in file.Entries)
        {
            string key = e.Name.StartsWith(AdapterFiles.Prefix) ? e.Name[AdapterFiles.Prefix.Length..]
                : throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' does not start with '{AdapterFiles.Prefix}'.");
            if (key.Contains("lora_magnitude_vector"))
                throw new NotSupportedException($"{weightsPath}: tensor '{e.Name}' is a DoRA magnitude vector; hotswap swaps plain LoRA adapters only.");
            string? part = key.EndsWith(".lora_A.weight") ? ".lora_A.weight" : key.EndsWith(".lora_B.weight") ? ".lora_B.weight" : null;
            if (part == null)
                throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' is not a LoRA matrix (lora_A/lora_B); hotswap replaces LoRA matrices only.");
            var path = key[..^part.Length];
            if (!slot.TryGetValue(path, out var adapter))
                throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' is for '{path}', which slot '{adapterName}' does not adapt; hotswap needs the same target modules.");
            var current = part == ".lora_A.weight" ? adapter.A : adapter.B;
            if (!e.Shape.SequenceEqual(current.Data.ShapeArray()))
                throw new InvalidDataException($"{weightsPath}: tensor '{e.Name}' has shape {ShapeMath.Format(e.Shape)} (rank {config.RankFor(path)}), but slot '{adapterName}' at '{path}' is {current.Data.ShapeString} (rank {adapter.Rank}); hotswap needs equal ranks.");
            var data = file.ReadFloats(e.Name);
            NonFinite.Require(weightsPath, e.Name, data, "Refusing to hotswap the adapter");
            values[e.Name] = data;
        }
        foreach (var path in slot.Keys)
            foreach (var part in new[] { ".lora_A.weight", ".lora_B.weight" })
                if (!values.ContainsKey(AdapterFiles.Prefix + path + part))
                    throw new InvalidDataException($"{weightsPath}: no tensor '{AdapterFiles.Prefix}{path}{part}' for '{path}', which slot '{adapterName}' adapts; hotswap needs the same target modules.");
        AdapterFiles.CheckBase(this, config, file.Metadata.GetValueOrDefault(BaseFingerprint.MetadataKey), weightsPath, force, warn ?? Console.Error.WriteLine, file.Metadata.GetValueOrDefault(BaseFingerprint.DTypeKey));

        foreach (var (path, adapter) in slot)
        {
            adapter.A.Data.CopyFrom(values[AdapterFiles.Prefix + path + ".lora_A.weight"]);
            adapter.B.Data.CopyFrom(values[AdapterFiles.Prefix + path + ".lora_B.weight"]);
            adapter.Scaling = config.ScalingFor(path);
            adapter.Dropout = config.Dropout;
        }
        _configs[adapterName] = config;
    }
}
