using System.Text.RegularExpressions;

namespace Nanolora.Lora;

/// <summary>Which biases train and are saved with the adapter (PEFT's bias field).</summary>
public enum LoraBias
{
    /// <summary>"none": every bias stays frozen.</summary>
    None,
    /// <summary>"all": every bias in the model trains.</summary>
    All,
    /// <summary>"lora_only": only the biases of adapted layers train.</summary>
    LoraOnly,
}

/// <summary>How A and B are initialized; every choice leaves a fresh adapter's model output unchanged.</summary>
public enum LoraInit
{
    /// <summary>Kaiming-uniform A, B zero, like nn.Linear's init and PEFT's default (init_lora_weights=True).</summary>
    KaimingUniform,
    /// <summary>A ~ N(0, (1/r)²), B zero (PEFT's init_lora_weights="gaussian").</summary>
    Gaussian,
    /// <summary>
    /// PiSSA (PEFT's init_lora_weights="pissa"): B·A·scaling is the top-r part of W's SVD and the base weight becomes
    /// the residual W − scaling·B·A, so the output is unchanged but training moves the principal directions.
    /// </summary>
    Pissa,
    /// <summary>
    /// LoRA-GA (Wang et al. 2024; PEFT's init_lora_weights="lora_ga" with LoraGAConfig's defaults, direction "ArB2r" and
    /// scale "stable"): from the SVD of the loss gradient G = U·S·Vᵀ of W on a few training batches, A = ζ·Vᵀ[0:r] and
    /// B = ζ·U[:, r:2r] with ζ = out^¼/√γ, so the first steps of B·A follow the best rank-2r approximation of full
    /// fine-tuning's; the base weight becomes W − scaling·B·A, so the output is unchanged. Needs the gradients
    /// (<see cref="LoraGa.EstimateGradients"/>) when the adapter is added.
    /// </summary>
    LoraGa,
}

/// <summary>
/// What to adapt and how, with PEFT's field meanings; the defaults are <see cref="LoraDefaults"/> (r 8, alpha 16, dropout 0,
/// targets q_proj and v_proj: PEFT's, except alpha, which PEFT defaults to 8).
/// </summary>
public sealed record LoraConfig
{
    /// <summary>The rank r of the update B·A (PEFT's r).</summary>
    public int R { get; init; } = LoraDefaults.Rank;
    /// <summary>lora_alpha: the update is scaled by alpha/r (alpha/√r with <see cref="UseRsLora"/>).</summary>
    public float Alpha { get; init; } = LoraDefaults.Alpha;
    /// <summary>lora_dropout: dropout probability on the adapter's input while training, in [0, 1).</summary>
    public float Dropout { get; init; } = LoraDefaults.Dropout;
    /// <summary>Matched against the end of module names (<c>q_proj</c> matches <c>encoder.layers.0.self_attn.q_proj</c>).</summary>
    public IReadOnlyList<string> TargetModules { get; init; } = LoraDefaults.TargetModules;
    /// <summary>If set, a module is targeted when this regex matches its whole name (instead of TargetModules).</summary>
    public string? TargetRegex { get; init; }
    /// <summary>Which biases train and are saved with the adapter.</summary>
    public LoraBias Bias { get; init; } = LoraBias.None;
    /// <summary>Modules trained fully and saved with the adapter (matched like targets).</summary>
    public IReadOnlyList<string> ModulesToSave { get; init; } = [];
    /// <summary>How A is initialized.</summary>
    public LoraInit Init { get; init; } = LoraInit.KaimingUniform;
    /// <summary>LoRA-GA's stable_gamma γ: the initial factors are scaled by out^¼/√γ (PEFT's default 16).</summary>
    public float LoraGaStableGamma { get; init; } = 16f;
    /// <summary>Whether the initialisation moves part of the base weight into the adapter (PiSSA, LoRA-GA): the layer then keeps
    /// the residual, the adapter is saved converted to plain LoRA on the original base, and it needs a model of its own.</summary>
    public bool RewritesBase => Rewrites(Init);
    /// <summary>Whether <paramref name="init"/> moves part of the base weight into the adapter (PiSSA, LoRA-GA).</summary>
    public static bool Rewrites(LoraInit init) => init is LoraInit.Pissa or LoraInit.LoraGa;
    /// <summary>rsLoRA: scaling alpha/√r instead of alpha/r.</summary>
    public bool UseRsLora { get; init; }
    /// <summary>
    /// DoRA (PEFT's use_dora): each adapted layer also learns a magnitude vector m [out]; the weight becomes
    /// m · (W + s·B·A) / ‖W + s·B·A‖ row-wise (see <see cref="DoraLinear"/>).
    /// </summary>
    public bool UseDora { get; init; }
    /// <summary>Only layers with these indices (<c>.layers.{i}.</c> in the name) are adapted; null: all.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>
    /// With <see cref="LayersToTransform"/>: the name of the layer list the indices count in (PEFT's layers_pattern,
    /// e.g. "layers" or "layer"); empty: any of PEFT's usual names (layers, layer, h, block, blocks).
    /// </summary>
    public IReadOnlyList<string> LayersPattern { get; init; } = [];
    /// <summary>Modules never adapted even when targeted (PEFT's exclude_modules: names matched like targets).</summary>
    public IReadOnlyList<string> ExcludeModules { get; init; } = [];
    /// <summary>If set, a module whose whole name this regex matches is never adapted (exclude_modules given as a string).</summary>
    public string? ExcludeRegex { get; init; }
    /// <summary>Per-module rank overrides, keyed by a name suffix or regex (PEFT's rank_pattern).</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>Per-module alpha overrides, keyed like <see cref="RankPattern"/> (PEFT's alpha_pattern).</summary>
    public IReadOnlyDictionary<string, float> AlphaPattern { get; init; } = new Dictionary<string, float>();
    /// <summary>PEFT's base_model_name_or_path: the base the adapter was made for, as written to adapter_config.json.</summary>
    public string? BaseModelNameOrPath { get; init; }
    /// <summary>PEFT's task_type: SEQ_2_SEQ_LM for the encoder-decoder, FEATURE_EXTRACTION for a sentence encoder.</summary>
    public string TaskType { get; init; } = "SEQ_2_SEQ_LM";

