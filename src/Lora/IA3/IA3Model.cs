using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.IA3;

/// <summary>
/// (IA)³ applied from outside: targeted Linear layers are replaced by <see cref="IA3Linear"/> wrappers; everything else
/// is frozen. Several named instances share the base; merging folds the active one's vectors into the weights.
/// <para>Files: PEFT's layout — adapter_config.json with <c>peft_type</c> "IA3", <c>target_modules</c>,
/// <c>feedforward_modules</c>, <c>exclude_modules</c>, <c>init_ia3_weights</c>, <c>fan_in_fan_out</c> (false);
/// tensors <c>base_model.model.{path}.ia3_l</c>, [out, 1] or [1, in] for a feed-forward module.</para>
/// </summary>
public sealed class IA3Model : PeftMethod<IA3Config>
{
    readonly Dictionary<string, IA3Linear> _layers;   // module path → wrapper

    /// <summary>PEFT's peft_type for (IA)³.</summary>
    public const string Type = "IA3";
    /// <inheritdoc/>
    public override string PeftType => Type;
    /// <summary>The wrapped layers by module path.</summary>
    public IReadOnlyDictionary<string, IA3Linear> Layers => _layers;

    IA3Model(Module model) : base(model)
    {
        _layers = Adopted<IA3Linear>(model);
    }

    /// <summary>An (IA)³ view of <paramref name="model"/> with no instances yet.</summary>
    public static IA3Model For(Module model) => new(model);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static IA3Model Inject(Module model, IA3Config config, string name = "default", ulong seed = 1) => Injected(new IA3Model(model), name, config, seed);

    List<string> Targets(IA3Config config) => Base.NamedModules()
        .Where(m => (m.Module is Linear || m.Module is IA3Linear) && !m.Name.EndsWith(".base_layer") && config.Targets.Matches(m.Name))
        .Select(m => m.Name).ToList();

    /// <inheritdoc/>
    protected override void AddCore(string name, IA3Config config, ulong seed)
    {
        config.Validate();
        var targets = Targets(config);
        if (targets.Count == 0)
            throw new ArgumentException($"IA3 targets [{string.Join(", ", config.TargetModules)}]{(config.TargetRegex != null ? " / regex " + config.TargetRegex : "")} match no Linear layer of the model.");
        foreach (var path in targets)
        {
            bool feedforward = config.Feedforward.Matches(path);
            if (_layers.TryGetValue(path, out var layer))
            {
                // One wrapper per layer: an instance that disagrees on which side it rescales cannot share it.
                if (layer.IsFeedforward != feedforward)
                    throw new ArgumentException($"IA3: '{path}' is a {(layer.IsFeedforward ? "feed-forward" : "attention")} target of another instance, but this config makes it {(feedforward ? "feed-forward" : "attention")}.");
            }
            else
            {
                layer = new IA3Linear((Linear)Base.GetModule(path), feedforward);
                Base.ReplaceModule(path, layer);
                _layers[path] = layer;
            }
        }
        var seeds = new SeedSequence(seed);
        foreach (var path in targets) _layers[path].Add(name, config.InitIA3Weights, seeds.Next());
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _layers.Where(l => l.Value.Vectors.ContainsKey(name)).Select(l => ($"{l.Key}.ia3_l.{name}", l.Value.Vectors[name]));

    /// <inheritdoc/>
    protected override void Route(string? name)
    {
        foreach (var layer in _layers.Values) layer.Active = name != null && layer.Vectors.ContainsKey(name) ? name : null;
    }

    /// <inheritdoc/>
    protected override void MergeCore(string name)
    {
        foreach (var layer in _layers.Values) if (layer.Vectors.ContainsKey(name)) layer.Merge(name);
    }

    /// <inheritdoc/>
    protected override void UnmergeCore(string name)
    {
        // Check every layer first, so a refused unmerge leaves all of them merged rather than half.
        foreach (var (path, layer) in _layers) layer.CheckUnmergeable(path);
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
        foreach (var layer in _layers.Values) if (layer.Vectors.ContainsKey(name)) layer.Delete(name);
    }

    /// <inheritdoc/>
    protected override long AddedParameterCount(string name) => InstanceParameters(name).Sum(p => p.Parameter.Count);

    /// <inheritdoc/>
    public override void Save(string name, string directory)
    {
        var c = Configs.TryGetValue(name, out var config) ? config : throw new KeyNotFoundException($"{Type}: no instance '{name}' to save.");
        var json = new JsonObject
        {
            ["peft_type"] = Type,
            ["task_type"] = TaskType,
            ["target_modules"] = c.Targets.TargetsJson(),
            ["feedforward_modules"] = c.Feedforward.TargetsJson(),
            ["exclude_modules"] = c.Targets.ExcludeJson(),
            ["init_ia3_weights"] = c.InitIA3Weights,
            ["fan_in_fan_out"] = false,
            ["modules_to_save"] = null,
            ["inference_mode"] = true,
        };
        PeftFiles.Write(directory, json, _layers.Where(l => l.Value.Vectors.ContainsKey(name))
            .Select(l => PeftFiles.Entry($"{l.Key}.ia3_l", l.Value.Vectors[name])));
    }

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type, new HashSet<string> { "target_modules", "feedforward_modules", "exclude_modules", "init_ia3_weights" },
            new Dictionary<string, (Func<JsonNode?, bool>, string)>
            {
                ["fan_in_fan_out"] = (PeftFiles.IsNullOrFalse, "it stores weights transposed for Conv1D layers, which this model does not have"),
                ["modules_to_save"] = (PeftFiles.IsNullOrEmpty, "modules to save are not implemented for IA3"),
            }, warn);
        var (targets, targetRegex) = PeftFiles.NamesOrRegex(directory, root, "target_modules");
        var (ff, ffRegex) = PeftFiles.NamesOrRegex(directory, root, "feedforward_modules");
        var (exclude, excludeRegex) = PeftFiles.NamesOrRegex(directory, root, "exclude_modules");
        var config = new IA3Config
        {
            TargetModules = targets, TargetRegex = targetRegex, FeedforwardModules = ff, FeedforwardRegex = ffRegex,
            ExcludeModules = exclude, ExcludeRegex = excludeRegex, InitIA3Weights = PeftFiles.Bool(directory, root, "init_ia3_weights", true),
        };
        try { config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{Path.Combine(directory, AdapterFiles.ConfigFile)}: {e.Message}"); }
        var expected = new Dictionary<string, int[]>();
        foreach (var path in Targets(config))
        {
            var linear = Base.GetModule(path) is IA3Linear wrapped ? wrapped.BaseLayer : (Linear)Base.GetModule(path);
            expected[$"{path}.ia3_l"] = config.Feedforward.Matches(path) ? [1, linear.InFeatures] : [linear.OutFeatures, 1];
        }
        var values = PeftFiles.ReadWeights(directory, expected);
        Add(name, config);
        foreach (var (path, layer) in _layers.Where(l => l.Value.Vectors.ContainsKey(name)))
            layer.Vectors[name].Data.CopyFrom(values[$"{path}.ia3_l"]);
    }
}
