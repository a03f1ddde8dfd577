using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// PEFT's print_trainable_parameters, as numbers, with one difference: the percentage is of the base model's parameters
/// (<see cref="BaseParameters"/>, adapters excluded), the denominator every Nanolora table uses, so that the same adapter
/// has the same percentage whichever other adapters are loaded beside it (PEFT divides by all parameters, adapters included).
/// </summary>
public sealed record TrainableReport(long Trainable, long Total, long AdapterParameters = 0)
{
    /// <summary>Parameters of the base model: all minus adapter parameters.</summary>
    public long BaseParameters => Total - AdapterParameters;
    /// <summary>Trainable parameters as a percentage of <see cref="BaseParameters"/>.</summary>
    public double Percent => PercentOfBase(Trainable, BaseParameters);
    /// <summary>PEFT's one-line summary, with the base-parameter count and the percentage of base.</summary>
    public override string ToString() =>
        $"trainable params: {Trainable:N0} || all params: {Total:N0} || base params: {BaseParameters:N0} || trainable% (of base): {Percent:F2}";

    /// <summary>100 · trainable / base-model parameters: the one trainable-% definition (0 for an empty model).</summary>
    public static double PercentOfBase(long trainable, long baseParameters) => baseParameters == 0 ? 0 : 100.0 * trainable / baseParameters;
}

/// <summary>
/// LoRA applied to a model from outside, by module name: targeted Linear layers are replaced by
/// <see cref="LoraLinear"/> wrappers; everything else is frozen. Several named adapters can live on one base;
/// one is active at a time, and switching is instant (no reload of the base).
/// </summary>
public sealed partial class LoraModel
{
    readonly Dictionary<string, LoraConfig> _configs = new();
    readonly Dictionary<string, LoraLinear> _layers = new();   // module path → wrapper
    readonly Dictionary<string, BaseFingerprint> _residualOrigins = new();   // PiSSA or LoRA-GA adapter → the base before its residual
    internal SavedModules SavedModules { get; private set; } = new();
    bool _disabled;   // inside a DisableAdapters() block

    /// <summary>Changing adapters inside a DisableAdapters() block would be undone wrongly on dispose: refuse it.</summary>
    void NotWhileDisabled(string what)
    {
        if (_disabled) throw new InvalidOperationException($"{what} inside a DisableAdapters() block; dispose the block first.");
    }
    /// <summary>The wrapped model (changed in place: adapted layers are <see cref="LoraLinear"/> wrappers).</summary>
    public Module Base { get; }
    /// <summary>The adapter forward passes use, or null for none.</summary>
    public string? ActiveAdapter { get; private set; }
    /// <summary>The adapters on this model by name, with their configs.</summary>
    public IReadOnlyDictionary<string, LoraConfig> Adapters => _configs;
    /// <summary>The wrapped layers by module path.</summary>
    public IReadOnlyDictionary<string, LoraLinear> Layers => _layers;

    LoraModel(Module model)
    {
        Base = model;
        // Wrappers already in the model (from another LoraModel view) are adopted, so adding to them reuses
        // the wrapper instead of trying to wrap it again, and switching adapters reaches every wrapper.
        foreach (var (name, module) in model.NamedModules())
            if (module is LoraLinear existing) _layers[name] = existing;
    }

    /// <summary>A LoRA view of a model with no adapters yet (add or load them next).</summary>
    public static LoraModel For(Module model) => new(model);

    /// <summary>Wraps the config's target layers with a new adapter <paramref name="adapterName"/> and freezes the rest.
    /// LoRA-GA needs <paramref name="gradients"/> (<see cref="LoraGa.EstimateGradients"/>).</summary>
    public static LoraModel Inject(Module model, LoraConfig config, string adapterName = "default", ulong seed = 1, IReadOnlyDictionary<string, Tensor>? gradients = null)
    {
        var lora = new LoraModel(model);
        lora.AddAdapter(adapterName, config, seed, gradients);
        lora.SetActiveAdapter(adapterName);
        return lora;
    }

