using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Lora;

/// <summary>
/// PEFT's mixed-adapter batches (<c>adapter_names=[…]</c>): one forward pass in which each sequence of the batch uses
/// its own adapter, or none (<see cref="Base"/>), so one loaded base answers requests for several tasks at once. For
/// inference only. Per adapter, each wrapped layer adds s·(mask ⊙ x·Aᵀ)·Bᵀ, where the mask keeps the rows of the
/// sequences that asked for it: two skinny GEMMs per adapter over all rows (the rank is small, so computing rows that
/// are masked away costs less than gathering and scattering them), composed of the backend's own ops, so the same code
/// runs on the CPU and as ILGPU kernels.
/// </summary>
public static class MixedBatch
{
    /// <summary>The name that asks for the base model (no adapter) for a sequence, as PEFT's <c>"__base__"</c>.</summary>
    public const string Base = "__base__";

    /// <summary>
    /// The base output <paramref name="y"/> of <paramref name="layer"/> plus, for each sequence, its adapter's update.
    /// The input's first axis holds the sequences, or a whole multiple of them (beam search repeats each source's rows
    /// next to each other), and <paramref name="sequenceAdapters"/> names one adapter per sequence.
    /// </summary>
    internal static Variable Forward(LoraLinear layer, Variable x, Variable y, IReadOnlyList<string?> sequenceAdapters)
    {
        int rows = x.Dim(0), sequences = sequenceAdapters.Count;
        if (rows % sequences != 0)
            throw new ArgumentException($"Mixed batch: the input holds {rows} sequences but {sequences} adapter names were given (one per sequence, or per source when beams repeat it).");
        int repeat = rows / sequences;
        int inF = layer.BaseLayer.InFeatures, outF = layer.BaseLayer.OutFeatures;
        long perRow = x.Data.Length / rows / inF;   // positions per sequence
        var output = y.Data;
        using var x2 = x.Data.Reshape(-1, inF);
        using var y2 = output.Reshape(-1, outF);
        foreach (var name in sequenceAdapters.Distinct())
        {
            if (name == null || name == Base || !layer.Adapters.TryGetValue(name, out var adapter)) continue;   // an adapter absent here changes nothing here
            var mask = new float[x2.Dim(0)];
            for (int r = 0; r < rows; r++)
                if (sequenceAdapters[r / repeat] == name)
                    Array.Fill(mask, 1f, (int)(r * perRow), (int)perRow);
            using var maskTensor = Tensor.FromArray(mask, [mask.Length, 1], x.Device);
            using var low = Ops.Matmul(x2, adapter.A.Data, false, true);          // [N, R]
            using var kept = Ops.Mul(low, maskTensor);                             // rows of other sequences zeroed
            Ops.MatmulInto(y2, kept, adapter.B.Data, false, true, adapter.Scaling, 1f);
        }
        return y;
    }

    /// <summary>Checks the names before a mixed pass: each is an adapter of <paramref name="lora"/>, <see cref="Base"/> or null.</summary>
    internal static void Validate(LoraModel lora, IReadOnlyList<string?> sequenceAdapters)
    {
        if (sequenceAdapters.Count == 0) throw new ArgumentException("Mixed batch: no adapter names were given (one per sequence; \"__base__\" for none).");
        foreach (var name in sequenceAdapters)
        {
            if (name == null || name == Base) continue;
            if (!lora.Adapters.TryGetValue(name, out var config))
                throw new KeyNotFoundException($"Mixed batch: no adapter '{name}'. Adapters: {string.Join(", ", lora.Adapters.Keys)}; \"{Base}\" for the base model.");
            // DoRA rescales the base output per adapter, and PiSSA's or LoRA-GA's base weight is a residual: neither is "base + low-rank row update".
            if (config.UseDora || config.RewritesBase)
                throw new ArgumentException($"Mixed batch: adapter '{name}' is {(config.UseDora ? "a DoRA adapter" : $"an adapter initialised with {LoraConfig.InitName(config.Init)}")}, which a per-sequence low-rank update cannot express; use it alone.");
            // Those change weights outside the wrapped layers (a bias, a whole module), which a per-row update cannot express.
            if (config.ModulesToSave.Count > 0 || config.Bias != LoraBias.None)
                throw new ArgumentException($"Mixed batch: adapter '{name}' also trains {(config.ModulesToSave.Count > 0 ? "modules_to_save" : $"biases (bias: {config.Bias})")}, which cannot differ per sequence; use it alone.");
        }
    }
}
