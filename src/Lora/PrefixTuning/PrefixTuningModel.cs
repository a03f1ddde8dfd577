using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.PrefixTuning;

/// <summary>
/// Prefix tuning applied from outside through the attention modules' extra-key/value hook
/// (<see cref="MultiHeadAttention.ExtraKeyValues"/>): every prefixed module attends over the active instance's P key and
/// value vectors before its own, and its mask always admits them (causal decoder self-attention included). The base is
/// frozen; the prefixes do not change the sequence, so positions, outputs and the KV cache (which holds the real tokens'
/// keys only; the prefixes are added each step) are as without them.
/// <para>Modules, in the order of their prefixes in the tensor: the encoder layers' self-attention
/// (<c>encoder.layers.{i}.self_attn</c>, BERT <c>encoder.layer.{i}.attention</c>), then the decoder layers' self-attention,
/// then their cross-attention, each where <see cref="PrefixTuningConfig.PrefixSites"/> includes it. The encoders are attached
/// at <c>prompt_encoder.{name}.embedding.weight</c> (and <c>.transform.0/2.*</c>). Prefixes are extra keys, not a weight
/// change: merging is refused.</para>
/// <para>Files: PEFT's layout — adapter_config.json with <c>peft_type</c> "PREFIX_TUNING", PrefixTuningConfig's fields
/// (<c>num_virtual_tokens</c>, <c>token_dim</c>, <c>num_layers</c>, <c>num_attention_heads</c>,
/// <c>num_transformer_submodules</c>, <c>prefix_projection</c>, <c>encoder_hidden_size</c>) and Nanolora's
/// <c>prefix_sites</c>; one tensor <c>prompt_embeddings</c> [P, M·2·C]. As PEFT, a projection instance is saved as the MLP's
/// output, so a loaded one holds that table and trains it directly (PEFT's inference-mode PrefixEncoder).</para>
/// </summary>
public sealed class PrefixTuningModel : PeftMethod<PrefixTuningConfig>
{
    const string Host = "prompt_encoder";
    readonly PromptLearningBase _base;
    readonly Dictionary<string, (MultiHeadAttention Module, Func<int, (Variable, Variable)>? Previous)> _hooked = new();
    readonly Dictionary<string, string[]> _modules = new();   // instance → prefixed module paths, in tensor order
    ModuleDict<PrefixEncoder>? _encoders;
    bool _loading;

    /// <summary>PEFT's peft_type for prefix tuning.</summary>
    public const string Type = "PREFIX_TUNING";
    /// <inheritdoc/>
    public override string PeftType => Type;
    /// <inheritdoc/>
    public override bool CanMerge => false;
    /// <inheritdoc/>
    protected override string WhyNoMerge =>
        "Prefix tuning cannot be merged: its prefixes are extra keys and values every query attends to, which shift the softmax over the real keys, so no update of the base weights reproduces them.";
    /// <summary>The instances' prefix encoders by name.</summary>
    public IReadOnlyDictionary<string, PrefixEncoder> Encoders => _encoders?.Items ?? new Dictionary<string, PrefixEncoder>();
    /// <summary>The attention modules instance <paramref name="name"/> gives prefixes to, in the order of its tensor.</summary>
    public IReadOnlyList<string> PrefixedModules(string name) => _modules[name];

    PrefixTuningModel(Module model) : base(model) => _base = PromptLearningBase.Of(model, "Prefix tuning");

    /// <summary>A prefix-tuning view of <paramref name="model"/> (a Seq2SeqTransformer or a BertModel) with no instances yet; one view per model.</summary>
    public static PrefixTuningModel For(Module model) => new(model);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static PrefixTuningModel Inject(Module model, PrefixTuningConfig config, string name = "default", ulong seed = 1) => Injected(new PrefixTuningModel(model), name, config, seed);

    /// <summary>The sites <paramref name="config"/> names, or the model's all; refused where the model lacks one.</summary>
    IReadOnlyList<string> Sites(PrefixTuningConfig config, bool fromPeftFile = false)
    {
        var all = _base.IsSeq2Seq ? PrefixSite.Order : [PrefixSite.Encoder];
        var sites = config.PrefixSites ?? (fromPeftFile && _base.IsSeq2Seq ? [PrefixSite.Decoder] : all);
        foreach (var s in sites)
            if (!all.Contains(s)) throw new ArgumentException($"Prefix tuning config: prefix_sites entry \"{s}\" needs a decoder, and a BertModel has none.");
        return sites;
    }

    /// <summary>The attention module paths of <paramref name="sites"/>, in tensor order.</summary>
    string[] ModulePaths(IReadOnlyList<string> sites)
    {
        var paths = new List<string>();
        if (sites.Contains(PrefixSite.Encoder))
            paths.AddRange(Enumerable.Range(0, _base.NumLayers).Select(i => _base.IsSeq2Seq ? $"encoder.layers.{i}.self_attn" : $"encoder.layer.{i}.attention"));
        if (sites.Contains(PrefixSite.Decoder)) paths.AddRange(Enumerable.Range(0, _base.DecoderLayers).Select(i => $"decoder.layers.{i}.self_attn"));
        if (sites.Contains(PrefixSite.Cross)) paths.AddRange(Enumerable.Range(0, _base.DecoderLayers).Select(i => $"decoder.layers.{i}.cross_attn"));
        if (paths.Count == 0) throw new ArgumentException($"Prefix tuning: the model has no attention module at prefix_sites [{string.Join(", ", sites)}].");
        return paths.ToArray();
    }

