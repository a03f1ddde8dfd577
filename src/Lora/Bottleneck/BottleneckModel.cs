using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.Bottleneck;

/// <summary>
/// Bottleneck adapters (Houlsby, Pfeiffer) applied from outside through the transformer's sublayer-output hook: every
/// layer's hook runs the active instance's adapter for that sublayer, and the adapters themselves are attached to the
/// model's module tree at AdapterHub's places, so they train and save under the model's own names:
/// BERT <c>encoder.layer.{i}.attention.output.adapters.{name}</c> (after attention) and
/// <c>encoder.layer.{i}.output.adapters.{name}</c> (after the feed-forward block); the seq2seq model, as AdapterHub's
/// BART, <c>{encoder|decoder}.layers.{i}.attention_adapters.adapters.{name}</c>, <c>cross_attention_adapters…</c> and
/// <c>output_adapters…</c>. A nonlinearity sits between the projections, so no weight update reproduces an adapter:
/// merging is refused.
/// <para>File layout (Nanolora's; PEFT has no bottleneck adapters): adapter_config.json with <c>peft_type</c>
/// "BOTTLENECK" and AdapterHub's BnConfig names <c>mh_adapter</c>, <c>output_adapter</c>, <c>cross_adapter</c>,
/// <c>reduction_factor</c>, <c>non_linearity</c>; adapter_model.safetensors with PEFT's convention for keys — prefix
/// <c>base_model.model.</c>, instance name removed: <c>base_model.model.encoder.layer.0.output.adapters.adapter_down.0.weight</c>
/// [M, C], <c>….adapter_down.0.bias</c> [M], <c>….adapter_up.weight</c> [C, M], <c>….adapter_up.bias</c> [C].</para>
/// </summary>
public sealed class BottleneckModel : PeftMethod<BottleneckConfig>
{
    readonly Dictionary<string, ModuleDict<BottleneckAdapter>> _hosts = new();          // host path → adapters by instance
    readonly Dictionary<string, (ResidualBlock Block, SublayerHook? Previous)> _hooked = new();   // layer path → hooked block
    string? _routed;

    /// <summary>Nanolora's peft_type for bottleneck adapters.</summary>
    public const string Type = "BOTTLENECK";
    /// <inheritdoc/>
    public override string PeftType => Type;
    /// <inheritdoc/>
    public override bool CanMerge => false;
    /// <inheritdoc/>
    protected override string WhyNoMerge =>
        "Bottleneck adapters cannot be merged: the nonlinearity between adapter_down and adapter_up makes the adapter's output no linear function of its input, so no change to the base weights reproduces it.";
    /// <summary>The adapters by host path (e.g. <c>encoder.layer.0.output.adapters</c>), each holding one per instance.</summary>
    public IReadOnlyDictionary<string, ModuleDict<BottleneckAdapter>> Hosts => _hosts;

    BottleneckModel(Module model) : base(model) { }

    /// <summary>A bottleneck-adapter view of <paramref name="model"/> with no instances yet (one view per model: the hooks belong to it).</summary>
    public static BottleneckModel For(Module model) => new(model);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static BottleneckModel Inject(Module model, BottleneckConfig config, string name = "default", ulong seed = 1) => Injected(new BottleneckModel(model), name, config, seed);

    /// <summary>Where each adapted sublayer's adapters live: (layer path, sublayer, host path, width C).</summary>
    IEnumerable<(string Layer, string Sublayer, string Host, int Width)> Places(BottleneckConfig config)
    {
        foreach (var (path, module) in Base.NamedModules())
        {
            if (module is not ResidualBlock block) continue;
            var parts = block.NamedModules().ToDictionary(m => m.Name, m => m.Module);
            bool bert = parts.ContainsKey("attention.output");
            int width = parts.Values.OfType<MultiHeadAttention>().First().Width;
            var sublayers = bert ? new[] { ("self_attn", "attention.output.adapters"), ("ffn", "output.adapters") }
                : parts.ContainsKey("cross_attn")
                    ? new[] { ("self_attn", "attention_adapters.adapters"), ("cross_attn", "cross_attention_adapters.adapters"), ("ffn", "output_adapters.adapters") }
                    : new[] { ("self_attn", "attention_adapters.adapters"), ("ffn", "output_adapters.adapters") };
            foreach (var (sublayer, host) in sublayers)
                if (config.Adapts(sublayer)) yield return (path, sublayer, $"{path}.{host}", width);
        }
    }

    static int BottleneckWidth(BottleneckConfig config, int width, string host) => width / config.ReductionFactor is >= 1 and var m ? m
        : throw new ArgumentException($"Bottleneck config: reduction_factor {config.ReductionFactor} leaves no unit at '{host}', whose width is {width}; use at most {width}.");

