using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Hook on a sublayer's output, before the residual add (bottleneck adapters insert themselves here).
/// Arguments: the sublayer's name ("self_attn", "cross_attn", "ffn") and its output; returns the new output.
/// </summary>
public delegate Variable SublayerHook(string sublayer, Variable output);

/// <summary>Shared residual wiring: pre-LN is x + f(LN(x)); post-LN is LN(x + f(x)), with dropout on f.</summary>
public abstract class ResidualBlock : Module
{
    protected readonly bool PreNorm;
    protected readonly float DropoutRate;
    protected readonly SeedSequence Seeds;
    public SublayerHook? SublayerOutputHook { get; set; }

    protected ResidualBlock(bool preNorm, float dropout, SeedSequence seeds)
    {
        PreNorm = preNorm; DropoutRate = dropout; Seeds = seeds;
    }

    protected Variable Residual(Variable x, string sublayer, string norm, Func<Variable, Variable> f)
    {
        var ln = (ILayer)Child(norm);
        var input = PreNorm ? ln.Forward(x) : x;
        var y = f(input);
        if (SublayerOutputHook != null) y = SublayerOutputHook(sublayer, y);
        // Only training draws a seed, so validating (at any interval) leaves the training masks as they were.
        if (Training) y = F.Dropout(y, DropoutRate, Seeds.Next(), Training);
        var sum = F.Add(x, y);
        return PreNorm ? sum : ln.Forward(sum);
    }
}

/// <summary>self_attn → ffn, each with a residual and a LayerNorm (self_attn_norm, ffn_norm).</summary>
public sealed class EncoderLayer : ResidualBlock
{
    public EncoderLayer(TransformerConfig c, SeedSequence seeds, Device device) : base(c.PreNorm, c.Dropout, seeds)
    {
        RegisterModule("self_attn", new MultiHeadAttention(c.DModel, c.Heads, seeds, device));
        RegisterModule("self_attn_norm", new LayerNorm(c.DModel, device));
        RegisterModule("ffn", new FeedForward(c.DModel, c.DFF, c.Activation, c.Dropout, seeds, device));
        RegisterModule("ffn_norm", new LayerNorm(c.DModel, device));
    }

    public Variable Forward(Variable x, Tensor? sourceMask)
    {
        var attn = (MultiHeadAttention)Child("self_attn");
        x = Residual(x, "self_attn", "self_attn_norm", h => attn.Forward(h, h, false, sourceMask));
        return Residual(x, "ffn", "ffn_norm", h => Layer("ffn").Forward(h));
    }
}

/// <summary>Per-layer decoding state: the self-attention and cross-attention caches.</summary>
public sealed class LayerCache : IDisposable
{
    public AttentionCache Self { get; } = new();
    public AttentionCache Cross { get; } = new();
    public void Dispose() { Self.Dispose(); Cross.Dispose(); }
}

/// <summary>self_attn (causal) → cross_attn over the encoder output → ffn.</summary>
public sealed class DecoderLayer : ResidualBlock
{
    public DecoderLayer(TransformerConfig c, SeedSequence seeds, Device device) : base(c.PreNorm, c.Dropout, seeds)
    {
        RegisterModule("self_attn", new MultiHeadAttention(c.DModel, c.Heads, seeds, device));
        RegisterModule("self_attn_norm", new LayerNorm(c.DModel, device));
        RegisterModule("cross_attn", new MultiHeadAttention(c.DModel, c.Heads, seeds, device));
        RegisterModule("cross_attn_norm", new LayerNorm(c.DModel, device));
        RegisterModule("ffn", new FeedForward(c.DModel, c.DFF, c.Activation, c.Dropout, seeds, device));
        RegisterModule("ffn_norm", new LayerNorm(c.DModel, device));
    }

    public Variable Forward(Variable x, Variable memory, Tensor? sourceMask, LayerCache? cache = null)
    {
        var self = (MultiHeadAttention)Child("self_attn");
        var cross = (MultiHeadAttention)Child("cross_attn");
        x = Residual(x, "self_attn", "self_attn_norm", h => self.Forward(h, h, true, null, cache?.Self));
        x = Residual(x, "cross_attn", "cross_attn_norm", h => cross.Forward(h, memory, false, sourceMask, cache?.Cross, isCross: true));
        return Residual(x, "ffn", "ffn_norm", h => Layer("ffn").Forward(h));
    }
}

/// <summary>A list of layers named 0, 1, 2… (so paths read encoder.layers.3.self_attn.q_proj).</summary>
public sealed class LayerList<T> : Module where T : Module
{
    public int Count { get; }
    public LayerList(IEnumerable<T> layers)
    {
        int i = 0;
        foreach (var l in layers) RegisterModule((i++).ToString(), l);
        Count = i;
    }
    public T this[int i] => (T)Child(i.ToString());
}