    /// <summary>The paths of the Linear layers <paramref name="config"/> targets in <paramref name="model"/> (wrapped or not).</summary>
    public static List<string> TargetPaths(Module model, LoraConfig config) => model.NamedModules()
        .Where(m => (m.Module is Linear || m.Module is LoraLinear) && !m.Name.EndsWith(".base_layer") && config.Targets(m.Name))
        .Select(m => m.Name).ToList();

    /// <summary>
    /// Adds adapter <paramref name="name"/> to every layer <paramref name="config"/> targets (wrapping them where needed); it
    /// does not become active. A LoRA-GA adapter needs <paramref name="gradients"/>: the loss gradient of each target's weight, by path.
    /// </summary>
    public void AddAdapter(string name, LoraConfig config, ulong seed = 1, IReadOnlyDictionary<string, Tensor>? gradients = null)
    {
        config.Validate();
        if (_configs.ContainsKey(name)) throw new ArgumentException($"An adapter named '{name}' already exists.");
        var targets = TargetPaths(Base, config);
        if (targets.Count == 0)
            throw new ArgumentException($"LoRA targets [{string.Join(", ", config.TargetModules)}]{(config.TargetRegex != null ? " / regex " + config.TargetRegex : "")} match no Linear layer of the model.");
        string init = LoraConfig.InitName(config.Init);
        // PiSSA and LoRA-GA rewrite the base weights, so they cannot share a model with other adapters (they were made for
        // the original weights, or would be trained on the residual): one such adapter, alone.
        if (config.RewritesBase && _layers.Values.FirstOrDefault(l => l.Adapters.Count > 0) is { } used)
            throw new InvalidOperationException($"Adapter '{name}' (init {init}) replaces the base weights by a residual, but adapter(s) {string.Join(", ", used.Adapters.Keys)} already live on this model; it needs a model of its own.");
        if (_layers.Values.FirstOrDefault(l => l.Residual != null) is { } rewritten)
            throw new InvalidOperationException($"Adapter '{name}' cannot join adapter '{rewritten.Residual!.Adapter}', whose initialisation left the base weights a residual, not the base.");
        // Checked for every layer before any is changed: a refusal halfway would leave some weights residual.
        foreach (var path in config.RewritesBase ? targets : [])
        {
            var linear = Base.GetModule(path) as Linear ?? ((LoraLinear)Base.GetModule(path)).BaseLayer;
            int most = Math.Min(linear.InFeatures, linear.OutFeatures), r = config.RankFor(path), needed = config.Init == LoraInit.LoraGa ? 2 * r : r;
            // PiSSA takes the top r singular directions of W; LoRA-GA the top 2r of the gradient (r for A, the next r for B).
            if (needed > most)
                throw new ArgumentException($"{init}: rank {r} for '{path}' needs {needed} singular directions, but its {linear.OutFeatures} × {linear.InFeatures} weight has min(out, in) = {most}.");
            if (config.Init != LoraInit.LoraGa) continue;
            if (gradients == null || !gradients.TryGetValue(path, out var g))
                throw new ArgumentException($"lora_ga: no gradient for '{path}'; estimate them first (LoraGa.EstimateGradients) for the same targets.");
            if (g.Dim(0) != linear.OutFeatures || g.Dim(1) != linear.InFeatures)
                throw new ArgumentException($"lora_ga: the gradient for '{path}' is {g.ShapeString}, expected [{linear.OutFeatures}, {linear.InFeatures}] like its weight.");
            if (g.ToArray().Any(v => !float.IsFinite(v)))
                throw new ArgumentException($"lora_ga: the gradient for '{path}' holds NaN or infinity: the loss of the batches it was estimated on was not finite.");
        }
        // The fingerprint the saved (converted) adapter names is the base's as it is on disk, taken before any residual.
        if (config.RewritesBase && BaseFingerprint.Of(this, config) is { } origin) _residualOrigins[name] = origin;
        var seeds = new SeedSequence(seed);
        foreach (var path in targets)
        {
            if (!_layers.TryGetValue(path, out var layer))
            {
                layer = new LoraLinear((Linear)Base.GetModule(path), seeds.Next());
                Base.ReplaceModule(path, layer);
                _layers[path] = layer;
            }
            layer.AddAdapter(name, config.RankFor(path), config.ScalingFor(path), config.Dropout, config.Init, seeds.Next(), config.UseDora,
                gradients?.GetValueOrDefault(path), config.LoraGaStableGamma);
        }
        _configs[name] = config;
        SavedModules.Add(name, config, Base);
        // A new adapter is not active: keep only the active one (and what its config trains) trainable.
        if (ActiveAdapter != null) ApplyTrainability(_configs[ActiveAdapter], ActiveAdapter);
    }

