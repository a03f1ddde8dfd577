using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora.PrefixTuning;

/// <summary>
/// PEFT's PrefixEncoder: one instance's prefixes for M attention modules. Without projection a table
/// <c>embedding.weight</c> [P, M·2·C]; with prefix_projection a table [P, C] and the MLP <c>transform.0</c> (C → H), tanh,
/// <c>transform.2</c> (H → M·2·C). Either way the row of virtual token p holds, for module m, its key at columns
/// 2m·C … (2m+1)·C − 1 and its value at the next C (PEFT's view [P, M·2, H, D], split per layer into key and value).
/// </summary>
public sealed class PrefixEncoder : Module
{
    /// <summary>P, the prefix length.</summary>
    public int VirtualTokens { get; }
    /// <summary>M, the prefixed attention modules.</summary>
    public int Modules { get; }
    /// <summary>C, the model width.</summary>
    public int Width { get; }
    /// <summary>Whether the prefixes come through the MLP (false also for a loaded projection instance: PEFT saves its output).</summary>
    public bool Projected { get; }

    /// <summary>Creates the table (N(0, 1), as torch.nn.Embedding) and, when <paramref name="hiddenSize"/> is given, the MLP (torch.nn.Linear's init).</summary>
    public PrefixEncoder(int virtualTokens, int modules, int width, int? hiddenSize, ulong seed, Device device)
    {
        (VirtualTokens, Modules, Width, Projected) = (virtualTokens, modules, width, hiddenSize != null);
        var seeds = new SeedSequence(seed);
        RegisterModule("embedding", new Embedding(virtualTokens, hiddenSize != null ? width : modules * 2 * width, seeds, device, std: 1f));
        if (hiddenSize is int h)
        {
            RegisterModuleAt("transform.0", new Linear(width, h, true, seeds, device));
            RegisterModuleAt("transform.2", new Linear(h, modules * 2 * width, true, seeds, device));
        }
    }

    /// <summary>The table [P, C] or [P, M·2·C].</summary>
    public Parameter Table => ((Embedding)Child("embedding")).Weight;

    /// <summary>Module <paramref name="module"/>'s keys and values [P, 2C]: a slice of the table, or of the MLP's last layer.</summary>
    Variable KeyValueRows(int module)
    {
        int start = module * 2 * Width, width = 2 * Width;
        if (!Projected) return F.Slice(Table, 1, start, width);
        var hidden = F.Tanh(((Linear)GetModule("transform.0")).Forward(Table));                       // [P, H]
        var last = (Linear)GetModule("transform.2");
        // Only this module's rows of the last layer: the MLP's output for the other modules is not needed here.
        return F.Linear(hidden, F.Slice(last.Weight, 0, start, width), F.Slice(last.Bias!, 0, start, width));
    }

    /// <summary>Module <paramref name="module"/>'s prefix keys and values for a batch, each [B, P, C].</summary>
    public (Variable Keys, Variable Values) KeyValues(int module, int batch)
    {
        var rows = KeyValueRows(module);
        var ids = PromptLearningBase.RowIds(batch, 0, VirtualTokens);
        return (F.Embedding(F.Slice(rows, 1, 0, Width), ids, batch, VirtualTokens),
                F.Embedding(F.Slice(rows, 1, Width, Width), ids, batch, VirtualTokens));
    }

    /// <summary>All modules' keys and values [P, M·2·C], as PEFT saves them (get_prompt_embedding_to_save runs the MLP).</summary>
    public float[] Values()
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var parts = Enumerable.Range(0, Modules).Select(KeyValueRows).ToList();
        return (parts.Count == 1 ? parts[0] : F.Concat(parts, 1)).Data.ToArray();
    }
}