    /// <inheritdoc/>
    protected override void AddCore(string name, BottleneckConfig config, ulong seed)
    {
        config.Validate();
        var places = Places(config).ToList();
        if (places.Count == 0) throw new ArgumentException("Bottleneck adapters: the model has no transformer layer (no sublayer-output hook) to place them at.");
        foreach (var (_, _, host, width) in places) BottleneckWidth(config, width, host);   // refuse before changing anything
        var seeds = new SeedSequence(seed);
        foreach (var (layer, _, host, width) in places)
        {
            if (!_hosts.TryGetValue(host, out var dict)) _hosts[host] = dict = Base.AttachModule(host, new ModuleDict<BottleneckAdapter>());
            var device = Base.Parameters().First().Device;
            dict.Add(name, new BottleneckAdapter(width, BottleneckWidth(config, width, host), config.NonLinearity, seeds.Next(), device));
            Hook(layer);
        }
    }

    /// <summary>Installs this view's hook on the block at <paramref name="layer"/> once, running after any hook already there.</summary>
    void Hook(string layer)
    {
        if (_hooked.ContainsKey(layer)) return;
        var block = (ResidualBlock)Base.GetModule(layer);
        var previous = block.SublayerOutputHook;
        var hosts = Places(new BottleneckConfig { MhAdapter = true, OutputAdapter = true, CrossAdapter = true })
            .Where(p => p.Layer == layer).ToDictionary(p => p.Sublayer, p => p.Host);
        block.SublayerOutputHook = (sublayer, y) =>
        {
            if (previous != null) y = previous(sublayer, y);
            if (_routed == null || !hosts.TryGetValue(sublayer, out var host) || !_hosts.TryGetValue(host, out var dict)) return y;
            return dict.Items.TryGetValue(_routed, out var adapter) ? adapter.Forward(y) : y;
        };
        _hooked[layer] = (block, previous);
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _hosts.Where(h => h.Value.Items.ContainsKey(name)).SelectMany(h => h.Value.Items[name].NamedParameters($"{h.Key}.{name}."));

    /// <inheritdoc/>
    protected override void Route(string? name) => _routed = name;
    /// <summary>Never called: <see cref="CanMerge"/> is false, so the base refuses first.</summary>
    protected override void MergeCore(string name) => throw new NotSupportedException(WhyNoMerge);
    /// <summary>Never called (see <see cref="MergeCore"/>).</summary>
    protected override void UnmergeCore(string name) => throw new NotSupportedException(WhyNoMerge);

    /// <summary>Detaches every adapter and puts each block's previous hook back.</summary>
    protected override void UnloadCore(string? merged)
    {
        foreach (var (host, dict) in _hosts) { Base.DetachModule(host); dict.Dispose(); }
        foreach (var (block, previous) in _hooked.Values) block.SublayerOutputHook = previous;
        _hosts.Clear();
        _hooked.Clear();
        _routed = null;
    }

    /// <inheritdoc/>
    protected override void DeleteCore(string name)
    {
        foreach (var dict in _hosts.Values) dict.Remove(name);
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
            ["mh_adapter"] = c.MhAdapter,
            ["output_adapter"] = c.OutputAdapter,
            ["cross_adapter"] = c.CrossAdapter,
            ["reduction_factor"] = c.ReductionFactor,
            ["non_linearity"] = c.NonLinearity,
            ["inference_mode"] = true,
        };
        PeftFiles.Write(directory, json, _hosts.Where(h => h.Value.Items.ContainsKey(name))
            .SelectMany(h => h.Value.Items[name].NamedParameters().Select(p => PeftFiles.Entry($"{h.Key}.{p.Name}", p.Parameter))));
    }

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type, new HashSet<string> { "mh_adapter", "output_adapter", "cross_adapter", "reduction_factor", "non_linearity" },
            new Dictionary<string, (Func<JsonNode?, bool>, string)>(), warn);
        var config = new BottleneckConfig
        {
            MhAdapter = PeftFiles.Bool(directory, root, "mh_adapter", false),
            OutputAdapter = PeftFiles.Bool(directory, root, "output_adapter", true),
            CrossAdapter = PeftFiles.Bool(directory, root, "cross_adapter", false),
            ReductionFactor = root["reduction_factor"] is JsonValue rv && rv.TryGetValue(out int rf) && rf >= 1 ? rf
                : throw PeftFiles.Bad(directory, "reduction_factor", "an integer ≥ 1", root["reduction_factor"]),
            NonLinearity = root["non_linearity"] is JsonValue nv && nv.TryGetValue(out string? nl) ? nl
                : throw PeftFiles.Bad(directory, "non_linearity", "a string", root["non_linearity"]),
        };
        try { config.Validate(); }
        catch (ArgumentException e) { throw new InvalidDataException($"{Path.Combine(directory, AdapterFiles.ConfigFile)}: {e.Message}"); }
        var expected = new Dictionary<string, int[]>();
        foreach (var (_, _, host, width) in Places(config))
        {
            int m = BottleneckWidth(config, width, host);
            expected[$"{host}.adapter_down.0.weight"] = [m, width];
            expected[$"{host}.adapter_down.0.bias"] = [m];
            expected[$"{host}.adapter_up.weight"] = [width, m];
            expected[$"{host}.adapter_up.bias"] = [width];
        }
        var values = PeftFiles.ReadWeights(directory, expected);
        Add(name, config);
        foreach (var (host, dict) in _hosts.Where(h => h.Value.Items.ContainsKey(name)))
            foreach (var (pname, p) in dict.Items[name].NamedParameters()) p.Data.CopyFrom(values[$"{host}.{pname}"]);
    }
}
