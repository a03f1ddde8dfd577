using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora.IA3;

/// <summary>
/// PEFT's IA3 Linear: a frozen base Linear (<c>base_layer</c>, W [out, in], b) and one vector per instance
/// (<c>ia3_l.{name}</c>). Attention targets rescale the output, y = (x·Wᵀ + b) ⊙ l with l [out, 1]; feed-forward
/// targets rescale the input, y = (x ⊙ l)·Wᵀ + b with l [1, in] (PEFT's shapes, kept so files match). Both are
/// diagonal factors of W, so merging is W ← diag(l)·W, b ← l ⊙ b (output) or W ← W·diag(l) (input), and unmerging
/// divides them out again.
/// </summary>
public sealed class IA3Linear : Module, ILayer
{
    /// <summary>The wrapped Linear, registered as <c>base_layer</c> like PEFT.</summary>
    public Linear BaseLayer { get; }
    /// <summary>True for a feed-forward target (input rescaled), false for an attention one (output rescaled).</summary>
    public bool IsFeedforward { get; }
    /// <summary>The vector <see cref="Forward"/> applies, or null for none.</summary>
    public string? Active { get; internal set; }
    /// <summary>The instance currently folded into the base weight, if any.</summary>
    public string? Merged { get; private set; }

    /// <summary>Wraps <paramref name="baseLayer"/> with no vectors yet.</summary>
    public IA3Linear(Linear baseLayer, bool isFeedforward)
    {
        BaseLayer = RegisterModule("base_layer", baseLayer);
        IsFeedforward = isFeedforward;
        RegisterModule("ia3_l", new ParameterDict([]));
    }

    ParameterDict Dict => (ParameterDict)Child("ia3_l");
    /// <summary>The vectors by instance name ([out, 1], or [1, in] for a feed-forward target).</summary>
    public IReadOnlyDictionary<string, Parameter> Vectors => Dict.Items;
    /// <summary>The shape of a vector on this layer.</summary>
    public int[] VectorShape => IsFeedforward ? [1, BaseLayer.InFeatures] : [BaseLayer.OutFeatures, 1];

    internal Parameter Add(string name, bool initToOne, ulong seed)
    {
        var data = initToOne ? Tensor.Full(VectorShape, 1f, BaseLayer.Weight.Device) : TensorRandom.Normal(VectorShape, 0f, 1f, seed, BaseLayer.Weight.Device);
        var p = new Parameter(name, data);
        // The old dictionary is dropped, not disposed: its parameters live on in the new one.
        ReplaceModule("ia3_l", Dict.With(name, p));
        return p;
    }

    internal void Delete(string name)
    {
        var (remaining, removed) = Dict.Without(name);
        ReplaceModule("ia3_l", remaining);
        removed.Dispose();
        if (Active == name) Active = null;
    }

    /// <summary>x [..., in] → [..., out], rescaled by the active vector (unless it is merged).</summary>
    public Variable Forward(Variable x)
    {
        if (Active == null || Merged != null) return BaseLayer.Forward(x);
        var l = Vectors[Active];
        if (IsFeedforward) return BaseLayer.Forward(F.Mul(x, F.Reshape(l, BaseLayer.InFeatures)));
        return F.Mul(BaseLayer.Forward(x), F.Reshape(l, BaseLayer.OutFeatures));
    }

    /// <summary>Folds instance <paramref name="name"/>'s vector into W (and b, for an output rescaling).</summary>
    internal void Merge(string name)
    {
        Scale(Vectors[name].Data, divide: false);
        Merged = name;
    }

    /// <summary>Refuses an unmerge that cannot be exact: a zero in the merged vector erased a row or column of W.</summary>
    internal void CheckUnmergeable(string path)
    {
        if (Merged == null) return;
        int zero = Array.IndexOf(Vectors[Merged].Data.ToArray(), 0f);
        if (zero >= 0) throw new InvalidOperationException($"IA3: cannot unmerge '{Merged}' from '{path}': ia3_l[{zero}] is 0, so merging erased that {(IsFeedforward ? "column" : "row")} of the weight.");
    }

    /// <summary>Divides the merged vector out again (exact up to float rounding; <see cref="CheckUnmergeable"/> first).</summary>
    internal void Unmerge()
    {
        Scale(Vectors[Merged!].Data, divide: true);
        Merged = null;
    }

    /// <summary>W (and b) multiplied or divided by l, on the device: l [out, 1] broadcasts over W's rows, l [1, in] over its columns.</summary>
    void Scale(Tensor l, bool divide)
    {
        using (var w = divide ? Ops.Div(BaseLayer.Weight.Data, l) : Ops.Mul(BaseLayer.Weight.Data, l)) BaseLayer.Weight.Data.CopyFrom(w);
        if (IsFeedforward || BaseLayer.Bias == null) return;
        using var flat = l.Reshape(BaseLayer.OutFeatures);
        using var b = divide ? Ops.Div(BaseLayer.Bias.Data, flat) : Ops.Mul(BaseLayer.Bias.Data, flat);
        BaseLayer.Bias.Data.CopyFrom(b);
    }

    /// <summary>Detaches the base layer (merged or not) so it can replace this wrapper; the vectors are disposed.</summary>
    internal Linear Unload()
    {
        var dict = Dict;
        RemoveModule("ia3_l");
        dict.Dispose();
        RemoveModule("base_layer");
        return BaseLayer;
    }
}
