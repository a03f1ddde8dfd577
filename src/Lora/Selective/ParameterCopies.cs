using Nanolora.Autograd;

namespace Nanolora.Lora.Selective;

/// <summary>
/// One copy per instance of base parameters that instances train in place. The model's parameters hold the live
/// instance's values (so an optimizer updates them directly); every other instance's values, and the base's
/// originals, wait here on the host and are swapped in when the live instance changes. Keyed by object, like
/// LoRA's modules-to-save copies.
/// </summary>
internal sealed class ParameterCopies
{
    readonly Dictionary<Parameter, float[]> _original = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<string, Dictionary<Parameter, float[]>> _parked = new();

    /// <summary>The instance whose values the model holds (null: the originals).</summary>
    public string? Live { get; private set; }

    /// <summary>Gives <paramref name="instance"/> its own copy of <paramref name="parameters"/>, starting from the base's values.</summary>
    public void Add(string instance, IEnumerable<Parameter> parameters)
    {
        var copies = new Dictionary<Parameter, float[]>(ReferenceEqualityComparer.Instance);
        foreach (var p in parameters)
        {
            // The first instance to select a parameter sees the base's value: no instance has trained it yet.
            if (!_original.ContainsKey(p)) _original[p] = p.Data.ToArray();
            copies[p] = (float[])_original[p].Clone();
        }
        _parked[instance] = copies;
    }

    /// <summary>Puts <paramref name="instance"/>'s values (null: the originals) into the model, parking the live instance's.</summary>
    public void Activate(string? instance)
    {
        if (instance == Live) return;
        if (Live != null)
            foreach (var p in _parked[Live].Keys.ToList()) _parked[Live][p] = p.Data.ToArray();
        foreach (var (p, original) in _original)
            p.Data.CopyFrom(instance != null && _parked[instance].TryGetValue(p, out var mine) ? mine : original);
        Live = instance;
    }

    /// <summary>Forgets <paramref name="instance"/> (the originals go back first if it is live).</summary>
    public void Remove(string instance)
    {
        if (Live == instance) Activate(null);
        _parked.Remove(instance);
    }

    /// <summary>Forgets everything and leaves the model's values as they are now (merge and unload).</summary>
    public void Clear() { _original.Clear(); _parked.Clear(); Live = null; }

    /// <summary><paramref name="instance"/>'s value of <paramref name="p"/>, wherever it lives now.</summary>
    public float[] ValueOf(string instance, Parameter p) => instance == Live ? p.Data.ToArray() : _parked[instance][p];

    /// <summary>Sets <paramref name="instance"/>'s value of <paramref name="p"/> (in the model if live, parked otherwise).</summary>
    public void SetValue(string instance, Parameter p, float[] values)
    {
        if (instance == Live) p.Data.CopyFrom(values);
        else _parked[instance][p] = values;
    }
}
