using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora.PromptTuning;

/// <summary>
/// PEFT's PromptEmbedding: one instance's virtual tokens, a table <c>embedding.weight</c> [S·P, C] with S transformer
/// submodules of P tokens each (rows 0 … P−1 go before the encoder input, rows P … 2P−1 before the decoder's).
/// </summary>
public sealed class PromptEmbedding : Module
{
    /// <summary>P, the virtual tokens per submodule.</summary>
    public int VirtualTokens { get; }
    /// <summary>S: 1 (encoder) or 2 (encoder and decoder).</summary>
    public int Submodules { get; }
    /// <summary>The table [S·P, C].</summary>
    public Parameter Weight => ((Embedding)Child("embedding")).Weight;

    /// <summary>A table of <paramref name="virtualTokens"/> × <paramref name="submodules"/> rows of width <paramref name="dim"/>, drawn from N(0, 1).</summary>
    public PromptEmbedding(int virtualTokens, int submodules, int dim, ulong seed, Device device)
    {
        VirtualTokens = virtualTokens;
        Submodules = submodules;
        RegisterModule("embedding", new Embedding(virtualTokens * submodules, dim, new SeedSequence(seed), device, std: 1f));
    }

    /// <summary>Submodule <paramref name="submodule"/>'s virtual tokens for a batch: [B, P, C] (gradients flow to the table).</summary>
    public Variable Prompt(int batch, int submodule) =>
        F.Embedding(Weight, PromptLearningBase.RowIds(batch, submodule * VirtualTokens, VirtualTokens), batch, VirtualTokens);

    /// <summary>Prepends submodule <paramref name="submodule"/>'s tokens to <paramref name="words"/> [B, L, C]: [B, P+L, C].</summary>
    public Variable Prepend(Variable words, int submodule) => F.Concat([Prompt(words.Dim(0), submodule), words], 1);
}
