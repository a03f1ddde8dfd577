using Nanolora.Autograd;

namespace Nanolora.Lora;

/// <summary>
/// PyTorch's nn.ModuleDict: children by instance name, so one instance's modules read
/// <c>….adapters.{name}.adapter_down.0.weight</c>. Entries can be added and removed while the model lives.
/// </summary>
public sealed class ModuleDict<T> : Module where T : Module
{
    readonly Dictionary<string, T> _items = new();

    /// <summary>The entries by name.</summary>
    public IReadOnlyDictionary<string, T> Items => _items;

    /// <summary>Adds <paramref name="module"/> under <paramref name="name"/> (refused if taken).</summary>
    public T Add(string name, T module)
    {
        if (!_items.TryAdd(name, module)) throw new ArgumentException($"'{name}' is already in this {GetType().Name}.");
        return RegisterModule(name, module);
    }

    /// <summary>Removes and disposes entry <paramref name="name"/>; false if there was none.</summary>
    public bool Remove(string name)
    {
        if (!_items.Remove(name, out var module)) return false;
        RemoveModule(name);
        module.Dispose();
        return true;
    }
}

/// <summary>
/// PyTorch's nn.ParameterDict: one parameter per instance name, so IA³'s vectors read <c>….ia3_l.{name}</c> as PEFT's do.
/// Module has no way to unregister a parameter, so removal makes a new dictionary (<see cref="Without"/>).
/// </summary>
public sealed class ParameterDict : Module
{
    readonly Dictionary<string, Parameter> _items = new();

    /// <summary>A dictionary holding <paramref name="items"/> (taken over: this module disposes them).</summary>
    public ParameterDict(IEnumerable<KeyValuePair<string, Parameter>> items)
    {
        foreach (var (name, p) in items) { _items[name] = p; RegisterParameter(name, p); }
    }

    /// <summary>The entries by name.</summary>
    public IReadOnlyDictionary<string, Parameter> Items => _items;

    /// <summary>A new dictionary with this one's entries plus <paramref name="p"/> under <paramref name="name"/> (refused if taken).</summary>
    public ParameterDict With(string name, Parameter p) => _items.ContainsKey(name)
        ? throw new ArgumentException($"'{name}' is already in this ParameterDict.")
        : new(_items.Append(KeyValuePair.Create(name, p)));

    /// <summary>A new dictionary without entry <paramref name="name"/>; that parameter is returned for the caller to dispose.</summary>
    public (ParameterDict Remaining, Parameter Removed) Without(string name) => _items.TryGetValue(name, out var removed)
        ? (new(_items.Where(kv => kv.Key != name)), removed)
        : throw new KeyNotFoundException($"No '{name}' in this ParameterDict.");
}
