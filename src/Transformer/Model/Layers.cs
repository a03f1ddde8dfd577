using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Deterministic seeds for initialization and dropout: one counter per model, advanced in a fixed order. A checkpointed
/// layer (<see cref="ActivationCheckpoint"/>) rewinds it for its recompute, so the recompute draws the forward's dropout masks.
/// </summary>
public sealed class SeedSequence(ulong seed) : ISeedState
{
    ulong _state = seed;

    /// <summary>The counter: saved in a training checkpoint so a resumed run draws the same dropout masks.</summary>
    public ulong State { get => _state; set => _state = value; }

    /// <summary>Advances the counter and returns the next seed (SplitMix64 of the counter).</summary>
    public ulong Next()
    {
        ActivationCheckpoint.OnDraw(this);
        // SplitMix64: well-mixed, distinct seeds from a counter.
        ulong z = _state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}

/// <summary>y = x·Wᵀ + b with W [out, in], initialized as torch.nn.Linear (kaiming-uniform a=√5, bias U(±1/√in)).</summary>
public sealed class Linear : Module, ILayer
{
    /// <summary>Input width.</summary>
    public int InFeatures { get; }
    /// <summary>Output width.</summary>
    public int OutFeatures { get; }
    /// <summary>The weight [out, in].</summary>
    public Parameter Weight { get; }
    /// <summary>The bias [out] (null when created without one).</summary>
    public Parameter? Bias { get; }

    /// <summary>Creates the weight (and bias) with torch.nn.Linear's initialization, drawing from <paramref name="seeds"/>.</summary>
    public Linear(int inFeatures, int outFeatures, bool bias, SeedSequence seeds, Device device)
    {
        InFeatures = inFeatures;
        OutFeatures = outFeatures;
        Weight = RegisterParameter("weight", new Parameter("weight", TensorRandom.KaimingUniform([outFeatures, inFeatures], inFeatures, seeds.Next(), device)));
        if (bias)
        {
            float bound = 1f / MathF.Sqrt(inFeatures);
            Bias = RegisterParameter("bias", new Parameter("bias", TensorRandom.Uniform([outFeatures], -bound, bound, seeds.Next(), device)));
        }
    }

    /// <summary>x [..., in] → [..., out].</summary>
    public Variable Forward(Variable x) => F.Linear(x, Weight, Bias);
}

/// <summary>A lookup table [V, C] (N(0, 1) init as torch.nn.Embedding; the model scales by √C).</summary>
public sealed class Embedding : Module
{
    /// <summary>The table [V, C].</summary>
    public Parameter Weight { get; }
    /// <summary>Creates a [<paramref name="vocab"/>, <paramref name="dim"/>] table drawn from N(0, <paramref name="std"/>²).</summary>
    public Embedding(int vocab, int dim, SeedSequence seeds, Device device, float std = 1f) =>
        Weight = RegisterParameter("weight", new Parameter("weight", TensorRandom.Normal([vocab, dim], 0f, std, seeds.Next(), device)));

    /// <summary>Looks up <paramref name="ids"/> (laid out as <paramref name="shape"/>, e.g. [B, T]); returns [..shape, C].</summary>
    public Variable Forward(int[] ids, params int[] shape) => F.Embedding(Weight, ids, shape);
}

/// <summary>LayerNorm over the last dimension: γ·(x − mean)/√(var + ε) + β, as torch.nn.LayerNorm.</summary>
public sealed class LayerNorm : Module, ILayer
{
    /// <summary>The scale γ [C] ("weight"; starts at 1).</summary>
    public Parameter Gamma { get; }
    /// <summary>The shift β [C] ("bias"; starts at 0).</summary>
    public Parameter Beta { get; }
    /// <summary>ε added to the variance.</summary>
    public float Eps { get; }

    /// <summary>Creates γ = 1 and β = 0 of width <paramref name="dim"/>.</summary>
    public LayerNorm(int dim, Device device, float eps = 1e-5f)
    {
        Eps = eps;
        Gamma = RegisterParameter("weight", new Parameter("weight", Tensor.Full([dim], 1f, device)));
        Beta = RegisterParameter("bias", new Parameter("bias", Tensor.Zeros([dim], device)));
    }

    /// <summary>Normalizes x [..., C] over C.</summary>
    public Variable Forward(Variable x) => F.LayerNorm(x, Gamma, Beta, Eps);
}
