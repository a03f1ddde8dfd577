using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Lora;

/// <summary>
/// What an initialisation that starts the adapter away from zero (PiSSA, LoRA-GA) took out of a base weight:
/// W = W_res + s·B0·A0, with A0 [R, in] and B0 [out, R] the adapter's initial factors. The layer keeps them (frozen, not parameters of the model) so that its base behaviour stays the original W
/// (adapters disabled or inactive), the adapter can be saved converted to plain LoRA on the original base, and deleting
/// the adapter puts W back (to fp32 rounding).
/// </summary>
public sealed class InitResidual : IDisposable
{
    /// <summary>The adapter whose initialisation made the residual.</summary>
    public string Adapter { get; }
    /// <summary>A0 [R, in]: the adapter's lora_A at initialisation.</summary>
    public Variable InitialA { get; }
    /// <summary>B0 [out, R]: the adapter's lora_B at initialisation.</summary>
    public Variable InitialB { get; }
    /// <summary>The adapter's scaling s.</summary>
    public float Scaling { get; }

    internal InitResidual(string adapter, Tensor a0, Tensor b0, float scaling)
    {
        Adapter = adapter; Scaling = scaling;
        InitialA = new Variable(a0);
        InitialB = new Variable(b0);
    }

    /// <summary>
    /// Starts <paramref name="adapter"/> at A = <paramref name="a"/>, B = <paramref name="b"/> and takes s·B·A out of
    /// <paramref name="w"/> in place; returns what the layer must keep. The residual is formed from the fp32 factors
    /// actually stored, so W_res + s·B·A is W to fp32 rounding.
    /// </summary>
    public static InitResidual Take(string adapterName, Tensor w, LoraAdapter adapter, float[] a, float[] b)
    {
        adapter.A.Data.CopyFrom(a);
        adapter.B.Data.CopyFrom(b);
        Ops.MatmulInto(w, adapter.B.Data, adapter.A.Data, false, false, -adapter.Scaling, 1f);
        return new InitResidual(adapterName, adapter.A.Data.Clone(), adapter.B.Data.Clone(), adapter.Scaling);
    }

    /// <summary>W += s·B0·A0: the residual back to the original weight (to fp32 rounding).</summary>
    internal void Restore(Tensor w) => Ops.MatmulInto(w, InitialB.Data, InitialA.Data, false, false, Scaling, 1f);

    /// <summary>Frees A0 and B0.</summary>
    public void Dispose()
    {
        InitialA.Dispose();
        InitialB.Dispose();
    }
}