    /// <summary>PEFT's target_modules value meaning every Linear layer but the output head.</summary>
    public const string AllLinear = "all-linear";

    /// <summary>Names PEFT's all-linear leaves out: the output projection (lm_head), which is the model's output embedding.</summary>
    static readonly string[] OutputHeads = ["lm_head"];

    /// <summary>Throws <see cref="ArgumentException"/> for a rank below 1, a non-finite alpha, dropout outside [0, 1) or no targets.</summary>
    public void Validate()
    {
        if (R < 1) throw new ArgumentException($"LoRA rank must be at least 1, got {R}.");
        if (!float.IsFinite(Alpha)) throw new ArgumentException($"LoRA alpha must be a finite number, got {Alpha}.");
        foreach (var (name, r) in RankPattern) if (r < 1) throw new ArgumentException($"rank_pattern['{name}'] must be at least 1, got {r}.");
        foreach (var (name, a) in AlphaPattern) if (!float.IsFinite(a)) throw new ArgumentException($"alpha_pattern['{name}'] must be finite, got {a}.");
        if (Dropout is < 0 or >= 1) throw new ArgumentException($"LoRA dropout {Dropout} must be in [0, 1).");
        if (TargetRegex == null && TargetModules.Count == 0) throw new ArgumentException("LoRA config names no target modules.");
        if (Init == LoraInit.LoraGa && !(LoraGaStableGamma > 0 && float.IsFinite(LoraGaStableGamma)))
            throw new ArgumentException($"lora_ga_config.stable_gamma is {LoraGaStableGamma}, expected a finite number > 0 (PEFT's default: 16).");
    }

    /// <summary>init_lora_weights as PEFT writes it for <paramref name="init"/>.</summary>
    public static string InitName(LoraInit init) => init switch
    {
        LoraInit.Gaussian => "gaussian", LoraInit.Pissa => "pissa", LoraInit.LoraGa => "lora_ga", _ => "true",
    };

    /// <summary>Whether the Linear layer at <paramref name="moduleName"/> gets this adapter.</summary>
    public bool Targets(string moduleName)
    {
        if (ExcludeRegex != null && Regex.IsMatch(moduleName, "^(?:" + ExcludeRegex + ")$")) return false;
        if (ExcludeModules.Any(t => EndsWithModule(moduleName, t))) return false;
        if (LayersToTransform != null)
        {
            // PEFT's default layer names: the seq2seq model's "layers", BERT's "layer", GPT-2's "h", T5's "block".
            var names = LayersPattern.Count > 0 ? string.Join('|', LayersPattern.Select(Regex.Escape)) : "layers|layer|h|blocks?";
            var m = Regex.Match(moduleName, @"(?:^|\.)(?:" + names + @")\.(\d+)\.");
            if (!m.Success || !LayersToTransform.Contains(int.Parse(m.Groups[1].Value))) return false;
        }
        if (TargetRegex != null) return Regex.IsMatch(moduleName, "^(?:" + TargetRegex + ")$");
        if (TargetModules is [AllLinear]) return !OutputHeads.Any(h => EndsWithModule(moduleName, h));
        return TargetModules.Any(t => EndsWithModule(moduleName, t));
    }

    /// <summary>
    /// Whether a parameter is a bias for <see cref="LoraBias.All"/>: its last name segment ends in "bias" — a layer's
    /// <c>bias</c> and also a model-level <c>logits_bias</c> (BERT's prediction-head bias), so what trains is what is saved.
    /// </summary>
    public static bool IsBias(string parameterName) =>
        parameterName[(parameterName.LastIndexOf('.') + 1)..].EndsWith("bias", StringComparison.Ordinal);

    /// <summary>Whether the module at <paramref name="moduleName"/> is in <see cref="ModulesToSave"/> (matched by name suffix).</summary>
    public bool SavesModule(string moduleName) => ModulesToSave.Any(t => EndsWithModule(moduleName, t));

    static bool EndsWithModule(string name, string suffix) => name == suffix || name.EndsWith("." + suffix, StringComparison.Ordinal);

    static T Pattern<T>(IReadOnlyDictionary<string, T> pattern, string name, T fallback)
    {
        foreach (var (key, value) in pattern)
            if (EndsWithModule(name, key) || Regex.IsMatch(name, "^(?:.*\\.)?" + key + "$")) return value;
        return fallback;
    }

    /// <summary>The rank for a module: its <see cref="RankPattern"/> entry, else <see cref="R"/>.</summary>
    public int RankFor(string moduleName) => Pattern(RankPattern, moduleName, R);
    /// <summary>The alpha for a module: its <see cref="AlphaPattern"/> entry, else <see cref="Alpha"/>.</summary>
    public float AlphaFor(string moduleName) => Pattern(AlphaPattern, moduleName, Alpha);

    /// <summary>The factor the module's update B·A is multiplied by: alpha/r, or alpha/√r with rsLoRA.</summary>
    public float ScalingFor(string moduleName)
    {
        int r = RankFor(moduleName);
        float alpha = AlphaFor(moduleName);
        return UseRsLora ? alpha / MathF.Sqrt(r) : alpha / r;
    }
}
