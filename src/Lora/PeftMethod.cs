using Nanolora.Autograd;

namespace Nanolora.Lora;

/// <summary>
/// A PEFT method applied to a model from outside, with named instances on one base (PEFT's adapters): what the
/// families other than LoRA (<see cref="Selective.SelectiveModel"/>, <see cref="LnTuning.LnTuningModel"/>,
/// <see cref="IA3.IA3Model"/>, <see cref="Bottleneck.BottleneckModel"/>) have in common, so training, evaluation and
/// the experiment can treat them alike. One instance is active at a time; only its parameters train.
/// </summary>
public interface IPeftMethod
{
    /// <summary>The method's name in adapter_config.json's <c>peft_type</c> (PEFT's where PEFT has the method).</summary>
    string PeftType { get; }
    /// <summary>The model the method is applied to (changed in place).</summary>
    Module Base { get; }
    /// <summary>The names of the instances on the model.</summary>
    IReadOnlyCollection<string> Instances { get; }
    /// <summary>The instance forward passes use, or null for none.</summary>
    string? ActiveInstance { get; }
    /// <summary>Makes <paramref name="name"/> the instance forward passes use; its parameters become the only trainable ones.</summary>
    void SetActive(string name);
    /// <summary>The base model's behaviour, bit for bit, until disposed (PEFT's <c>disable_adapter()</c>).</summary>
    IDisposable Disable();
    /// <summary>The parameters instance <paramref name="name"/> trains, with their model names.</summary>
    IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name);
    /// <summary>Whether the method's maths allows folding an instance into the base weights.</summary>
    bool CanMerge { get; }
    /// <summary>Folds the active (or named) instance into the base weights; refused with the reason where <see cref="CanMerge"/> is false.</summary>
    void Merge(string? name = null);
    /// <summary>Undoes <see cref="Merge"/>.</summary>
    void Unmerge();
    /// <summary>Removes an instance and frees its parameters.</summary>
    void Delete(string name);
    /// <summary>Writes instance <paramref name="name"/> to <paramref name="directory"/> (adapter_config.json + adapter_model.safetensors).</summary>
    void Save(string name, string directory);
    /// <summary>Trainable, total and added parameter counts (as <see cref="LoraModel.Report"/>).</summary>
    TrainableReport Report();
}

/// <summary>
/// The bookkeeping every <see cref="IPeftMethod"/> shares: instances by name with their configs, the active and merged
/// instance, trainability, and the disable block (which unmerges for its duration and merges back after, as LoRA's
/// does). A method supplies how to add, route to, merge and delete an instance.
/// </summary>
public abstract class PeftMethod<TConfig> : IPeftMethod where TConfig : class
{
    readonly Dictionary<string, TConfig> _configs = new();
    bool _disabled;

    /// <summary>A view of <paramref name="model"/> with no instances yet.</summary>
    protected PeftMethod(Module model) => Base = model;

    /// <summary>Every method's Inject: <paramref name="view"/> with instance <paramref name="name"/> added and made active.</summary>
    protected static TModel Injected<TModel>(TModel view, string name, TConfig config, ulong seed = 1) where TModel : PeftMethod<TConfig>
    {
        view.Add(name, config, seed);
        view.SetActive(name);
        return view;
    }

    /// <summary>The <typeparamref name="TLayer"/> wrappers already in <paramref name="model"/> (another view's), by module path, for a new view to adopt.</summary>
    protected static Dictionary<string, TLayer> Adopted<TLayer>(Module model) where TLayer : Module =>
        model.NamedModules().Where(m => m.Module is TLayer).ToDictionary(m => m.Name, m => (TLayer)m.Module);

    /// <inheritdoc/>
    public abstract string PeftType { get; }
    /// <summary>PEFT's task_type for the base, written into adapter_config.json: SEQ_2_SEQ_LM, FEATURE_EXTRACTION (BERT), or null for another module.</summary>
    protected string? TaskType => Base switch { Nanolora.Transformer.Seq2SeqTransformer => "SEQ_2_SEQ_LM", Nanolora.Transformer.BertModel => "FEATURE_EXTRACTION", _ => null };
    /// <inheritdoc/>
    public Module Base { get; }
    /// <summary>The instances with their configs.</summary>
    public IReadOnlyDictionary<string, TConfig> Configs => _configs;
    /// <inheritdoc/>
    public IReadOnlyCollection<string> Instances => _configs.Keys;
    /// <inheritdoc/>
    public string? ActiveInstance { get; private set; }
    /// <summary>The instance folded into the base weights, if any.</summary>
    public string? MergedInstance { get; private set; }
    /// <inheritdoc/>
    public virtual bool CanMerge => true;

    /// <summary>Adds instance <paramref name="name"/> (its parameters are created here); it does not become active.</summary>
    public void Add(string name, TConfig config, ulong seed = 1)
    {
        NotWhileDisabled($"Add('{name}')");
        if (_configs.ContainsKey(name)) throw new ArgumentException($"{PeftType}: an instance named '{name}' already exists.");
        AddCore(name, config, seed);
        _configs[name] = config;
        // A new instance must not become trainable beside the active one: re-apply the active one's policy.
        if (ActiveInstance != null) ApplyTrainability(ActiveInstance);
        else Base.SetTrainable(false);
    }

    /// <inheritdoc/>
    public void SetActive(string name)
    {
        NotWhileDisabled($"SetActive('{name}')");
        if (!_configs.ContainsKey(name)) throw new KeyNotFoundException($"{PeftType}: no instance '{name}'. Instances: {string.Join(", ", _configs.Keys)}.");
        if (MergedInstance != null && MergedInstance != name)
            throw new InvalidOperationException($"{PeftType}: instance '{MergedInstance}' is merged; unmerge it before switching to '{name}'.");
        ActiveInstance = name;
        Route(name);
        ApplyTrainability(name);
    }

