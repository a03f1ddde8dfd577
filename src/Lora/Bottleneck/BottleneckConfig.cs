namespace Nanolora.Lora.Bottleneck;

/// <summary>
/// A bottleneck adapter's shape, with the names of AdapterHub's <c>adapters</c> library (BnConfig): where adapters go
/// (<c>mh_adapter</c> after self-attention, <c>output_adapter</c> after the feed-forward block, <c>cross_adapter</c>
/// after the decoder's cross-attention), their width (<c>reduction_factor</c>: C / factor, rounded down) and
/// <c>non_linearity</c>. <see cref="Houlsby"/> and <see cref="Pfeiffer"/> are that library's DoubleSeqBnConfig and
/// SeqBnConfig. Not reproduced: the library's LayerNorm placement options (original_ln_before/after,
/// residual_before_ln, ln_before/after) — the adapter here always sits on the sublayer's output before the residual
/// add, as in Houlsby et al.'s figure 2.
/// </summary>
public sealed record BottleneckConfig
{
    /// <summary>An adapter after each self-attention sublayer.</summary>
    public bool MhAdapter { get; init; }
    /// <summary>An adapter after each feed-forward sublayer.</summary>
    public bool OutputAdapter { get; init; } = true;
    /// <summary>An adapter after each cross-attention sublayer (decoder only; the library's default is off).</summary>
    public bool CrossAdapter { get; init; }
    /// <summary>The bottleneck is the model width divided by this (rounded down; at least 1 wide).</summary>
    public int ReductionFactor { get; init; } = 16;
    /// <summary>The activation between the projections: relu, swish (= silu), gelu or tanh.</summary>
    public string NonLinearity { get; init; } = "relu";

    /// <summary>Houlsby et al. (2019): adapters after attention and after the feed-forward block, swish, factor 16.</summary>
    public static BottleneckConfig Houlsby(int reductionFactor = 16) => new() { MhAdapter = true, OutputAdapter = true, NonLinearity = "swish", ReductionFactor = reductionFactor };
    /// <summary>Pfeiffer et al. (2020): one adapter after the feed-forward block, relu, factor 16.</summary>
    public static BottleneckConfig Pfeiffer(int reductionFactor = 16) => new() { MhAdapter = false, OutputAdapter = true, NonLinearity = "relu", ReductionFactor = reductionFactor };

    /// <summary>The activations <see cref="NonLinearity"/> accepts.</summary>
    public static readonly string[] NonLinearities = ["relu", "swish", "silu", "gelu", "tanh"];

    /// <summary>Throws for no adapter position, a factor below 1 or an unknown activation.</summary>
    public void Validate()
    {
        if (!MhAdapter && !OutputAdapter && !CrossAdapter) throw new ArgumentException("Bottleneck config places no adapter: set mh_adapter, output_adapter and/or cross_adapter.");
        if (ReductionFactor < 1) throw new ArgumentException($"Bottleneck config: reduction_factor must be at least 1, got {ReductionFactor}.");
        if (!NonLinearities.Contains(NonLinearity.ToLowerInvariant()))
            throw new ArgumentException($"Bottleneck config: non_linearity must be one of {string.Join(", ", NonLinearities)}, got '{NonLinearity}'.");
    }

    /// <summary>Whether an adapter goes after the sublayer the transformer's hook names ("self_attn", "cross_attn", "ffn").</summary>
    public bool Adapts(string sublayer) => sublayer switch
    {
        "self_attn" => MhAdapter,
        "cross_attn" => CrossAdapter,
        "ffn" => OutputAdapter,
        _ => false,
    };
}
