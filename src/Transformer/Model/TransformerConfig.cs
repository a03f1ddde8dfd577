namespace Nanolora.Transformer;

/// <summary>
/// Model hyper-parameters. Presets: <c>tiny</c> (trains on the CPU backend in minutes), <c>small</c>, and
/// <c>transformer-base</c> (the paper's base model: d_model 512, 8 heads of 64, d_ff 2048, 6+6 layers).
/// </summary>
public sealed record TransformerConfig
{
    public int VocabSize { get; init; } = 8000;
    public int DModel { get; init; } = 128;
    public int Heads { get; init; } = 4;
    public int DFF { get; init; } = 512;
    public int EncoderLayers { get; init; } = 2;
    public int DecoderLayers { get; init; } = 2;
    public float Dropout { get; init; } = 0.1f;
    /// <summary>Pre-LN (x + f(LN(x)), stable to train) or the paper's post-LN (LN(x + f(x))).</summary>
    public bool PreNorm { get; init; } = true;
    /// <summary>"relu" (the paper) or "gelu".</summary>
    public string Activation { get; init; } = "relu";
    /// <summary>Share the embedding matrix with the output projection (the paper does).</summary>
    public bool TieEmbeddings { get; init; } = true;
    /// <summary>Learned position embeddings instead of the paper's sinusoids.</summary>
    public bool LearnedPositions { get; init; }
    public int MaxPositions { get; init; } = 512;
    /// <summary>LayerNorm's ε (PyTorch's default 1e-5; BERT uses 1e-12).</summary>
    public float LayerNormEps { get; init; } = 1e-5f;
    public ulong Seed { get; init; } = 1;

    public int HeadWidth => DModel / Heads;

    public static readonly string[] PresetNames = ["tiny", "small", "transformer-base"];

    public static TransformerConfig Preset(string name, int vocabSize) => name switch
    {
        "tiny" => new() { VocabSize = vocabSize, DModel = 128, Heads = 4, DFF = 512, EncoderLayers = 2, DecoderLayers = 2 },
        "small" => new() { VocabSize = vocabSize, DModel = 256, Heads = 4, DFF = 1024, EncoderLayers = 3, DecoderLayers = 3 },
        "transformer-base" => new() { VocabSize = vocabSize, DModel = 512, Heads = 8, DFF = 2048, EncoderLayers = 6, DecoderLayers = 6 },
        _ => throw new ArgumentException($"Unknown preset '{name}'; expected one of {string.Join(", ", PresetNames)}."),
    };

    public void Validate()
    {
        if (DModel % Heads != 0) throw new ArgumentException($"d_model {DModel} must be divisible by heads {Heads}.");
        if (VocabSize < 5) throw new ArgumentException($"Vocabulary size {VocabSize} is too small (4 specials + tokens).");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"Dropout {Dropout} must be in [0, 1).");
        if (!(LayerNormEps > 0 && float.IsFinite(LayerNormEps))) throw new ArgumentException($"LayerNorm eps {LayerNormEps} must be a positive finite number.");
        if (Activation is not ("relu" or "gelu")) throw new ArgumentException($"Activation '{Activation}' must be relu or gelu.");
    }
}
