using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.LnTuning;

/// <summary>
/// PEFT's LNTuningLayer: a frozen base LayerNorm (<c>base_layer</c>) and one trainable copy per instance
/// (<c>ln_tuning_layers.{name}</c>, starting as the base's γ and β, so a fresh instance changes nothing). The forward
/// pass runs the active copy; disabled, merged or with no active instance here, the base.
/// </summary>
public sealed class LnTuningLayer : Module, ILayer
{
    readonly ModuleDict<LayerNorm> _copies;
    float[]? _unmergedGamma, _unmergedBeta;

    /// <summary>The wrapped LayerNorm, registered as <c>base_layer</c> like PEFT.</summary>
    public LayerNorm BaseLayer { get; }
    /// <summary>The copy <see cref="Forward"/> runs, or null for the base.</summary>
    public string? Active { get; internal set; }
    /// <summary>The instance whose γ and β are currently copied into the base, if any.</summary>
    public string? Merged { get; private set; }

    /// <summary>Wraps <paramref name="baseLayer"/> with no copies yet.</summary>
    public LnTuningLayer(LayerNorm baseLayer)
    {
        BaseLayer = RegisterModule("base_layer", baseLayer);
        _copies = RegisterModule("ln_tuning_layers", new ModuleDict<LayerNorm>());
    }

    /// <summary>The copies by instance name.</summary>
    public IReadOnlyDictionary<string, LayerNorm> Copies => _copies.Items;

    internal LayerNorm Add(string name)
    {
        var copy = new LayerNorm(BaseLayer.Gamma.Data.Dim(0), BaseLayer.Gamma.Device, BaseLayer.Eps);
        // From the unmerged base: a copy made while another instance is merged must not start from that instance.
        copy.Gamma.Data.CopyFrom(_unmergedGamma ?? BaseLayer.Gamma.Data.ToArray());
        copy.Beta.Data.CopyFrom(_unmergedBeta ?? BaseLayer.Beta.Data.ToArray());
        return _copies.Add(name, copy);
    }

    internal void Delete(string name)
    {
        if (!_copies.Remove(name)) throw new KeyNotFoundException($"No LN tuning instance '{name}' on this layer.");
        if (Active == name) Active = null;
    }

    /// <summary>x [..., C] normalized by the active copy (or the base).</summary>
    public Variable Forward(Variable x) =>
        Active != null && Merged == null ? _copies.Items[Active].Forward(x) : BaseLayer.Forward(x);

    /// <summary>Copies instance <paramref name="name"/>'s γ and β into the base (the originals are kept for <see cref="Unmerge"/>).</summary>
    internal void Merge(string name)
    {
        var copy = _copies.Items[name];
        _unmergedGamma = BaseLayer.Gamma.Data.ToArray();
        _unmergedBeta = BaseLayer.Beta.Data.ToArray();
        BaseLayer.Gamma.Data.CopyFrom(copy.Gamma.Data);
        BaseLayer.Beta.Data.CopyFrom(copy.Beta.Data);
        Merged = name;
    }

    /// <summary>Puts the base's own γ and β back, exactly.</summary>
    internal void Unmerge()
    {
        BaseLayer.Gamma.Data.CopyFrom(_unmergedGamma!);
        BaseLayer.Beta.Data.CopyFrom(_unmergedBeta!);
        _unmergedGamma = _unmergedBeta = null;
        Merged = null;
    }

    /// <summary>Detaches the base (merged or not) so it can replace this wrapper; the copies are disposed.</summary>
    internal LayerNorm Unload()
    {
        foreach (var name in _copies.Items.Keys.ToList()) _copies.Remove(name);
        RemoveModule("base_layer");
        return BaseLayer;
    }
}
