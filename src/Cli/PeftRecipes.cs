using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Lora.Bottleneck;
using Nanolora.Lora.IA3;
using Nanolora.Lora.LnTuning;
using Nanolora.Lora.PrefixTuning;
using Nanolora.Lora.PromptTuning;
using Nanolora.Lora.Selective;

namespace Nanolora.Cli;

/// <summary>
/// A PEFT method other than LoRA as <c>finetune --method NAME</c> and the experiment's comparison name it: how to apply it
/// to a model from <see cref="FineTuneOptions"/>, and the AdamW learning rate it starts from when none is given.
/// </summary>
/// <param name="Name">The CLI's name (<c>bitfit</c>, <c>adapter-houlsby</c>, …), also results.json's <c>method</c>.</param>
/// <param name="Summary">What trains, in a few words (for --help and the tables).</param>
/// <param name="LearningRate">The default peak learning rate (not swept here: each paper's usual order of magnitude).</param>
/// <param name="PeftType">The <c>peft_type</c> its saved adapter_config.json carries.</param>
/// <param name="Inject">Applies the method to a model as instance "default" and freezes everything else.</param>
public sealed record PeftRecipe(string Name, string Summary, float LearningRate, string PeftType, Func<Module, FineTuneOptions, IPeftMethod> Inject)
{
    /// <summary>Whether <c>--reduction-factor</c> shapes this method (bottleneck adapters).</summary>
    public bool UsesReductionFactor => PeftType == BottleneckModel.Type;
    /// <summary>Whether <c>--layers</c> applies (selective layers; BitFit restricted to those layers).</summary>
    public bool UsesLayers => PeftType == SelectiveModel.Type;
}

/// <summary>The PEFT methods beside LoRA that the CLI trains, loads and compares; adding one is one line of <see cref="All"/>.</summary>
public static class PeftRecipes
{
    /// <summary>Bottleneck width divisor when <c>--reduction-factor</c> is not given (AdapterHub's default).</summary>
    public const int DefaultReductionFactor = 16;

    /// <summary>
    /// Every method, in the order of --help and the comparison. Rates: BitFit 1e-3 (Ben Zaken et al. used 1e-4…1e-3), LN
    /// tuning and (IA)³ 3e-3 (T-Few's rate for (IA)³), adapters 1e-3 (Houlsby et al.'s upper end), whole layers 1e-3 (full
    /// fine-tuning's default) — starting points, swept in the full experiment.
    /// </summary>
    public static readonly IReadOnlyList<PeftRecipe> All =
    [
        new("bitfit", "every bias (BitFit; with --layers only those layers' biases)", 1e-3f, SelectiveModel.Type,
            (m, o) => SelectiveModel.Inject(m, SelectiveConfig.BitFit() with { LayersToTransform = o.Layers, LayersPattern = o.LayersPattern })),
        new("selective", "whole layers chosen with --layers, in the encoder and the decoder", 1e-3f, SelectiveModel.Type,
            (m, o) => SelectiveModel.Inject(m, SelectiveConfig.Layers([.. o.Layers ?? throw new ArgumentException("--method selective needs --layers (e.g. --layers 0,2), got none.")]) with { LayersPattern = o.LayersPattern })),
        new("ln-tuning", "a copy of every LayerNorm's gain and shift (PEFT's LN_TUNING)", 3e-3f, LnTuningModel.Type,
            (m, o) => LnTuningModel.Inject(m, new LnTuningConfig())),
        new("ia3", "(IA)³ vectors rescaling k_proj, v_proj and fc2's input (the paper's sites; on BERT key, value and output.dense's input, PEFT's bert mapping)", 3e-3f, IA3Model.Type,
            (m, o) => IA3Model.Inject(m, m is Nanolora.Transformer.BertModel ? IA3Config.ForBert() : new IA3Config(), seed: o.Seed)),
        new("adapter-houlsby", "bottleneck adapters after attention and the feed-forward block, swish", 1e-3f, BottleneckModel.Type,
            (m, o) => BottleneckModel.Inject(m, BottleneckConfig.Houlsby(o.ReductionFactor), seed: o.Seed)),
        new("adapter-pfeiffer", "one bottleneck adapter after the feed-forward block, relu", 1e-3f, BottleneckModel.Type,
            (m, o) => BottleneckModel.Inject(m, BottleneckConfig.Pfeiffer(o.ReductionFactor), seed: o.Seed)),
        // Soft prompts train few values from scratch and want a large rate: PEFT's seq2seq examples use 3e-2 (prompt) and 1e-2 (prefix).
        new("prompt-tuning", "20 virtual tokens before the encoder and decoder inputs, from sampled vocabulary embeddings", 3e-2f, PromptTuningModel.Type,
            (m, o) => PromptTuningModel.Inject(m, new PromptTuningConfig { NumVirtualTokens = 20, PromptTuningInit = PromptInit.SampleVocab }, seed: o.Seed)),
        new("prefix-tuning", "20 trained key/value prefixes in every attention layer", 1e-2f, PrefixTuningModel.Type,
            (m, o) => PrefixTuningModel.Inject(m, new PrefixTuningConfig { NumVirtualTokens = 20 }, seed: o.Seed)),
    ];

