using System.Text.Json.Nodes;
using Nanolora.Autograd;

namespace Nanolora.Lora.Selective;

/// <summary>
/// Selective fine-tuning (BitFit, chosen layers) as a PEFT method: a freezing policy over parameter names, with one copy
/// of the selected values per named instance so instances switch without reloading the base. Training changes the
/// base's own parameters in place, so "merged" is the normal state: <see cref="PeftMethod{TConfig}.Merge"/> has nothing
/// to fold, and <see cref="PeftMethod{TConfig}.MergeAndUnload"/> keeps the active instance's values and forgets the rest.
/// <para>File layout (Nanolora's; PEFT has no such method): adapter_config.json with <c>peft_type</c> "SELECTIVE",
/// <c>bias_only</c>, <c>layers_to_transform</c>, <c>layers_pattern</c>; adapter_model.safetensors with each trained
/// parameter under <c>base_model.model.{its model name}</c>, the keys PEFT uses for a trained bias or module.</para>
/// </summary>
public sealed class SelectiveModel : PeftMethod<SelectiveConfig>
{
    readonly ParameterCopies _copies = new();
    readonly Dictionary<string, List<(string Name, Parameter P)>> _selected = new();

    /// <summary>Nanolora's peft_type for this method.</summary>
    public const string Type = "SELECTIVE";
    /// <inheritdoc/>
    public override string PeftType => Type;

    SelectiveModel(Module model) : base(model) { }

    /// <summary>A selective view of <paramref name="model"/> with no instances yet.</summary>
    public static SelectiveModel For(Module model) => new(model);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static SelectiveModel Inject(Module model, SelectiveConfig config, string name = "default") => Injected(new SelectiveModel(model), name, config);

    /// <inheritdoc/>
    protected override void AddCore(string name, SelectiveConfig config, ulong seed)
    {
        config.Validate();
        var selected = Base.NamedParameters().Where(p => config.Selects(p.Name)).ToList();
        if (selected.Count == 0)
            throw new ArgumentException($"Selective config (bias_only {config.BiasOnly}, layers_to_transform [{string.Join(", ", config.LayersToTransform ?? [])}]) selects no parameter of the model.");
        _copies.Add(name, selected.Select(s => s.Parameter));
        _selected[name] = selected;
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _selected.TryGetValue(name, out var s) ? s : throw new KeyNotFoundException($"{Type}: no instance '{name}'.");

    /// <inheritdoc/>
    protected override void Route(string? name) => _copies.Activate(name);
    /// <summary>Nothing to fold: the active instance's values already are the model's weights.</summary>
    protected override void MergeCore(string name) { }
    /// <summary>Nothing to undo (see <see cref="MergeCore"/>); disabling still restores the base's values.</summary>
    protected override void UnmergeCore(string name) { }
    /// <inheritdoc/>
    protected override void UnloadCore(string? merged) { _copies.Clear(); _selected.Clear(); }
    /// <inheritdoc/>
    protected override void DeleteCore(string name) { _copies.Remove(name); _selected.Remove(name); }
    /// <inheritdoc/>
    protected override long AddedParameterCount(string name) => 0;

    /// <inheritdoc/>
    public override void Save(string name, string directory)
    {
        var config = Configs.TryGetValue(name, out var c) ? c : throw new KeyNotFoundException($"{Type}: no instance '{name}' to save.");
        var json = new JsonObject
        {
            ["peft_type"] = Type,
            ["task_type"] = TaskType,
            ["bias_only"] = config.BiasOnly,
            ["layers_to_transform"] = config.LayersToTransform == null ? null : new JsonArray(config.LayersToTransform.Select(i => (JsonNode)JsonValue.Create(i)!).ToArray()),
            ["layers_pattern"] = config.LayersPattern.Count == 0 ? null : PeftFiles.Names(config.LayersPattern),
            ["inference_mode"] = true,
        };
        // A parked instance's values are not in the model: ValueOf finds them wherever they are.
        PeftFiles.Write(directory, json, _selected[name].Select(s => (s.Name, s.P.Data.ShapeArray(), _copies.ValueOf(name, s.P))));
    }

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type, new HashSet<string> { "bias_only", "layers_to_transform", "layers_pattern" },
            new Dictionary<string, (Func<JsonNode?, bool>, string)>(), warn);
        var config = new SelectiveConfig
        {
            BiasOnly = PeftFiles.Bool(directory, root, "bias_only", false),
            LayersToTransform = root["layers_to_transform"] switch
            {
                null => null,
                JsonArray a => a.Select(n => n is JsonValue v && v.TryGetValue(out int i) && i >= 0 ? i : throw PeftFiles.Bad(directory, "layers_to_transform", "layer indices ≥ 0", n)).ToList(),
                var other => throw PeftFiles.Bad(directory, "layers_to_transform", "a list of layer indices", other),
            },
            LayersPattern = PeftFiles.NamesOrRegex(directory, root, "layers_pattern") is var (names, single) && single != null ? [single] : names,
        };
        config.Validate();
        var expected = Base.NamedParameters().Where(p => config.Selects(p.Name)).ToDictionary(p => p.Name, p => p.Parameter.Data.ShapeArray());
        var values = PeftFiles.ReadWeights(directory, expected);
        Add(name, config);
        foreach (var (key, p) in _selected[name]) _copies.SetValue(name, p, values[key]);
    }
}
