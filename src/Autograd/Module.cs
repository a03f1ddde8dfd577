namespace Nanolora.Autograd;

/// <summary>A module that maps one value to another (Linear, LoraLinear, a feed-forward block...).</summary>
public interface ILayer
{
    /// <summary>The layer applied to <paramref name="x"/>.</summary>
    Variable Forward(Variable x);
}

/// <summary>
/// A tree of modules with named parameters, PyTorch-style: names join with dots
/// (<c>encoder.layers.0.self_attn.q_proj.weight</c>). Children can be looked up and replaced by path,
/// which is how PEFT methods wrap layers from outside without the model knowing them.
/// </summary>
public abstract class Module : IDisposable
{
    readonly List<KeyValuePair<string, Parameter>> _parameters = new();
    readonly List<KeyValuePair<string, Module>> _children = new();

    /// <summary>Training mode (dropout on) or eval mode; set through <see cref="Train"/> and <see cref="Eval"/>.</summary>
    public bool Training { get; private set; } = true;

    /// <summary>Adds <paramref name="p"/> under <paramref name="name"/>; the module disposes it.</summary>
    protected Parameter RegisterParameter(string name, Parameter p)
    {
        _parameters.Add(new(name, p));
        return p;
    }

    /// <summary>Adds a child under <paramref name="name"/>; the module disposes it.</summary>
    protected T RegisterModule<T>(string name, T module) where T : Module
    {
        _children.Add(new(name, module));
        return module;
    }

    /// <summary>
    /// Registers <paramref name="module"/> at a dotted path below this module, creating plain
    /// <see cref="ModuleGroup"/> containers for missing intermediate names (Hugging Face's BERT nests
    /// <c>attention.self.query</c> and <c>attention.output.LayerNorm</c> under one attention block).
    /// </summary>
    protected T RegisterModuleAt<T>(string path, T module) where T : Module
    {
        var parts = path.Split('.');
        Module parent = this;
        foreach (var part in parts[..^1])
        {
            var existing = parent._children.FirstOrDefault(c => c.Key == part).Value;
            parent = existing ?? parent.RegisterModule(part, new ModuleGroup());
        }
        parent._children.Add(new(parts[^1], module));
        return module;
    }

    /// <summary>
    /// Adds <paramref name="module"/> at a dotted path below this module from outside: the extension point for PEFT
    /// methods that add modules instead of replacing one (bottleneck adapters hang theirs beside a layer's parts, so
    /// they are enumerated, trained and saved with the model's own names). Missing intermediate names become
    /// <see cref="ModuleGroup"/>s; a path already taken is refused.
    /// </summary>
    public T AttachModule<T>(string path, T module) where T : Module
    {
        if (TryGetModule(path) != null) throw new ArgumentException($"Cannot attach a {module.GetType().Name} at '{path}': a {TryGetModule(path)!.GetType().Name} is already there.");
        return RegisterModuleAt(path, module);
    }

    /// <summary>Removes the module at a dotted path from the tree and returns it (not disposed: the caller decides); null if there was none.</summary>
    public Module? DetachModule(string path)
    {
        var module = TryGetModule(path);
        if (module == null) return null;
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? this : GetModule(path[..dot]);
        parent.RemoveModule(dot < 0 ? path : path[(dot + 1)..]);
        return module;
    }

    Module? TryGetModule(string path)
    {
        Module current = this;
        foreach (var part in path.Split('.', StringSplitOptions.RemoveEmptyEntries))
        {
            var next = current._children.FirstOrDefault(c => c.Key == part).Value;
            if (next == null) return null;
            current = next;
        }
        return current;
    }

    /// <summary>Removes a direct child (not disposed: the caller decides); false if there was none.</summary>
    protected bool RemoveModule(string name) => _children.RemoveAll(c => c.Key == name) > 0;

    /// <summary>
    /// The child called <paramref name="name"/>, or the descendant at a dotted path (always read through here, so
    /// replacements take effect).
    /// </summary>
    protected Module Child(string name) =>
        name.Contains('.') ? GetModule(name) : DirectChild(name);

