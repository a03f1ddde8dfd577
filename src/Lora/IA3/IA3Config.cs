namespace Nanolora.Lora.IA3;

/// <summary>
/// PEFT's IA3Config ((IA)³, Liu et al., 2022): a learned vector per targeted Linear that rescales its output (keys,
/// values) or, for a feed-forward module, its input (the activation between fc1 and fc2). Field names are PEFT's:
/// target_modules, feedforward_modules (a subset of the targets), exclude_modules, init_ia3_weights. The defaults are
/// the paper's sites (keys, values, the feed-forward activation) under this seq2seq model's BART-style names; PEFT's own
/// BART mapping rescales q_proj where the paper rescales keys. <see cref="ForBert"/> gives BERT's (PEFT's bert mapping).
/// </summary>
public sealed record IA3Config
{
    /// <summary>Linear layers to rescale, matched by name suffix.</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = ["k_proj", "v_proj", "fc2"];
    /// <summary>If set, a module is targeted when this regex matches its whole name (instead of <see cref="TargetModules"/>).</summary>
    public string? TargetRegex { get; init; }
    /// <summary>Targets whose input (not output) is rescaled, matched by name suffix.</summary>
    public IReadOnlyList<string> FeedforwardModules { get; init; } = ["fc2"];
    /// <summary>If set, the feed-forward targets are those whose whole name this regex matches.</summary>
    public string? FeedforwardRegex { get; init; }
    /// <summary>Modules never rescaled even when targeted (names matched by suffix).</summary>
    public IReadOnlyList<string> ExcludeModules { get; init; } = [];
    /// <summary>exclude_modules given as a regex over whole names.</summary>
    public string? ExcludeRegex { get; init; }
    /// <summary>init_ia3_weights: vectors start at 1, so a fresh instance changes nothing (false: N(0, 1), PEFT's discouraged option).</summary>
    public bool InitIA3Weights { get; init; } = true;

    /// <summary>
    /// PEFT's targets for BERT (key, value, output.dense; feed-forward output.dense), with the attention block's own
    /// <c>attention.output.dense</c> excluded: PEFT's suffix "output.dense" also catches it, which would rescale the
    /// attention context rather than the feed-forward activation the paper rescales.
    /// </summary>
    public static IA3Config ForBert() => new()
    {
        TargetModules = ["key", "value", "output.dense"], FeedforwardModules = ["output.dense"], ExcludeModules = ["attention.output.dense"],
    };

    /// <summary>Which Linear layers get a vector.</summary>
    public ModuleSelector Targets => new(TargetModules, TargetRegex, ExcludeModules, ExcludeRegex);
    /// <summary>Which targets are feed-forward (input-rescaled).</summary>
    public ModuleSelector Feedforward => new(FeedforwardModules, FeedforwardRegex);

    /// <summary>Throws when nothing is targeted or a feed-forward module is not among the targets (PEFT's subset rule).</summary>
    public void Validate()
    {
        if (TargetRegex == null && TargetModules.Count == 0) throw new ArgumentException("IA3 config names no target_modules.");
        if (TargetRegex == null && FeedforwardRegex == null)
            foreach (var f in FeedforwardModules)
                if (!TargetModules.Contains(f))
                    throw new ArgumentException($"IA3 config: feedforward_modules entry '{f}' must also be in target_modules [{string.Join(", ", TargetModules)}].");
    }
}