    /// <inheritdoc/>
    protected override void AddCore(string name, PrefixTuningConfig config, ulong seed)
    {
        config.Validate();
        var paths = ModulePaths(Sites(config));
        int? hidden = config.PrefixProjection && !_loading ? config.EncoderHiddenSize ?? _base.TokenDim : null;
        _encoders ??= PromptLearningBase.AttachHost<PrefixEncoder>(Base, Host, PeftType);
        _encoders.Add(name, new PrefixEncoder(config.NumVirtualTokens, paths.Length, _base.TokenDim, hidden, seed, _base.Device));
        _modules[name] = paths;
        foreach (var path in paths)
            if (!_hooked.ContainsKey(path))
            {
                var attention = (MultiHeadAttention)Base.GetModule(path);
                _hooked[path] = (attention, attention.ExtraKeyValues);
            }
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _encoders != null && _encoders.Items.TryGetValue(name, out var e) ? e.NamedParameters($"{Host}.{name}.") : [];

    /// <summary>Points every prefixed module of instance <paramref name="name"/> at its prefixes; every other hooked module gets its previous hook back.</summary>
    protected override void Route(string? name)
    {
        var index = name != null && _modules.TryGetValue(name, out var paths)
            ? paths.Select((p, i) => (p, i)).ToDictionary(x => x.p, x => x.i) : new Dictionary<string, int>();
        foreach (var (path, (attention, previous)) in _hooked)
        {
            if (!index.TryGetValue(path, out int m)) { attention.ExtraKeyValues = previous; continue; }
            var encoder = _encoders!.Items[name!];
            attention.ExtraKeyValues = batch => encoder.KeyValues(m, batch);
        }
    }

    /// <summary>Never called: <see cref="CanMerge"/> is false, so the base refuses first.</summary>
    protected override void MergeCore(string name) => throw new NotSupportedException(WhyNoMerge);
    /// <summary>Never called (see <see cref="MergeCore"/>).</summary>
    protected override void UnmergeCore(string name) => throw new NotSupportedException(WhyNoMerge);

    /// <summary>Detaches the encoders and puts every module's previous hook back.</summary>
    protected override void UnloadCore(string? merged)
    {
        foreach (var (attention, previous) in _hooked.Values) attention.ExtraKeyValues = previous;
        if (_encoders != null) { Base.DetachModule(Host); _encoders.Dispose(); _encoders = null; }
        _hooked.Clear();
        _modules.Clear();
    }

    /// <inheritdoc/>
    protected override void DeleteCore(string name)
    {
        _encoders?.Remove(name);
        _modules.Remove(name);
    }

    /// <inheritdoc/>
    protected override long AddedParameterCount(string name) => InstanceParameters(name).Sum(p => p.Parameter.Count);

    /// <inheritdoc/>
    public override void Save(string name, string directory)
    {
        var c = Configs.TryGetValue(name, out var config) ? config : throw new KeyNotFoundException($"{Type}: no instance '{name}' to save.");
        var encoder = _encoders!.Items[name];
        var json = _base.ConfigJson(Type, c.NumVirtualTokens, _base.DefaultSubmodules);
        json["prefix_projection"] = c.PrefixProjection;
        json["encoder_hidden_size"] = c.EncoderHiddenSize ?? _base.TokenDim;
        json["prefix_sites"] = PeftFiles.Names(PrefixSite.Order.Where(SitesOf(name).Contains));
        PeftFiles.Write(directory, json, [(PromptLearningBase.EmbeddingsKey, [encoder.VirtualTokens, encoder.Modules * 2 * encoder.Width], encoder.Values())], prefix: "");
    }

    /// <summary>The sites instance <paramref name="name"/>'s modules lie at.</summary>
    IEnumerable<string> SitesOf(string name) => _modules[name].Select(p =>
        p.EndsWith(".cross_attn") ? PrefixSite.Cross : p.StartsWith("decoder.") ? PrefixSite.Decoder : PrefixSite.Encoder).Distinct();

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type,
            new HashSet<string>(PromptLearningBase.KnownFields) { "prefix_projection", "encoder_hidden_size", "prefix_sites" },
            PromptLearningBase.Refused(), warn);
        var (sites, _) = PeftFiles.NamesOrRegex(directory, root, "prefix_sites");
        var config = new PrefixTuningConfig
        {
            NumVirtualTokens = _base.ReadVirtualTokens(directory, root),
            PrefixProjection = PeftFiles.Bool(directory, root, "prefix_projection", false),
            EncoderHiddenSize = root["encoder_hidden_size"] is null ? null : PromptLearningBase.Int(directory, root, "encoder_hidden_size", null, 1),
            PrefixSites = root["prefix_sites"] is null ? null : sites,
        };
        string[] paths;
        try { config.Validate(); paths = ModulePaths(Sites(config, fromPeftFile: true)); }
        catch (ArgumentException e) { throw new InvalidDataException($"{Path.Combine(directory, AdapterFiles.ConfigFile)}: {e.Message}"); }
        var values = PeftFiles.ReadWeights(directory,
            new Dictionary<string, int[]> { [PromptLearningBase.EmbeddingsKey] = [config.NumVirtualTokens, paths.Length * 2 * _base.TokenDim] }, prefix: "");
        // A file without prefix_sites is PEFT's: its placement, recorded so that saving it again says so.
        config = config with { PrefixSites = Sites(config, fromPeftFile: true).ToList() };
        _loading = true;   // the file holds the prefixes themselves (the MLP's output for a projection instance)
        try { Add(name, config); }
        finally { _loading = false; }
        _encoders!.Items[name].Table.Data.CopyFrom(values[PromptLearningBase.EmbeddingsKey]);
    }
}
