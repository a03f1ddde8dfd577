using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>Deterministic seeds for initialization and dropout: one counter per model, advanced in a fixed order.</summary>
public sealed class SeedSequence(ulong seed)
{
    ulong _state = seed;

    /// <summary>The counter: saved in a training checkpoint so a resumed run draws the same dropout masks.</summary>
    public ulong State { get => _state; set => _state = value; }

    public ulong Next()
    {
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
    public int InFeatures { get; }
    public int OutFeatures { get; }
    public Parameter Weight { get; }
    public Parameter? Bias { get; }

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

    public Variable Forward(Variable x) => F.Linear(x, Weight, Bias);
}

/// <summary>A lookup table [V, C] (N(0, 1) init as torch.nn.Embedding; the model scales by √C).</summary>
public sealed class Embedding : Module
{
    public Parameter Weight { get; }
    public Embedding(int vocab, int dim, SeedSequence seeds, Device device, float std = 1f) =>
        Weight = RegisterParameter("weight", new Parameter("weight", TensorRandom.Normal([vocab, dim], 0f, std, seeds.Next(), device)));

    public Variable Forward(int[] ids, params int[] shape) => F.Embedding(Weight, ids, shape);
}

public sealed class LayerNorm : Module, ILayer
{
    public Parameter Gamma { get; }
    public Parameter Beta { get; }
    public float Eps { get; }

    public LayerNorm(int dim, Device device, float eps = 1e-5f)
    {
        Eps = eps;
        Gamma = RegisterParameter("weight", new Parameter("weight", Tensor.Full([dim], 1f, device)));
        Beta = RegisterParameter("bias", new Parameter("bias", Tensor.Zeros([dim], device)));
    }

    public Variable Forward(Variable x) => F.LayerNorm(x, Gamma, Beta, Eps);
}
