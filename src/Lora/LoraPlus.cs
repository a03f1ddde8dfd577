using Nanolora.Autograd;

namespace Nanolora.Lora;

/// <summary>
/// LoRA+ (Hayou et al. 2024; PEFT's <c>create_loraplus_optimizer</c>): the B matrices learn <c>loraplus_lr_ratio</c> times
/// faster than the A matrices. As in PEFT, the fast group holds every trainable <c>lora_B</c> and every trainable 1-D
/// parameter (a trained bias or norm of a module to save); everything else trainable (the A matrices, 2-D modules to save)
/// keeps the base rate. PEFT's <c>loraplus_lr_embedding</c> has no counterpart: Nanolora does not put LoRA on embeddings.
/// One difference: PEFT turns weight decay off for the 1-D parameters of the fast group; here every group decays alike.
/// </summary>
public static class LoraPlus
{
    /// <summary>The name of the group at the base rate (the A matrices).</summary>
    public const string GroupA = "groupA";
    /// <summary>The name of the group at ratio × the base rate (the B matrices and 1-D parameters).</summary>
    public const string GroupB = "groupB";

    /// <summary>Throws unless <paramref name="ratio"/> is finite and &gt; 0 (PEFT recommends ≥ 1; 16 is the paper's usual value).</summary>
    public static void Validate(float ratio)
    {
        if (!(ratio > 0 && float.IsFinite(ratio))) throw new ArgumentException($"loraplus_lr_ratio is {ratio}, expected a finite number > 0 (e.g. 16).");
    }

    /// <summary>
    /// The trainable parameters of <paramref name="model"/> in LoRA+'s two groups: <see cref="GroupA"/> at scale 1 and
    /// <see cref="GroupB"/> at scale <paramref name="ratio"/>. A group with no parameters is left out; none at all is refused.
    /// </summary>
    public static IReadOnlyList<ParameterGroup> Groups(Module model, float ratio)
    {
        Validate(ratio);
        var a = new List<Parameter>();
        var b = new List<Parameter>();
        foreach (var (name, p) in model.NamedParameters())
        {
            if (!p.Trainable) continue;
            if (name.EndsWith(".lora_B", StringComparison.Ordinal) || p.Data.Rank == 1) b.Add(p);
            else a.Add(p);
        }
        if (b.Count == 0) throw new ArgumentException("LoRA+: the model has no trainable lora_B matrix; inject or activate an adapter first.");
        var groups = new List<ParameterGroup>();
        if (a.Count > 0) groups.Add(new ParameterGroup(GroupA, a));
        groups.Add(new ParameterGroup(GroupB, b, ratio));
        return groups;
    }

    /// <summary>PEFT's create_loraplus_optimizer with AdamW: base rate <paramref name="lr"/> for A, <paramref name="lr"/> × <paramref name="ratio"/> for B.</summary>
    public static AdamW CreateOptimizer(Module model, float lr, float ratio, float weightDecay = 0.01f) =>
        new(Groups(model, ratio), lr, weightDecay: weightDecay);
}
