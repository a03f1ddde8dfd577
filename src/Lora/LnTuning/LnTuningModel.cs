using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.LnTuning;

/// <summary>
/// LN tuning applied from outside: targeted LayerNorms are replaced by <see cref="LnTuningLayer"/> wrappers holding a copy
/// per instance; everything else is frozen. Merging copies the active instance's γ and β into the base LayerNorms
/// (exact, and exactly undone), as PEFT's merge swaps the tuned layer in.
/// <para>Files: PEFT's layout — adapter_config.json with <c>peft_type</c> "LN_TUNING", <c>target_modules</c>,
/// <c>exclude_modules</c>; tensors <c>base_model.model.{path}.ln_tuning_layers.weight</c> and <c>.bias</c> [C].</para>
/// </summary>
public sealed class LnTuningModel : PeftMethod<LnTuningConfig>
{
    readonly Dictionary<string, LnTuningLayer> _layers;   // module path → wrapper

    /// <summary>PEFT's peft_type for LN tuning.</summary>
    public const string Type = "LN_TUNING";
    /// <inheritdoc/>
    public override string PeftType => Type;
    /// <summary>The wrapped LayerNorms by module path.</summary>
    public IReadOnlyDictionary<string, LnTuningLayer> Layers => _layers;

    LnTuningModel(Module model) : base(model)
    {
        _layers = Adopted<LnTuningLayer>(model);
    }

    /// <summary>An LN tuning view of <paramref name="model"/> with no instances yet.</summary>
    public static LnTuningModel For(Module model) => new(model);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static LnTuningModel Inject(Module model, LnTuningConfig config, string name = "default") => Injected(new LnTuningModel(model), name, config);

    List<string> Targets(LnTuningConfig config) => Base.NamedModules()
        .Where(m => (m.Module is LayerNorm || m.Module is LnTuningLayer) && !m.Name.EndsWith(".base_layer") && !m.Name.Contains(".ln_tuning_layers.")
            && config.Selector.Matches(m.Name))
        .Select(m => m.Name).ToList();

    /// <inheritdoc/>
    protected override void AddCore(string name, LnTuningConfig config, ulong seed)
    {
        var targets = Targets(config);
        if (targets.Count == 0)
            throw new ArgumentException($"LN tuning targets [{string.Join(", ", config.TargetModules)}]{(config.TargetRegex != null ? " / regex " + config.TargetRegex : "")} match no LayerNorm of the model.");
        foreach (var path in targets)
        {
            if (!_layers.TryGetValue(path, out var layer))
            {
                layer = new LnTuningLayer((LayerNorm)Base.GetModule(path));
                Base.ReplaceModule(path, layer);
                _layers[path] = layer;
            }
            layer.Add(name);
        }
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _layers.Where(l => l.Value.Copies.ContainsKey(name))
            .SelectMany(l => l.Value.Copies[name].NamedParameters($"{l.Key}.ln_tuning_layers.{name}."));

    /// <inheritdoc/>
    protected override void Route(string? name)
    {
        foreach (var layer in _layers.Values) layer.Active = name != null && layer.Copies.ContainsKey(name) ? name : null;
    }

    /// <inheritdoc/>
    protected override void MergeCore(string name)
    {
        foreach (var layer in _layers.Values) if (layer.Copies.ContainsKey(name)) layer.Merge(name);
    }

    /// <inheritdoc/>
    protected override void UnmergeCore(string name)
    {
        foreach (var layer in _layers.Values) if (layer.Merged != null) layer.Unmerge();
    }

    /// <inheritdoc/>
    protected override void UnloadCore(string? merged)
    {
        foreach (var (path, layer) in _layers) Base.ReplaceModule(path, layer.Unload());
        _layers.Clear();
    }

    /// <inheritdoc/>
    protected override void DeleteCore(string name)
    {
        foreach (var layer in _layers.Values) if (layer.Copies.ContainsKey(name)) layer.Delete(name);
    }

    /// <inheritdoc/>
    protected override long AddedParameterCount(string name) => InstanceParameters(name).Sum(p => p.Parameter.Count);

    /// <inheritdoc/>
    public override void Save(string name, string directory)
    {
        var config = Configs.TryGetValue(name, out var c) ? c : throw new KeyNotFoundException($"{Type}: no instance '{name}' to save.");
        var json = new JsonObject
        {
            ["peft_type"] = Type,
            ["task_type"] = TaskType,
            ["target_modules"] = config.TargetRegex != null ? JsonValue.Create(config.TargetRegex) : config.TargetModules.Count == 0 ? null : PeftFiles.Names(config.TargetModules),
            ["exclude_modules"] = config.Selector.ExcludeJson(),
            ["modules_to_save"] = null,
            ["inference_mode"] = true,
        };
        var tensors = _layers.Where(l => l.Value.Copies.ContainsKey(name)).SelectMany(l => new[]
        {
            PeftFiles.Entry($"{l.Key}.ln_tuning_layers.weight", l.Value.Copies[name].Gamma),
            PeftFiles.Entry($"{l.Key}.ln_tuning_layers.bias", l.Value.Copies[name].Beta),
        });
        PeftFiles.Write(directory, json, tensors);
    }

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type, new HashSet<string> { "target_modules", "exclude_modules" },
            new Dictionary<string, (Func<JsonNode?, bool>, string)> { ["modules_to_save"] = (PeftFiles.IsNullOrEmpty, "modules to save are not implemented for LN tuning") }, warn);
        var (targets, targetRegex) = PeftFiles.NamesOrRegex(directory, root, "target_modules");
        var (exclude, excludeRegex) = PeftFiles.NamesOrRegex(directory, root, "exclude_modules");
        var config = new LnTuningConfig { TargetModules = targets, TargetRegex = targetRegex, ExcludeModules = exclude, ExcludeRegex = excludeRegex };
        var expected = new Dictionary<string, int[]>();
        foreach (var path in Targets(config))
        {
            var norm = Base.GetModule(path) is LnTuningLayer wrapped ? wrapped.BaseLayer : (LayerNorm)Base.GetModule(path);
            expected[$"{path}.ln_tuning_layers.weight"] = norm.Gamma.Data.ShapeArray();
            expected[$"{path}.ln_tuning_layers.bias"] = norm.Beta.Data.ShapeArray();
        }
        var values = PeftFiles.ReadWeights(directory, expected);
        Add(name, config);
        foreach (var (path, layer) in _layers.Where(l => l.Value.Copies.ContainsKey(name)))
        {
            layer.Copies[name].Gamma.Data.CopyFrom(values[$"{path}.ln_tuning_layers.weight"]);
            layer.Copies[name].Beta.Data.CopyFrom(values[$"{path}.ln_tuning_layers.bias"]);
        }
    }
}
