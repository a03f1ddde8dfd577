namespace Nanolora.Lora.Selective;

/// <summary>
/// Selective fine-tuning: no new parameters, a choice of which of the base's own to train. BitFit (Ben Zaken et al.,
/// 2021) trains every bias — Linear biases, LayerNorm shifts, the logits bias — and nothing else; chosen layers train
/// whole layers picked by index (<c>layers_to_transform</c>, in the encoder and the decoder alike). Both set: only
/// the biases of the chosen layers. PEFT has no such method, so the file layout is Nanolora's (see <see cref="SelectiveModel"/>).
/// </summary>
public sealed record SelectiveConfig
{
    /// <summary>Train only parameters whose name ends in "bias" (BitFit).</summary>
    public bool BiasOnly { get; init; }
    /// <summary>Train only parameters inside the layers with these indices (<c>.layers.{i}.</c> in the name); null: every layer.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>The name of the layer list the indices count in (PEFT's layers_pattern: "layers", BERT's "layer"); empty: any of PEFT's usual names.</summary>
    public IReadOnlyList<string> LayersPattern { get; init; } = [];

    /// <summary>BitFit: every bias trains.</summary>
    public static SelectiveConfig BitFit() => new() { BiasOnly = true };
    /// <summary>Whole layers <paramref name="layers"/> train (in the encoder and the decoder).</summary>
    public static SelectiveConfig Layers(params int[] layers) => new() { LayersToTransform = layers };

    /// <summary>Throws when the config selects everything (that is full fine-tuning) or names a negative layer.</summary>
    public void Validate()
    {
        if (!BiasOnly && LayersToTransform == null)
            throw new ArgumentException("Selective config selects every parameter: set BiasOnly (BitFit) and/or LayersToTransform.");
        if (LayersToTransform is { Count: 0 }) throw new ArgumentException("Selective config: layers_to_transform is empty; expected at least one layer index.");
        if (LayersToTransform?.FirstOrDefault(i => i < 0, 0) is < 0 and var bad) throw new ArgumentException($"Selective config: layer index {bad} in layers_to_transform must be at least 0.");
    }

    /// <summary>Whether the parameter named <paramref name="name"/> trains.</summary>
    public bool Selects(string name)
    {
        if (BiasOnly && !name.EndsWith("bias", StringComparison.Ordinal)) return false;
        if (LayersToTransform == null) return true;
        return ModuleSelector.LayerIndex(name, LayersPattern) is int i && LayersToTransform.Contains(i);
    }
}