    /// <summary>Makes <paramref name="name"/> the adapter in use and the only thing trainable (plus its bias mode and modules to save).</summary>
    public void SetActiveAdapter(string name)
    {
        NotWhileDisabled($"SetActiveAdapter('{name}')");
        if (!_configs.TryGetValue(name, out var config)) throw new KeyNotFoundException($"No adapter '{name}'. Adapters: {string.Join(", ", _configs.Keys)}.");
        foreach (var layer in _layers.Values)
        {
            if (layer.MergedAdapter != null && layer.MergedAdapter != name)
                throw new InvalidOperationException($"Adapter '{layer.MergedAdapter}' is merged; unmerge before switching to '{name}'.");
            layer.ActiveAdapter = layer.Adapters.ContainsKey(name) ? name : null;
            layer.AdaptersDisabled = false;
        }
        ActiveAdapter = name;
        SavedModules.Activate(name);
        ApplyTrainability(config, name);
    }

    void ApplyTrainability(LoraConfig config, string name)
    {
        Base.SetTrainable(false);
        foreach (var (path, layer) in _layers)
        {
            foreach (var (adapterName, adapter) in layer.Adapters)
                foreach (var p in adapter.Weights) p.Trainable = adapterName == name;
            if (config.Bias == LoraBias.LoraOnly && layer.Adapters.ContainsKey(name) && layer.BaseLayer.Bias != null)
                layer.BaseLayer.Bias.Trainable = true;
        }
        foreach (var (pname, p) in Base.NamedParameters())
            if (config.Bias == LoraBias.All && LoraConfig.IsBias(pname)) p.Trainable = true;
        foreach (var (_, p) in SavedModules.Matching(Base, config)) p.Trainable = true;
    }

    /// <summary>
    /// Runs the base model's behaviour (adapters bypassed) until disposed. A merged adapter is unmerged for the
    /// duration (the base weights are what "disabled" means) and merged back on dispose, like PEFT's
    /// <c>disable_adapter()</c> context.
    /// </summary>
    public IDisposable DisableAdapters()
    {
        NotWhileDisabled("DisableAdapters() (nested)");
        _disabled = true;
        var merged = _layers.Values.Where(l => l.MergedAdapter != null).Select(l => (Layer: l, Name: l.MergedAdapter!)).ToList();
        foreach (var (layer, _) in merged) layer.Unmerge();
        foreach (var layer in _layers.Values) layer.AdaptersDisabled = true;
        string? live = SavedModules.Live;
        SavedModules.Activate(null);
        return new Reenable(this, merged, live);
    }

    sealed class Reenable(LoraModel owner, List<(LoraLinear Layer, string Name)> merged, string? live) : IDisposable
    {
        bool disposed;

        public void Dispose()
        {
            if (disposed) return;
            disposed = true;
            owner._disabled = false;
            foreach (var l in owner._layers.Values) l.AdaptersDisabled = false;
            owner.SavedModules.Activate(live);
            foreach (var (layer, name) in merged) layer.Merge(name);
        }
    }

    /// <summary>
    /// Until disposed, forward passes give each sequence of the batch its own adapter (PEFT's <c>adapter_names</c>):
    /// <paramref name="sequenceAdapters"/> holds one name per sequence, <see cref="Nanolora.Lora.MixedBatch.Base"/> (or null)
    /// for the base model. Inference only (inside Graph.NoGrad); refused while an adapter is merged or adapters are disabled.
    /// </summary>
    public IDisposable MixedBatch(IReadOnlyList<string?> sequenceAdapters)
    {
        NotWhileDisabled("MixedBatch()");
        Nanolora.Lora.MixedBatch.Validate(this, sequenceAdapters);
        if (_layers.Values.FirstOrDefault(l => l.MergedAdapter != null) is { } merged)
            throw new InvalidOperationException($"Mixed batch: adapter '{merged.MergedAdapter}' is merged into the base weights, so every sequence would get it; unmerge it first.");
        var names = sequenceAdapters.ToArray();
        foreach (var layer in _layers.Values) layer.SequenceAdapters = names;
        return new EndMixedBatch(this);
    }

