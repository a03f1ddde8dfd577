namespace Nanolora.Lora;

/// <summary>
/// The one set of defaults for a LoRA run, shared by <see cref="LoraConfig"/>, the <c>nanolora finetune</c> and
/// <c>params</c> commands, the experiment's LoRA row and the README: the recipe the README's tables were measured with.
/// PEFT's LoraConfig defaults differ in one place: its <c>lora_alpha</c> is 8 (scaling 1 at r 8); ours is 16 (scaling 2),
/// which trained better here. An adapter_config.json without <c>lora_alpha</c> still reads as PEFT's 8, since PEFT wrote it.
/// </summary>
public static class LoraDefaults
{
    /// <summary>The rank r of A [r, in] and B [out, r].</summary>
    public const int Rank = 8;

    /// <summary>lora_alpha: the update B·A is scaled by alpha / r.</summary>
    public const float Alpha = 16f;

    /// <summary>Dropout on the adapter's input (none).</summary>
    public const float Dropout = 0f;

    /// <summary>The attention's query and value projections (PEFT's default targets for BART/T5-style models).</summary>
    public static readonly IReadOnlyList<string> TargetModules = ["q_proj", "v_proj"];

    /// <summary>The AdamW learning rate the recipe trains the adapters with.</summary>
    public const float LearningRate = 3e-3f;

    /// <summary><see cref="TargetModules"/> as the command line writes them.</summary>
    public static string TargetList => string.Join(',', TargetModules);
}