    /// <summary>The names of <see cref="All"/>.</summary>
    public static IReadOnlyList<string> Names => All.Select(r => r.Name).ToList();

    /// <summary>The recipe called <paramref name="name"/>, or null.</summary>
    public static PeftRecipe? Find(string name) => All.FirstOrDefault(r => r.Name == name);

    /// <summary>The <c>peft_type</c> of the adapter_config.json in <paramref name="directory"/>, or null when it has none.</summary>
    public static string? PeftTypeOf(string directory)
    {
        var path = Path.Combine(directory, AdapterFiles.ConfigFile);
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)) is JsonObject o && o["peft_type"] is JsonValue v && v.TryGetValue(out string? s) ? s : null; }
        catch (System.Text.Json.JsonException) { return null; }
    }

    /// <summary>The peft_type values <see cref="Load"/> reads.</summary>
    public static readonly string[] LoadableTypes = [SelectiveModel.Type, LnTuningModel.Type, IA3Model.Type, BottleneckModel.Type, PromptTuningModel.Type, PrefixTuningModel.Type];

    /// <summary>
    /// Loads the non-LoRA method saved in <paramref name="directory"/> onto <paramref name="model"/> as the active instance
    /// "default", dispatching on its config's <c>peft_type</c>; <paramref name="option"/> names the option in errors.
    /// </summary>
    public static IPeftMethod Load(Module model, string directory, string option, Action<string>? warn = null)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"{option} '{directory}': no such folder.");
        string? type = PeftTypeOf(directory);
        IPeftMethod method;
        switch (type)
        {
            case SelectiveModel.Type: { var m = SelectiveModel.For(model); m.Load(directory, "default", warn); method = m; break; }
            case LnTuningModel.Type: { var m = LnTuningModel.For(model); m.Load(directory, "default", warn); method = m; break; }
            case IA3Model.Type: { var m = IA3Model.For(model); m.Load(directory, "default", warn); method = m; break; }
            case BottleneckModel.Type: { var m = BottleneckModel.For(model); m.Load(directory, "default", warn); method = m; break; }
            case PromptTuningModel.Type: { var m = PromptTuningModel.For(model); m.Load(directory, "default", warn); method = m; break; }
            case PrefixTuningModel.Type: { var m = PrefixTuningModel.For(model); m.Load(directory, "default", warn); method = m; break; }
            default:
                throw new ArgumentException($"{option} '{directory}': {AdapterFiles.ConfigFile} has peft_type {(type == null ? "missing" : $"\"{type}\"")}; expected LORA or one of {string.Join(", ", LoadableTypes)}.");
        }
        method.SetActive("default");
        return method;
    }
}
