using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>
/// What PEFT's prompt-learning methods (prompt tuning, prefix tuning) need to know of the base, as PEFT's
/// <c>_prepare_prompt_learning_config</c> reads it from the model config: token_dim (C), num_layers (BART's
/// num_hidden_layers is its encoder_layers), num_attention_heads, the vocabulary, and the task type the file records.
/// Both models are supported: the seq2seq transformer and the BERT encoder.
/// </summary>
internal sealed record PromptLearningBase(Module Model, bool IsSeq2Seq, int TokenDim, int NumLayers, int DecoderLayers, int Heads, int VocabSize)
{
    /// <summary>The key PEFT's get_peft_model_state_dict gives prompt-learning weights (no <c>base_model.model.</c> prefix).</summary>
    public const string EmbeddingsKey = "prompt_embeddings";

    /// <summary>PEFT's task_type for the model: SEQ_2_SEQ_LM or FEATURE_EXTRACTION.</summary>
    public string TaskType => IsSeq2Seq ? "SEQ_2_SEQ_LM" : "FEATURE_EXTRACTION";

    /// <summary>PEFT's default num_transformer_submodules: 2 for SEQ_2_SEQ_LM (encoder and decoder), else 1.</summary>
    public int DefaultSubmodules => IsSeq2Seq ? 2 : 1;

    /// <summary>The geometry of <paramref name="model"/>, or a refusal naming what is supported.</summary>
    public static PromptLearningBase Of(Module model, string method) => model switch
    {
        Seq2SeqTransformer s => new(model, true, s.Config.DModel, s.Config.EncoderLayers, s.Config.DecoderLayers, s.Config.Heads, s.Config.VocabSize),
        BertModel b => new(model, false, b.Config.HiddenSize, b.Config.Layers, 0, b.Config.Heads, b.Config.VocabSize),
        _ => throw new ArgumentException($"{method} needs a Seq2SeqTransformer or a BertModel (their input and attention hooks), got a {model.GetType().Name}."),
    };

    /// <summary>Where the parameters live.</summary>
    public Device Device => Model switch { Seq2SeqTransformer s => s.Device, BertModel b => b.Device, _ => Device.Cpu };

    /// <summary>
    /// The word embeddings of <paramref name="ids"/> [N, C] as the input hook receives them (the seq2seq model's are scaled
    /// by √C), which is what PEFT's TEXT and SAMPLE_VOCAB inits copy (<c>word_embeddings(init_token_ids)</c>).
    /// </summary>
    public float[] WordEmbeddings(int[] ids)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)VocabSize) throw new ArgumentException($"Token id {id} is outside the vocabulary (0..{VocabSize - 1}).");
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var rows = Model is Seq2SeqTransformer s ? s.WordEmbeddings(ids, ids.Length)
            : ((Embedding)Model.GetModule("embeddings.word_embeddings")).Forward(ids, ids.Length);
        return rows.Data.ToArray();
    }

    /// <summary>PromptLearningConfig's fields, as PEFT writes them.</summary>
    public JsonObject ConfigJson(string peftType, int virtualTokens, int submodules) => new()
    {
        ["peft_type"] = peftType,
        ["task_type"] = TaskType,
        ["num_virtual_tokens"] = virtualTokens,
        ["token_dim"] = TokenDim,
        ["num_transformer_submodules"] = submodules,
        ["num_attention_heads"] = Heads,
        ["num_layers"] = NumLayers,
        ["modules_to_save"] = null,
        ["inference_mode"] = true,
    };

    /// <summary>PromptLearningConfig's fields a reader knows (the method adds its own).</summary>
    public static readonly string[] KnownFields = ["num_virtual_tokens", "token_dim", "num_transformer_submodules", "num_attention_heads", "num_layers"];

    /// <summary>The refusals both methods share: modules_to_save is not implemented.</summary>
    public static Dictionary<string, (Func<JsonNode?, bool>, string)> Refused() => new()
    {
        ["modules_to_save"] = (PeftFiles.IsNullOrEmpty, "modules to save are not implemented for prompt learning"),
    };

    /// <summary>Reads num_virtual_tokens (≥ 1) and checks token_dim and num_attention_heads, when given, against this base.</summary>
    public int ReadVirtualTokens(string directory, JsonObject root)
    {
        int p = Int(directory, root, "num_virtual_tokens", null, 1);
        if (root["token_dim"] is not null && Int(directory, root, "token_dim", null, 1) != TokenDim)
            throw PeftFiles.Bad(directory, "token_dim", $"this model's width {TokenDim}", root["token_dim"]);
        if (root["num_attention_heads"] is not null && Int(directory, root, "num_attention_heads", null, 1) != Heads)
            throw PeftFiles.Bad(directory, "num_attention_heads", $"this model's {Heads} heads", root["num_attention_heads"]);
        return p;
    }

    /// <summary>An integer field ≥ <paramref name="min"/>; <paramref name="fallback"/> when absent (null: required).</summary>
    public static int Int(string directory, JsonObject root, string field, int? fallback, int min) => root[field] switch
    {
        null when fallback != null => fallback.Value,
        JsonValue v when v.TryGetValue(out int i) && i >= min => i,
        var other => throw PeftFiles.Bad(directory, field, $"an integer ≥ {min}", other),
    };

    /// <summary>A string field, or null when absent or null.</summary>
    public static string? Str(string directory, JsonObject root, string field) => root[field] switch
    {
        null => null,
        JsonValue v when v.TryGetValue(out string? s) => s,
        var other => throw PeftFiles.Bad(directory, field, "a string or null", other),
    };

    /// <summary>Attaches the instances' dictionary at <paramref name="host"/>; a second prompt-learning view of one model is refused (the hooks belong to the first).</summary>
    public static ModuleDict<T> AttachHost<T>(Module model, string host, string peftType) where T : Module
    {
        if (model.NamedModules().Any(m => m.Name == host))
            throw new ArgumentException($"{peftType}: the model already has '{host}' (another prompt-learning view); use that view, one per model.");
        return model.AttachModule(host, new ModuleDict<T>());
    }

    /// <summary>Ids [B·count]: rows start … start+count−1 of a table, for every batch row (PEFT's expanded prompt_tokens).</summary>
    public static int[] RowIds(int batch, int start, int count)
    {
        var ids = new int[batch * count];
        for (int b = 0; b < batch; b++)
            for (int i = 0; i < count; i++) ids[b * count + i] = start + i;
        return ids;
    }
}
