using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.Bottleneck;

/// <summary>
/// One bottleneck adapter: h ↦ h + up(act(down(h))) on a sublayer's output h [..., C], with down [C → M] and up
/// [M → C], M = C / reduction_factor. Named as AdapterHub's Adapter module (<c>adapter_down.0</c>, the Linear inside
/// its down-projection Sequential, and <c>adapter_up</c>). down starts as torch.nn.Linear does; up starts at zero,
/// weight and bias, so a fresh adapter returns h itself and leaves the model's output unchanged, bit for bit.
/// </summary>
public sealed class BottleneckAdapter : Module
{
    readonly string _activation;

    /// <summary>The down-projection [M, C] (<c>adapter_down.0</c>).</summary>
    public Linear Down => (Linear)GetModule("adapter_down.0");
    /// <summary>The up-projection [C, M] (<c>adapter_up</c>), zero at the start.</summary>
    public Linear Up => (Linear)GetModule("adapter_up");

    /// <summary>An adapter for width <paramref name="width"/> with a <paramref name="bottleneck"/>-wide middle; <paramref name="seed"/> draws down's weights.</summary>
    public BottleneckAdapter(int width, int bottleneck, string activation, ulong seed, Nanolora.Tensors.Device device)
    {
        _activation = activation.ToLowerInvariant();
        var seeds = new SeedSequence(seed);
        RegisterModuleAt("adapter_down.0", new Linear(width, bottleneck, true, seeds, device));
        var up = RegisterModule("adapter_up", new Linear(bottleneck, width, true, seeds, device));
        up.Weight.Data.Fill(0f);
        up.Bias!.Data.Fill(0f);
    }

    /// <summary>h [..., C] → h + up(act(down(h))) [..., C].</summary>
    public Variable Forward(Variable h)
    {
        var z = Down.Forward(h);
        z = _activation switch
        {
            "relu" => F.Relu(z),
            "swish" or "silu" => F.Silu(z),
            "gelu" => F.Gelu(z),
            "tanh" => F.Tanh(z),
            _ => throw new InvalidOperationException($"Bottleneck adapter: unknown non_linearity '{_activation}'."),
        };
        return F.Add(h, Up.Forward(z));
    }

    /// <summary>Number of scalar weights (both projections, with their biases).</summary>
    public long Count => ParameterCount();
}
