using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using Nanolora.Autograd;

namespace Nanolora.Lora;

/// <summary>
/// Which base model an adapter was trained on: a SHA-256 of the base's parameter names and shapes, and one of their
/// values, over the parameters the adapter leaves frozen (trained biases and modules to save are the adapter's own, so
/// they are left out). Saved in the adapter file's metadata (PEFT ignores it); an adapter loaded onto a base with another
/// fingerprint is refused unless forced, because its low-rank updates only mean something on the weights they were
/// learned against.
/// </summary>
public sealed record BaseFingerprint(string Structure, string Weights)
{
    /// <summary>The safetensors metadata key the fingerprint is stored under.</summary>
    public const string MetadataKey = "nanolora_base_fingerprint";
    /// <summary>Metadata key present (value "bfloat16") when the base's frozen linear weights were stored in 16 bits.</summary>
    public const string DTypeKey = "nanolora_base_dtype";

    /// <summary>Whether any of the base's weights are stored in bfloat16 (<see cref="Nanolora.Transformer.FrozenWeights"/>).</summary>
    public static bool IsBFloat16(LoraModel lora) => lora.Base.Parameters().Any(p => p.Data.DType == Nanolora.Tensors.DType.BFloat16);

    /// <summary>The first 12 hex digits of each hash.</summary>
    public override string ToString() => $"structure {Structure[..12]}…, weights {Weights[..12]}…";

    /// <summary>The form stored in metadata: <c>{structure}:{weights}</c>, two 64-digit hex hashes.</summary>
    public string Serialize() => $"{Structure}:{Weights}";

    /// <summary>Reads <see cref="Serialize"/>'s form; null when absent or malformed.</summary>
    public static BaseFingerprint? Parse(string? text) =>
        text?.Split(':') is [var s, var w] && s.Length == 64 && w.Length == 64 ? new BaseFingerprint(s, w) : null;

    /// <summary>
    /// The fingerprint of <paramref name="lora"/>'s base as <paramref name="config"/> sees it, or null when an adapter is
    /// merged into the weights (they are not the base's then). With <paramref name="asBFloat16"/>, the frozen linear
    /// weights and embedding tables still in float32 are hashed rounded to bfloat16, as a 16-bit base holds them: an adapter trained on the
    /// 16-bit form of a base is then recognised on the float32 form.
    /// </summary>
    public static BaseFingerprint? Of(LoraModel lora, LoraConfig config, bool asBFloat16 = false)
    {
        if (lora.Layers.Values.Any(l => l.MergedAdapter != null)) return null;
        var linears = AdapterFiles.LinearPaths(lora);
        var adapterParameters = lora.Layers.Values.SelectMany(l => l.Adapters.Values).SelectMany(a => a.Weights)
            .ToHashSet(ReferenceEqualityComparer.Instance);
        var ownedBySaves = SavedModules.Matching(lora.Base, config).Select(p => p.P).ToHashSet(ReferenceEqualityComparer.Instance);
        var frozen = lora.Base.NamedParameters()
            .Where(p => !adapterParameters.Contains(p.Parameter) && !ownedBySaves.Contains(p.Parameter))
            .Select(p => (Name: p.Name.Replace(".base_layer.", "."), p.Parameter))
            .Where(p => !AdapterFiles.IsTrainedBias(lora, config, p.Name, linears))
            .OrderBy(p => p.Name, StringComparer.Ordinal).ToList();
        using var structure = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        using var weights = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var roundable = asBFloat16
            ? Nanolora.Transformer.FrozenWeights.Tables(lora.Base).ToHashSet(ReferenceEqualityComparer.Instance)
            : [];
        foreach (var (name, p) in frozen)
        {
            structure.AppendData(Encoding.UTF8.GetBytes($"{name}[{string.Join(',', p.Data.ShapeArray())}]\n"));
            var values = p.Data.ToArray();
            if (roundable.Contains(p))
                for (int i = 0; i < values.Length; i++) values[i] = Nanolora.Tensors.BFloat16.Widen(Nanolora.Tensors.BFloat16.Round(values[i]));
            weights.AppendData(MemoryMarshal.AsBytes(values.AsSpan()));
        }
        return new BaseFingerprint(Convert.ToHexStringLower(structure.GetHashAndReset()), Convert.ToHexStringLower(weights.GetHashAndReset()));
    }
}