    Module DirectChild(string name)
    {
        foreach (var (n, m) in _children) if (n == name) return m;
        throw new KeyNotFoundException($"{GetType().Name} has no child '{name}'. Children: {string.Join(", ", _children.Select(c => c.Key))}.");
    }

    /// <summary>The child at <paramref name="name"/> as a layer (see <see cref="Child"/>).</summary>
    protected ILayer Layer(string name) => Child(name) as ILayer
        ?? throw new InvalidOperationException($"Child '{name}' of {GetType().Name} is a {Child(name).GetType().Name}, which is not a layer.");

    /// <summary>The direct children with their names, in registration order.</summary>
    public IEnumerable<KeyValuePair<string, Module>> Children => _children;

    /// <summary>Every parameter of this module and its descendants with its dotted path, each name prefixed with <paramref name="prefix"/>.</summary>
    public IEnumerable<(string Name, Parameter Parameter)> NamedParameters(string prefix = "")
    {
        foreach (var (n, p) in _parameters) yield return (prefix + n, p);
        foreach (var (n, m) in _children)
            foreach (var item in m.NamedParameters(prefix + n + ".")) yield return item;
    }

    /// <summary>Every parameter of the tree, frozen or not.</summary>
    public IEnumerable<Parameter> Parameters() => NamedParameters().Select(p => p.Parameter);
    /// <summary>The parameters that are trainable: what to give an optimizer.</summary>
    public IEnumerable<Parameter> TrainableParameters() => Parameters().Where(p => p.Trainable);

    /// <summary>This module (name "") and every descendant with its dotted path.</summary>
    public IEnumerable<(string Name, Module Module)> NamedModules(string prefix = "")
    {
        yield return (prefix.TrimEnd('.'), this);
        foreach (var (n, m) in _children)
            foreach (var item in m.NamedModules(prefix + n + ".")) yield return item;
    }

    /// <summary>The descendant at a dotted path ("" is this module); throws if a name is missing.</summary>
    public Module GetModule(string path)
    {
        Module current = this;
        foreach (var part in path.Split('.', StringSplitOptions.RemoveEmptyEntries)) current = current.DirectChild(part);
        return current;
    }

    /// <summary>Swaps the module at <paramref name="path"/>; returns the old one (not disposed: a wrapper may keep it).</summary>
    public Module ReplaceModule(string path, Module replacement)
    {
        int dot = path.LastIndexOf('.');
        var parent = dot < 0 ? this : GetModule(path[..dot]);
        var name = dot < 0 ? path : path[(dot + 1)..];
        for (int i = 0; i < parent._children.Count; i++)
        {
            if (parent._children[i].Key != name) continue;
            var old = parent._children[i].Value;
            parent._children[i] = new(name, replacement);
            return old;
        }
        throw new KeyNotFoundException($"No module at '{path}'.");
    }

    /// <summary>Sets training mode on this module and every descendant.</summary>
    public void Train(bool training = true)
    {
        Training = training;
        foreach (var (_, m) in _children) m.Train(training);
    }

    /// <summary>Sets eval mode (dropout off) on the whole tree.</summary>
    public void Eval() => Train(false);

    /// <summary>Freezes (or unfreezes) every parameter.</summary>
    public void SetTrainable(bool trainable)
    {
        foreach (var p in Parameters()) p.Trainable = trainable;
    }

    /// <summary>Number of scalar weights, of all parameters or only the trainable ones.</summary>
    public long ParameterCount(bool trainableOnly = false) =>
        Parameters().Where(p => !trainableOnly || p.Trainable).Sum(p => p.Count);

    /// <summary>Clears the gradients of every parameter.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Parameters()) p.ZeroGrad();
    }

    /// <summary>Disposes every parameter and child.</summary>
    public virtual void Dispose()
    {
        foreach (var (_, p) in _parameters) p.Dispose();
        foreach (var (_, m) in _children) m.Dispose();
        GC.SuppressFinalize(this);
    }
}

/// <summary>A module that only groups children under a name (no parameters or computation of its own).</summary>
public sealed class ModuleGroup : Module;
