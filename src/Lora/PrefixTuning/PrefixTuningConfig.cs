namespace Nanolora.Lora.PrefixTuning;

/// <summary>The attention modules prefix tuning can give prefixes to (<see cref="PrefixTuningConfig.PrefixSites"/>).</summary>
public static class PrefixSite
{
    /// <summary>Every encoder layer's self-attention (the seq2seq encoder's, or BERT's).</summary>
    public const string Encoder = "encoder";
    /// <summary>Every decoder layer's (causal) self-attention.</summary>
    public const string Decoder = "decoder";
    /// <summary>Every decoder layer's cross-attention over the encoder output.</summary>
    public const string Cross = "cross";
    /// <summary>The sites in the order their prefixes lie in <c>prompt_embeddings</c>.</summary>
    public static readonly string[] Order = [Encoder, Decoder, Cross];
}

/// <summary>
/// PEFT's PrefixTuningConfig (Li and Liang, 2021): <see cref="NumVirtualTokens"/> trainable key and value vectors per
/// attention module, prepended to the module's own keys and values and always admitted by its mask. Field names are
/// PEFT's: num_virtual_tokens, prefix_projection (the MLP reparameterization embedding [P, C] → Linear(C, H) → tanh →
/// Linear(H, M·2·C)), encoder_hidden_size (H).
/// </summary>
public sealed record PrefixTuningConfig
{
    /// <summary>num_virtual_tokens: P, the prefix length of every prefixed attention module.</summary>
    public int NumVirtualTokens { get; init; } = 8;
    /// <summary>prefix_projection: train the prefixes through PEFT's two-layer tanh MLP instead of directly.</summary>
    public bool PrefixProjection { get; init; }
    /// <summary>encoder_hidden_size: the MLP's hidden width H (null: token_dim, as PEFT fills it in).</summary>
    public int? EncoderHiddenSize { get; init; }
    /// <summary>
    /// Which attention modules get prefixes, of <see cref="PrefixSite"/>'s names (Nanolora's field <c>prefix_sites</c>). Null:
    /// all the model has — on the seq2seq model the encoder self-attention, the decoder self-attention and the
    /// cross-attention, as the paper places them; BERT's self-attention. (PEFT hands its prefixes to Hugging Face models as
    /// past_key_values, which encoder-decoder models use on the decoder self-attention only — PEFT PR #2989 documents it; a
    /// PEFT file without <c>prefix_sites</c> is read that way.)
    /// </summary>
    public IReadOnlyList<string>? PrefixSites { get; init; }

    /// <summary>Throws, naming the field, when a value cannot be used.</summary>
    public void Validate()
    {
        if (NumVirtualTokens < 1) throw new ArgumentException($"Prefix tuning config: num_virtual_tokens must be at least 1, got {NumVirtualTokens}.");
        if (EncoderHiddenSize is < 1) throw new ArgumentException($"Prefix tuning config: encoder_hidden_size must be at least 1, got {EncoderHiddenSize}.");
        if (PrefixSites is { } sites)
        {
            if (sites.Count == 0) throw new ArgumentException("Prefix tuning config: prefix_sites is empty; name at least one of encoder, decoder, cross.");
            foreach (var s in sites)
                if (!PrefixSite.Order.Contains(s))
                    throw new ArgumentException($"Prefix tuning config: prefix_sites entry \"{s}\" is not one of {string.Join(", ", PrefixSite.Order)}.");
        }
    }
}
