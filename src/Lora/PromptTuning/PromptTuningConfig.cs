namespace Nanolora.Lora.PromptTuning;

/// <summary>PEFT's PromptTuningInit values: how the virtual tokens start.</summary>
public static class PromptInit
{
    /// <summary>N(0, 1) vectors (PEFT's default: torch.nn.Embedding's init).</summary>
    public const string Random = "RANDOM";
    /// <summary>The word embeddings of <see cref="PromptTuningConfig.PromptTuningInitText"/>'s tokens, repeated or cut to fit.</summary>
    public const string Text = "TEXT";
    /// <summary>The word embeddings of tokens drawn uniformly from the vocabulary (seeded).</summary>
    public const string SampleVocab = "SAMPLE_VOCAB";
    /// <summary>The values this implementation knows.</summary>
    public static readonly string[] All = [Random, Text, SampleVocab];
}

/// <summary>
/// PEFT's PromptTuningConfig (Lester et al., 2021): <see cref="NumVirtualTokens"/> trainable vectors prepended to the word
/// embeddings of the input. Field names are PEFT's: num_virtual_tokens, prompt_tuning_init, prompt_tuning_init_text,
/// tokenizer_name_or_path, num_transformer_submodules (the geometry fields token_dim, num_layers and num_attention_heads
/// are read from the model, as PEFT does).
/// </summary>
public sealed record PromptTuningConfig
{
    /// <summary>num_virtual_tokens: P, the virtual tokens per transformer submodule.</summary>
    public int NumVirtualTokens { get; init; } = 8;
    /// <summary>prompt_tuning_init: one of <see cref="PromptInit"/>'s values.</summary>
    public string PromptTuningInit { get; init; } = PromptInit.Random;
    /// <summary>prompt_tuning_init_text: the text whose token embeddings start the prompt (TEXT only).</summary>
    public string? PromptTuningInitText { get; init; }
    /// <summary>tokenizer_name_or_path: recorded in the file; the tokenizer itself is passed to <see cref="PromptTuningModel.For"/>.</summary>
    public string? TokenizerNameOrPath { get; init; }
    /// <summary>
    /// num_transformer_submodules: 2 puts P virtual tokens before the encoder input and P more before the decoder input
    /// (PEFT's default for SEQ_2_SEQ_LM), 1 the encoder's only; null takes PEFT's default for the model (BERT: 1).
    /// </summary>
    public int? NumTransformerSubmodules { get; init; }

    /// <summary>Throws, naming the field, when a value cannot be used.</summary>
    public void Validate()
    {
        if (NumVirtualTokens < 1) throw new ArgumentException($"Prompt tuning config: num_virtual_tokens must be at least 1, got {NumVirtualTokens}.");
        if (!PromptInit.All.Contains(PromptTuningInit))
            throw new ArgumentException($"Prompt tuning config: prompt_tuning_init must be one of {string.Join(", ", PromptInit.All)}, got \"{PromptTuningInit}\".");
        if (PromptTuningInit == PromptInit.Text && string.IsNullOrWhiteSpace(PromptTuningInitText))
            throw new ArgumentException("Prompt tuning config: prompt_tuning_init TEXT needs a non-empty prompt_tuning_init_text.");
        if (NumTransformerSubmodules is not (null or 1 or 2))
            throw new ArgumentException($"Prompt tuning config: num_transformer_submodules must be 1 or 2, got {NumTransformerSubmodules}.");
    }
}
