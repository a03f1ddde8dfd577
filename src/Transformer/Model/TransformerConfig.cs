namespace Nanolora.Transformer;

/// <summary>
/// Model hyper-parameters. Presets: <c>tiny</c> (trains on the CPU backend in minutes), <c>small</c>, and
/// <c>transformer-base</c> (the paper's base model: d_model 512, 8 heads of 64, d_ff 2048, 6+6 layers).
/// </summary>
public sealed record TransformerConfig
{
    /// <summary>Rows of the token embedding table.</summary>
    public int VocabSize { get; init; } = 8000;
    /// <summary>Model width C.</summary>
    public int DModel { get; init; } = 128;
    /// <summary>Attention heads per layer.</summary>
    public int Heads { get; init; } = 4;
    /// <summary>Feed-forward inner width.</summary>
    public int DFF { get; init; } = 512;
    /// <summary>Number of encoder layers.</summary>
    public int EncoderLayers { get; init; } = 2;
    /// <summary>Number of decoder layers.</summary>
    public int DecoderLayers { get; init; } = 2;
    /// <summary>Dropout on embeddings and sublayer outputs in training.</summary>
    public float Dropout { get; init; } = 0.1f;
    /// <summary>Pre-LN (x + f(LN(x)), stable to train) or the paper's post-LN (LN(x + f(x))).</summary>
    public bool PreNorm { get; init; } = true;
    /// <summary>"relu" (the paper) or "gelu".</summary>
    public string Activation { get; init; } = "relu";
    /// <summary>Share the embedding matrix with the output projection (the paper does).</summary>
    public bool TieEmbeddings { get; init; } = true;
    /// <summary>Learned position embeddings instead of the paper's sinusoids.</summary>
    public bool LearnedPositions { get; init; }
    /// <summary>The longest sequence in tokens (rows of the position table).</summary>
    public int MaxPositions { get; init; } = 512;
    /// <summary>Dropout after the feed-forward activation (null: <see cref="Dropout"/>; Hugging Face's BERT has none).</summary>
    public float? ActivationDropout { get; init; }
    /// <summary>Dropout on the attention probabilities (BERT's attention_probs_dropout_prob); 0 for the seq2seq presets.</summary>
    public float AttentionDropout { get; init; }
    /// <summary>LayerNorm's ε (PyTorch's default 1e-5; BERT uses 1e-12).</summary>
    public float LayerNormEps { get; init; } = 1e-5f;
    /// <summary>Scale token embeddings by √C before adding positions (the paper); BERT adds them unscaled.</summary>
    public bool ScaleEmbeddings { get; init; } = true;
    /// <summary>A LayerNorm on the embedding sum (BERT's embeddings.LayerNorm): children encoder_embed_norm, decoder_embed_norm.</summary>
    public bool EmbeddingNorm { get; init; }
    /// <summary>A bias on the vocabulary logits (BERT's prediction-head bias): parameter logits_bias.</summary>
    public bool LogitsBias { get; init; }
    /// <summary>Seeds initialization and dropout.</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>Width of one head, D = C / H.</summary>
    public int HeadWidth => DModel / Heads;

    /// <summary>The names <see cref="Preset"/> accepts.</summary>
    public static readonly string[] PresetNames = ["tiny", "small", "transformer-base"];

    /// <summary>The configuration of a named preset (<see cref="PresetNames"/>) with the given vocabulary size.</summary>
    public static TransformerConfig Preset(string name, int vocabSize) => name switch
    {
        "tiny" => new() { VocabSize = vocabSize, DModel = 128, Heads = 4, DFF = 512, EncoderLayers = 2, DecoderLayers = 2 },
        "small" => new() { VocabSize = vocabSize, DModel = 256, Heads = 4, DFF = 1024, EncoderLayers = 3, DecoderLayers = 3 },
        "transformer-base" => new() { VocabSize = vocabSize, DModel = 512, Heads = 8, DFF = 2048, EncoderLayers = 6, DecoderLayers = 6 },
        _ => throw new ArgumentException($"Unknown preset '{name}'; expected one of {string.Join(", ", PresetNames)}."),
    };

    /// <summary>
    /// The same model with every dropout that is on (sublayer outputs, attention probabilities, the feed-forward activation)
    /// at <paramref name="rate"/>; those that are off stay off (BERT has none after the activation). Dropout acts only in
    /// training, so the weights and what the model computes in evaluation do not change.
    /// </summary>
    public TransformerConfig WithDropout(float rate) => this with
    {
        Dropout = Dropout > 0 ? rate : 0f,
        AttentionDropout = AttentionDropout > 0 ? rate : 0f,
        ActivationDropout = ActivationDropout is null ? null : ActivationDropout > 0 ? rate : 0f,
    };

    /// <summary>Every field against its range, so a bad config (say from a checkpoint's metadata) fails here, by name, not at the first forward pass.</summary>
    public void Validate()
    {
        static void Range(string name, long value, long min, long max, string? why = null)
        {
            if (value < min || value > max)
                throw new ArgumentException($"{name} is {value}, expected {min} to {max}{(why == null ? "" : $" ({why})")}.");
        }
        Range(nameof(VocabSize), VocabSize, 5, 10_000_000, "4 specials + tokens");
        Range(nameof(DModel), DModel, 1, 65_536);
        Range(nameof(Heads), Heads, 1, DModel, "at most one head per model dimension");
        if (DModel % Heads != 0) throw new ArgumentException($"DModel {DModel} must be divisible by Heads {Heads}.");
        Range(nameof(DFF), DFF, 1, 1 << 20);
        Range(nameof(EncoderLayers), EncoderLayers, 1, 1024);
        Range(nameof(DecoderLayers), DecoderLayers, 1, 1024);
        // The sinusoid table is MaxPositions × DModel floats, built eagerly: keep it one array.
        Range(nameof(MaxPositions), MaxPositions, 1, Math.Min(1 << 20, Array.MaxLength / DModel), $"a {DModel}-wide position table must fit one array");
        if (!(Dropout >= 0 && Dropout < 1)) throw new ArgumentException($"Dropout is {Dropout}, expected [0, 1).");
        if (!(LayerNormEps > 0 && float.IsFinite(LayerNormEps))) throw new ArgumentException($"LayerNormEps is {LayerNormEps}, expected a positive finite number.");
        if (Activation is not ("relu" or "gelu")) throw new ArgumentException($"Activation is '{Activation}', expected relu or gelu.");
    }
}
