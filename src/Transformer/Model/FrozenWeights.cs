using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// A frozen base in 16 bits: every frozen <see cref="Linear"/> weight stored as bfloat16, half its bytes. The GEMM widens
/// the weight exactly while it packs it, so the arithmetic stays float32 and only the weights are rounded (once, to the
/// nearest bfloat16). Embeddings, LayerNorm and biases stay float32: they are read by ops other than a GEMM, and the
/// norms and biases are small. Apply it after the adapters are injected (they freeze the base); a weight that trains
/// stays float32.
/// </summary>
public static class FrozenWeights
{
    /// <summary>Converts the frozen linear weights under <paramref name="model"/>; returns how many bytes that saved.</summary>
    public static long ToBFloat16(Module model)
    {
        long saved = 0;
        foreach (var (_, module) in model.NamedModules())
        {
            if (module is not Linear linear || linear.Weight.Trainable || linear.Weight.Data.DType != DType.Float32) continue;
            var w = linear.Weight.Data;
            saved += w.Length * (sizeof(float) - sizeof(ushort));
            linear.Weight.SetData(w.ToBFloat16(MemoryCategory.Parameter));
        }
        if (saved == 0 && !model.Parameters().Any(p => !p.Trainable))
            throw new InvalidOperationException("A 16-bit base stores frozen weights, and every weight of this model trains (full fine-tuning); use float32.");
        return saved;
    }

    /// <summary>How many parameters are stored in bfloat16.</summary>
    public static long CountBFloat16(Module model) => model.Parameters().Where(p => p.Data.DType == DType.BFloat16).Sum(p => p.Data.Length);
}
