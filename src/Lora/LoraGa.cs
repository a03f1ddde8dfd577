using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// LoRA-GA (Wang et al. 2024, "LoRA-GA: Low-Rank Adaptation with Gradient Approximation"; PEFT's
/// <c>init_lora_weights="lora_ga"</c> with LoraGAConfig's defaults). A plain LoRA adapter starts with B = 0, so its first
/// steps barely move the model while full fine-tuning's move it along the loss gradient G of each weight. LoRA-GA starts the
/// factors on G's top singular directions instead: with G = U·S·Vᵀ, A = ζ·Vᵀ[0:r] and B = ζ·U[:, r:2r] (PEFT's direction
/// "ArB2r"), so that the first update of s·B·A, s·(B·ΔA + ΔB·A) ∝ B·Bᵀ·G + G·Aᵀ·A, is G's best rank-2r approximation;
/// ζ = out^¼ / √γ (scale "stable") keeps the update's size independent of the layer's width under Adam. The product is
/// taken out of the base weight (W ← W − s·B·A, kept as an <see cref="InitResidual"/> like PiSSA's), so the model's output
/// is unchanged at the start, and the adapter is saved converted to plain rank-2r LoRA on the original base.
/// </summary>
public static class LoraGa
{
    /// <summary>
    /// The loss gradient of every weight <paramref name="config"/> targets, averaged over <paramref name="batches"/> calls of
    /// <paramref name="loss"/> (each builds the loss of one batch), as PEFT's <c>preprocess_loraga</c> does with its
    /// <c>train_step</c>. Only those weights require gradients meanwhile; every parameter's trainability is restored after.
    /// </summary>
    public static Dictionary<string, Tensor> EstimateGradients(Module model, LoraConfig config, int batches, Func<int, Variable> loss)
    {
        if (batches < 1) throw new ArgumentException($"LoRA-GA needs at least one batch to estimate gradients, got {batches}.");
        var weights = LoraModel.TargetPaths(model, config).ToDictionary(p => p, p => model.GetModule(p) switch
        {
            Linear l => l.Weight,
            LoraLinear w => w.BaseLayer.Weight,
            var m => throw new InvalidOperationException($"'{p}' is a {m.GetType().Name}, not a Linear layer."),
        });
        if (weights.Count == 0)
            throw new ArgumentException($"LoRA targets [{string.Join(", ", config.TargetModules)}]{(config.TargetRegex != null ? " / regex " + config.TargetRegex : "")} match no Linear layer of the model.");
        var trainable = model.Parameters().Where(p => p.Trainable).ToList();
        var sums = weights.ToDictionary(kv => kv.Key, kv => new double[kv.Value.Data.Length]);
        try
        {
            model.SetTrainable(false);
            foreach (var w in weights.Values) { w.Trainable = true; w.ZeroGrad(); }   // a gradient left from before would join batch 0
            for (int i = 0; i < batches; i++)
            {
                using (new GraphScope()) loss(i).Backward(freeValues: true);
                foreach (var (path, w) in weights)
                {
                    var g = w.Grad?.ToArray() ?? throw new InvalidOperationException($"LoRA-GA: the loss does not depend on '{path}''s weight.");
                    var sum = sums[path];
                    for (int j = 0; j < g.Length; j++) sum[j] += g[j];
                    w.ZeroGrad();
                }
            }
        }
        finally
        {
            foreach (var w in weights.Values) w.ZeroGrad();
            model.SetTrainable(false);
            foreach (var p in trainable) p.Trainable = true;
        }
        return weights.ToDictionary(kv => kv.Key, kv =>
        {
            var mean = sums[kv.Key].Select(v => (float)(v / batches)).ToArray();
            return Tensor.FromArray(mean, [kv.Value.Data.Dim(0), kv.Value.Data.Dim(1)], kv.Value.Data.Device, MemoryCategory.Gradient);
        });
    }

    /// <summary>
    /// Sets <paramref name="adapter"/>'s A and B from the leading 2r singular directions of <paramref name="gradient"/> (the
    /// weight's shape; <see cref="Svd.Leading"/>, q = 4r and 4 power iterations as PEFT's svd_lowrank) and replaces
    /// W by W − s·B·A in place; returns what the layer must keep. Refused when 2r exceeds min(out, in).
    /// </summary>
    public static InitResidual Initialize(string adapterName, Tensor w, Tensor gradient, LoraAdapter adapter, float stableGamma)
    {
        int outF = w.Dim(0), inF = w.Dim(1), r = adapter.Rank;
        if (gradient.Dim(0) != outF || gradient.Dim(1) != inF)
            throw new ArgumentException($"LoRA-GA: the gradient is {gradient.ShapeString}, expected [{outF}, {inF}] like the weight.");
        if (2 * r > Math.Min(outF, inF))
            throw new ArgumentException($"LoRA-GA: rank {r} needs 2r = {2 * r} singular directions of the gradient, but the {outF} × {inF} weight has min(out, in) = {Math.Min(outF, inF)}.");
        var g = gradient.ToArray();
        if (g.Any(v => !float.IsFinite(v))) throw new ArgumentException("LoRA-GA: the gradient holds NaN or infinity.");
        var svd = Svd.Leading(g, outF, inF, 2 * r);
        double zeta = Math.Pow(outF, 0.25) / Math.Sqrt(stableGamma);
        var a = new float[(long)r * inF];
        var b = new float[(long)outF * r];
        for (int k = 0; k < r; k++)
        {
            for (int j = 0; j < inF; j++) a[(long)k * inF + j] = (float)(zeta * svd.Vt[(long)k * inF + j]);
            for (int i = 0; i < outF; i++) b[(long)i * r + k] = (float)(zeta * svd.U[(long)i * svd.K + r + k]);
        }
        return InitResidual.Take(adapterName, w, adapter, a, b);
    }
}
