using Nanolora.Autograd;

namespace Nanolora.Lora;

/// <summary>
/// PEFT's <c>modules_to_save</c> with one copy per adapter: the model's own parameters hold the values of the
/// adapter in use (so training updates them in place), while every other adapter's values and the base model's
/// originals wait here and are swapped in when the active adapter changes or adapters are disabled.
/// Parameters are keyed by object, so wrapping a layer later (which renames it) does not lose them.
/// </summary>
internal sealed class SavedModules
{
    readonly Dictionary<Parameter, float[]> _original = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<string, Dictionary<Parameter, float[]>> _parked = new();   // adapter → its values while not live

    /// <summary>The adapter whose values the model holds now (null: the base model's originals).</summary>
    public string? Live { get; private set; }

    /// <summary>
    /// The parameters of the modules <paramref name="config"/> saves. Names are matched with ".base_layer" removed,
    /// so a saved module that another adapter later wraps with LoRA is still found (as the adapter files name it).
    /// </summary>
    public static IEnumerable<(string Name, Parameter P)> Matching(Module model, LoraConfig config) =>
        model.NamedParameters().Select(p => (Name: p.Name.Replace(".base_layer.", "."), P: p.Parameter))
            .Where(p => p.Name.LastIndexOf('.') is int dot && dot > 0 && config.SavesModule(p.Name[..dot]));

    /// <summary>Gives <paramref name="adapter"/> its own copy of each module it saves, starting from the base's values.</summary>
    public void Add(string adapter, LoraConfig config, Module model)
    {
        var copies = new Dictionary<Parameter, float[]>(ReferenceEqualityComparer.Instance);
        foreach (var (_, p) in Matching(model, config))
        {
            // The first adapter to save a module sees the base's values in the model: no adapter has changed them yet.
            if (!_original.ContainsKey(p)) _original[p] = p.Data.ToArray();
            copies[p] = (float[])_original[p].Clone();
        }
        _parked[adapter] = copies;
    }

    public bool Owns(string adapter, Parameter p) => _parked.TryGetValue(adapter, out var c) && c.ContainsKey(p);

    /// <summary>Puts <paramref name="adapter"/>'s copies (null: the originals) into the model, parking the live adapter's.</summary>
    public void Activate(string? adapter)
    {
        if (adapter == Live) return;
        if (Live != null)
            foreach (var p in _parked[Live].Keys.ToList()) _parked[Live][p] = p.Data.ToArray();
        foreach (var (p, original) in _original)
            p.Data.CopyFrom(adapter != null && _parked[adapter].TryGetValue(p, out var mine) ? mine : original);
        Live = adapter;
    }

    public void Remove(string adapter)
    {
        if (Live == adapter) Activate(null);
        _parked.Remove(adapter);
    }

    /// <summary><paramref name="adapter"/>'s value of a saved parameter, wherever it lives now.</summary>
    public float[] ValueOf(string adapter, Parameter p) => adapter == Live ? p.Data.ToArray() : _parked[adapter][p];

    public void SetValue(string adapter, Parameter p, float[] values)
    {
        if (values.Length != p.Count)
            throw new InvalidDataException($"Adapter '{adapter}': a module-to-save tensor holds {values.Length} values, but the model's parameter has {p.Count}.");
        if (adapter == Live) p.Data.CopyFrom(values);
        else _parked[adapter][p] = values;
    }
}
