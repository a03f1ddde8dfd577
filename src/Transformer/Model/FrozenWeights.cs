using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// A frozen base in 16 bits: every frozen <see cref="Linear"/> weight and <see cref="Embedding"/> table stored as
/// bfloat16, half its bytes. The GEMM widens a weight exactly while it packs it (a tied output projection included) and
/// the lookup widens the rows it gathers, so the arithmetic stays float32 and only the weights are rounded (once, to the
/// nearest bfloat16). LayerNorm parameters and biases stay float32: they are small and read by elementwise ops. Apply it
/// after the adapters are injected (they freeze the base); a weight that trains stays float32.
/// </summary>
public static class FrozenWeights
{
    /// <summary>Converts the frozen linear weights and embedding tables under <paramref name="model"/>; returns how many bytes that saved.</summary>
    public static long ToBFloat16(Module model)
    {
        long saved = 0;
        foreach (var weight in Convertible(model).ToList())
        {
            if (weight.Data.DType != DType.Float32) continue;
            saved += weight.Data.Length * (sizeof(float) - sizeof(ushort));
            weight.SetData(weight.Data.ToBFloat16(MemoryCategory.Parameter));
        }
        if (saved == 0 && !model.Parameters().Any(p => !p.Trainable))
            throw new InvalidOperationException("A 16-bit base stores frozen weights, and every weight of this model trains (full fine-tuning); use float32.");
        return saved;
    }

    /// <summary>The frozen parameters <see cref="ToBFloat16"/> converts (or has converted) under <paramref name="model"/>.</summary>
    public static IEnumerable<Parameter> Convertible(Module model) => Tables(model).Where(w => !w.Trainable);

    /// <summary>Every linear weight and embedding table under <paramref name="model"/>, trainable or not: what a 16-bit base may hold in bfloat16.</summary>
    public static IEnumerable<Parameter> Tables(Module model) =>
        model.NamedModules().Select(m => m.Module switch { Linear l => l.Weight, Embedding e => e.Weight, _ => null }).OfType<Parameter>();

    /// <summary>How many parameters are stored in bfloat16.</summary>
    public static long CountBFloat16(Module model) => model.Parameters().Where(p => p.Data.DType == DType.BFloat16).Sum(p => p.Data.Length);
}