    sealed class EndMixedBatch(LoraModel owner) : IDisposable
    {
        public void Dispose() { foreach (var layer in owner._layers.Values) layer.SequenceAdapters = null; }
    }

    /// <summary>Removes an adapter from every layer and disposes its weights; refused while it is merged.</summary>
    public void DeleteAdapter(string name)
    {
        NotWhileDisabled($"DeleteAdapter('{name}')");
        if (!_configs.ContainsKey(name)) throw new KeyNotFoundException($"No adapter '{name}'.");
        if (_layers.Values.Any(l => l.MergedAdapter == name))
            throw new InvalidOperationException($"Adapter '{name}' is merged; unmerge it before deleting.");
        _configs.Remove(name);
        _residualOrigins.Remove(name);
        SavedModules.Remove(name);
        foreach (var layer in _layers.Values) if (layer.Adapters.ContainsKey(name)) layer.DeleteAdapter(name);
        if (ActiveAdapter == name) ActiveAdapter = null;
    }

    /// <summary>Folds the active (or named) adapter into the base weights: W += B·A·scaling.</summary>
    public void Merge(string? name = null)
    {
        NotWhileDisabled("Merge()");
        name ??= ActiveAdapter ?? throw new InvalidOperationException("No active adapter to merge.");
        if (_layers.Values.Any(l => l.MergedAdapter != null))
            throw new InvalidOperationException($"An adapter is already merged ('{_layers.Values.First(l => l.MergedAdapter != null).MergedAdapter}'); merging again would add it twice.");
        foreach (var layer in _layers.Values) if (layer.Adapters.ContainsKey(name)) layer.Merge(name);
    }

    /// <summary>Subtracts the merged adapter from the base weights again, restoring them up to float rounding.</summary>
    public void Unmerge()
    {
        NotWhileDisabled("Unmerge()");
        if (_layers.Values.All(l => l.MergedAdapter == null)) throw new InvalidOperationException("No adapter is merged.");
        foreach (var layer in _layers.Values) if (layer.MergedAdapter != null) layer.Unmerge();
    }

    /// <summary>Merges the active adapter and puts plain Linear layers back: the result has no LoRA code in its path.</summary>
    public Module MergeAndUnload()
    {
        NotWhileDisabled("MergeAndUnload()");
        if (_layers.Values.All(l => l.MergedAdapter == null) && ActiveAdapter != null) Merge();
        foreach (var (path, layer) in _layers) Base.ReplaceModule(path, layer.Unload());
        _layers.Clear();
        _configs.Clear();
        _residualOrigins.Clear();
        SavedModules = new SavedModules();   // the active adapter's saved modules stay in the model, as merged weights do
        ActiveAdapter = null;
        return Base;
    }

    /// <summary>Trainable, total and adapter parameter counts, as PEFT's print_trainable_parameters.</summary>
    public TrainableReport Report() => new(Base.ParameterCount(trainableOnly: true), Base.ParameterCount(),
        _configs.Keys.Sum(name => AdapterWeights(name).Sum(a => (long)a.Adapter.Count)));

    /// <summary>
    /// For a PiSSA adapter: the fingerprint of the base as it was before the adapter replaced its weights by the residual
    /// (the base on disk, which the saved, converted adapter belongs to); null for any other adapter.
    /// </summary>
    public BaseFingerprint? ResidualOrigin(string name) => _residualOrigins.GetValueOrDefault(name);

    /// <summary>Adapter parameters of <paramref name="name"/>: (module path, adapter).</summary>
    public IEnumerable<(string Path, LoraAdapter Adapter)> AdapterWeights(string name) =>
        _layers.Where(l => l.Value.Adapters.ContainsKey(name)).Select(l => (l.Key, l.Value.Adapters[name]));
}