    void ApplyTrainability(string name)
    {
        Base.SetTrainable(false);
        foreach (var (_, p) in InstanceParameters(name)) p.Trainable = true;
    }

    /// <inheritdoc/>
    public IDisposable Disable()
    {
        NotWhileDisabled("Disable() (nested)");
        _disabled = true;
        string? merged = MergedInstance;
        if (merged != null) { UnmergeCore(merged); MergedInstance = null; }
        Route(null);
        return new Reenable(this, merged);
    }

    sealed class Reenable(PeftMethod<TConfig> owner, string? merged) : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            owner._disabled = false;
            owner.Route(owner.ActiveInstance);
            if (merged != null) { owner.MergeCore(merged); owner.MergedInstance = merged; }
        }
    }

    /// <inheritdoc/>
    public void Merge(string? name = null)
    {
        NotWhileDisabled("Merge()");
        if (!CanMerge) throw new NotSupportedException(WhyNoMerge);
        name ??= ActiveInstance ?? throw new InvalidOperationException($"{PeftType}: no active instance to merge.");
        if (!_configs.ContainsKey(name)) throw new KeyNotFoundException($"{PeftType}: no instance '{name}' to merge.");
        if (MergedInstance != null) throw new InvalidOperationException($"{PeftType}: instance '{MergedInstance}' is already merged; merging again would apply it twice. Unmerge first.");
        if (name != ActiveInstance) SetActive(name);
        MergeCore(name);
        MergedInstance = name;
    }

    /// <inheritdoc/>
    public void Unmerge()
    {
        NotWhileDisabled("Unmerge()");
        if (!CanMerge) throw new NotSupportedException(WhyNoMerge);
        if (MergedInstance == null) throw new InvalidOperationException($"{PeftType}: no instance is merged.");
        UnmergeCore(MergedInstance);
        MergedInstance = null;
    }

    /// <summary>Merges the active instance (where the maths allows) and removes the method from the model: the result has none of its code in the path.</summary>
    public Module MergeAndUnload()
    {
        NotWhileDisabled("MergeAndUnload()");
        if (!CanMerge) throw new NotSupportedException(WhyNoMerge);
        if (MergedInstance == null && ActiveInstance != null) Merge();
        UnloadCore(MergedInstance);
        _configs.Clear();
        ActiveInstance = MergedInstance = null;
        return Base;
    }

    /// <summary>Removes the method from the model without merging (PEFT's <c>unload()</c>): a merged instance is unmerged first, and the base model is what remains.</summary>
    public Module Unload()
    {
        NotWhileDisabled("Unload()");
        if (MergedInstance != null) Unmerge();
        Route(null);   // selective methods put the base's own values back here
        UnloadCore(null);
        _configs.Clear();
        ActiveInstance = null;
        return Base;
    }

    /// <inheritdoc/>
    public void Delete(string name)
    {
        NotWhileDisabled($"Delete('{name}')");
        if (!_configs.ContainsKey(name)) throw new KeyNotFoundException($"{PeftType}: no instance '{name}'.");
        if (MergedInstance == name) throw new InvalidOperationException($"{PeftType}: instance '{name}' is merged; unmerge it before deleting.");
        if (ActiveInstance == name) { ActiveInstance = null; Route(null); }
        DeleteCore(name);
        _configs.Remove(name);
    }

    /// <inheritdoc/>
    public TrainableReport Report() => new(Base.ParameterCount(trainableOnly: true), Base.ParameterCount(),
        _configs.Keys.Sum(AddedParameterCount));

    /// <summary>Refuses what a disable block would undo wrongly on dispose.</summary>
    protected void NotWhileDisabled(string what)
    {
        if (_disabled) throw new InvalidOperationException($"{PeftType}: {what} inside a Disable() block; dispose the block first.");
    }

    /// <inheritdoc/>
    public abstract IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name);
    /// <inheritdoc/>
    public abstract void Save(string name, string directory);
    /// <summary>
    /// Adds the instance saved in <paramref name="directory"/> as <paramref name="name"/>, not made active. Refused, with the
    /// model unchanged, when the config or a tensor does not fit (named in the message); <paramref name="warn"/> gets one line
    /// per unknown config field (default: stderr).
    /// </summary>
    public abstract void Load(string directory, string name, Action<string>? warn = null);
    /// <summary>Creates instance <paramref name="name"/>'s parameters on the model (wrapping or attaching modules as the method needs).</summary>
    protected abstract void AddCore(string name, TConfig config, ulong seed);
    /// <summary>Makes forward passes use instance <paramref name="name"/>, or the base model when null.</summary>
    protected abstract void Route(string? name);
    /// <summary>Folds instance <paramref name="name"/> into the base weights (called only when <see cref="CanMerge"/>).</summary>
    protected abstract void MergeCore(string name);
    /// <summary>Undoes <see cref="MergeCore"/>.</summary>
    protected abstract void UnmergeCore(string name);
    /// <summary>Removes every instance from the model, leaving <paramref name="merged"/>'s values folded in (null: none).</summary>
    protected abstract void UnloadCore(string? merged);
    /// <summary>Removes instance <paramref name="name"/>'s parameters from the model and frees them.</summary>
    protected abstract void DeleteCore(string name);
    /// <summary>Parameters instance <paramref name="name"/> adds to the model (0 for methods that train the base's own).</summary>
    protected abstract long AddedParameterCount(string name);
    /// <summary>Why <see cref="Merge"/> is refused when <see cref="CanMerge"/> is false.</summary>
    protected virtual string WhyNoMerge => $"{PeftType} cannot be merged.";
}
