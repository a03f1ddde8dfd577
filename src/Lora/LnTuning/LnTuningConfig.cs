namespace Nanolora.Lora.LnTuning;

/// <summary>
/// PEFT's LNTuningConfig (Zhao et al., 2023, "Tuning LayerNorm in Attention"): train a copy of the LayerNorms' γ and β
/// per instance, nothing else. Field names are PEFT's: target_modules (names matched by suffix, or one regex),
/// exclude_modules. PEFT requires target_modules for a model it does not know; here an empty list means every LayerNorm.
/// </summary>
public sealed record LnTuningConfig
{
    /// <summary>LayerNorm modules to tune, matched by name suffix (<c>ffn_norm</c>, BERT's <c>LayerNorm</c>); empty: every LayerNorm.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [];
    /// <summary>If set, a module is targeted when this regex matches its whole name (instead of <see cref="TargetModules"/>).</summary>
    public string? TargetRegex { get; init; }
    /// <summary>Modules never tuned even when targeted (PEFT's exclude_modules as a list).</summary>
    public IReadOnlyList<string> ExcludeModules { get; init; } = [];
    /// <summary>exclude_modules given as a regex over whole names.</summary>
    public string? ExcludeRegex { get; init; }

    /// <summary>The selector these fields describe.</summary>
    public ModuleSelector Selector => TargetRegex == null && TargetModules.Count == 0
        ? new ModuleSelector([], ".*", ExcludeModules, ExcludeRegex)
        : new ModuleSelector(TargetModules, TargetRegex, ExcludeModules, ExcludeRegex);
}
