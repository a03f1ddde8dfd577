using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Transformer;

namespace Nanolora.Lora.PromptTuning;

/// <summary>
/// Prompt tuning applied from outside through the models' input-embedding hooks: the active instance's virtual tokens are
/// prepended to the word embeddings of the encoder input (and, with num_transformer_submodules 2, of the decoder input),
/// and the model embeds all rows as PEFT's base model embeds its <c>inputs_embeds</c>: the virtual tokens take positions
/// 0 … P−1 and the real tokens follow. The encoder's attention mask admits them; their rows are dropped from the decoder's
/// logits and from BERT's last_hidden_state. Cached decoding (greedy, beam) prepends the decoder prompt once.
/// <para>The tables are attached to the model at <c>prompt_encoder.{name}.embedding.weight</c> (PEFT's PeftModel names), so
/// they train with the model's parameters. The virtual tokens are extra inputs, not a change to any weight: merging is
/// refused.</para>
/// <para>Files: PEFT's layout — adapter_config.json with <c>peft_type</c> "PROMPT_TUNING" and PromptTuningConfig's fields
/// (<c>num_virtual_tokens</c>, <c>token_dim</c>, <c>num_transformer_submodules</c>, <c>num_attention_heads</c>,
/// <c>num_layers</c>, <c>prompt_tuning_init</c>, <c>prompt_tuning_init_text</c>, <c>tokenizer_name_or_path</c>);
/// adapter_model.safetensors with one tensor, <c>prompt_embeddings</c> [S·P, C] (PEFT's get_peft_model_state_dict: no prefix).</para>
/// </summary>
public sealed class PromptTuningModel : PeftMethod<PromptTuningConfig>
{
    const string Host = "prompt_encoder";
    readonly PromptLearningBase _base;
    readonly Func<string, IReadOnlyList<int>>? _tokenize;
    ModuleDict<PromptEmbedding>? _tables;
    InputEmbeddingHook? _previousEncoderHook, _previousDecoderHook;
    bool _hooked, _loading;
    string? _routed;

    /// <summary>PEFT's peft_type for prompt tuning.</summary>
    public const string Type = "PROMPT_TUNING";
    /// <inheritdoc/>
    public override string PeftType => Type;
    /// <inheritdoc/>
    public override bool CanMerge => false;
    /// <inheritdoc/>
    protected override string WhyNoMerge =>
        "Prompt tuning cannot be merged: its virtual tokens are extra inputs the attention attends to, not a change to any weight, so no update of the base weights reproduces them.";
    /// <summary>The instances' tables by name.</summary>
    public IReadOnlyDictionary<string, PromptEmbedding> Tables => _tables?.Items ?? new Dictionary<string, PromptEmbedding>();

    PromptTuningModel(Module model, Func<string, IReadOnlyList<int>>? tokenize) : base(model)
    {
        _base = PromptLearningBase.Of(model, "Prompt tuning");
        _tokenize = tokenize;
    }

    /// <summary>
    /// A prompt-tuning view of <paramref name="model"/> (a Seq2SeqTransformer or a BertModel) with no instances yet; one view
    /// per model. <paramref name="tokenize"/> turns prompt_tuning_init_text into token ids (TEXT init needs it; PEFT calls the
    /// tokenizer named by tokenizer_name_or_path, special tokens included).
    /// </summary>
    public static PromptTuningModel For(Module model, Func<string, IReadOnlyList<int>>? tokenize = null) => new(model, tokenize);

    /// <summary>Adds instance <paramref name="name"/> for <paramref name="config"/>, makes it active and freezes everything else.</summary>
    public static PromptTuningModel Inject(Module model, PromptTuningConfig config, string name = "default", ulong seed = 1, Func<string, IReadOnlyList<int>>? tokenize = null) => Injected(new PromptTuningModel(model, tokenize), name, config, seed);

    int Submodules(PromptTuningConfig c)
    {
        int s = c.NumTransformerSubmodules ?? _base.DefaultSubmodules;
        if (s == 2 && !_base.IsSeq2Seq) throw new ArgumentException("Prompt tuning config: num_transformer_submodules 2 needs a decoder, and a BertModel has none; use 1.");
        return s;
    }

    /// <inheritdoc/>
    protected override void AddCore(string name, PromptTuningConfig config, ulong seed)
    {
        config.Validate();
        int submodules = Submodules(config), total = config.NumVirtualTokens * submodules;
        float[]? init = _loading ? null : config.PromptTuningInit switch
        {
            PromptInit.Text => _base.WordEmbeddings(TextIds(config.PromptTuningInitText!, total)),
            PromptInit.SampleVocab => _base.WordEmbeddings(SampledIds(total, seed)),
            _ => null,
        };
        var table = new PromptEmbedding(config.NumVirtualTokens, submodules, _base.TokenDim, seed, _base.Device);
        if (init != null) table.Weight.Data.CopyFrom(init);
        _tables ??= PromptLearningBase.AttachHost<PromptEmbedding>(Base, Host, PeftType);
        _tables.Add(name, table);
        Hook();
    }

    /// <summary>PEFT's TEXT init: the text's token ids, cut to <paramref name="total"/> or repeated until they fill it.</summary>
    int[] TextIds(string text, int total)
    {
        if (_tokenize == null) throw new ArgumentException("Prompt tuning: prompt_tuning_init TEXT needs a tokenizer; pass tokenize to PromptTuningModel.For or Inject.");
        var ids = _tokenize(text);
        if (ids.Count == 0) throw new ArgumentException($"Prompt tuning: prompt_tuning_init_text \"{text}\" gives no tokens.");
        return Enumerable.Range(0, total).Select(i => ids[i % ids.Count]).ToArray();
    }

    /// <summary>PEFT's SAMPLE_VOCAB init: token ids drawn uniformly from the vocabulary (seeded here).</summary>
    int[] SampledIds(int total, ulong seed)
    {
        var rng = new Random((int)(seed ^ (seed >> 32)));
        return Enumerable.Range(0, total).Select(_ => rng.Next(_base.VocabSize)).ToArray();
    }

    /// <summary>Installs this view's input hooks once, running after any hook already there.</summary>
    void Hook()
    {
        if (_hooked) return;
        _hooked = true;
        if (Base is BertModel bert)
        {
            _previousEncoderHook = bert.InputHook;
            bert.InputHook = x => Prepend(_previousEncoderHook, x, 0);
            return;
        }
        var model = (Seq2SeqTransformer)Base;
        (_previousEncoderHook, _previousDecoderHook) = (model.EncoderInputHook, model.DecoderInputHook);
        model.EncoderInputHook = x => Prepend(_previousEncoderHook, x, 0);
        model.DecoderInputHook = y => Prepend(_previousDecoderHook, y, 1);
    }

    (Variable, int) Prepend(InputEmbeddingHook? previous, Variable words, int submodule)
    {
        int before = 0;
        if (previous != null) (words, before) = previous(words);
        if (_routed == null || !_tables!.Items.TryGetValue(_routed, out var table) || submodule >= table.Submodules) return (words, before);
        return (table.Prepend(words, submodule), before + table.VirtualTokens);
    }

    /// <inheritdoc/>
    public override IEnumerable<(string Name, Parameter Parameter)> InstanceParameters(string name) =>
        _tables != null && _tables.Items.TryGetValue(name, out var t) ? t.NamedParameters($"{Host}.{name}.") : [];

    /// <inheritdoc/>
    protected override void Route(string? name) => _routed = name;
    /// <summary>Never called: <see cref="CanMerge"/> is false, so the base refuses first.</summary>
    protected override void MergeCore(string name) => throw new NotSupportedException(WhyNoMerge);
    /// <summary>Never called (see <see cref="MergeCore"/>).</summary>
    protected override void UnmergeCore(string name) => throw new NotSupportedException(WhyNoMerge);

    /// <summary>Detaches the tables and puts the previous hooks back.</summary>
    protected override void UnloadCore(string? merged)
    {
        if (_tables != null) { Base.DetachModule(Host); _tables.Dispose(); _tables = null; }
        if (_hooked)
        {
            if (Base is BertModel bert) bert.InputHook = _previousEncoderHook;
            else if (Base is Seq2SeqTransformer s) (s.EncoderInputHook, s.DecoderInputHook) = (_previousEncoderHook, _previousDecoderHook);
            _hooked = false;
        }
        _routed = null;
    }

    /// <inheritdoc/>
    protected override void DeleteCore(string name) => _tables?.Remove(name);
    /// <inheritdoc/>
    protected override long AddedParameterCount(string name) => InstanceParameters(name).Sum(p => p.Parameter.Count);

    /// <inheritdoc/>
    public override void Save(string name, string directory)
    {
        var c = Configs.TryGetValue(name, out var config) ? config : throw new KeyNotFoundException($"{Type}: no instance '{name}' to save.");
        var table = _tables!.Items[name];
        var json = _base.ConfigJson(Type, c.NumVirtualTokens, table.Submodules);
        json["prompt_tuning_init"] = c.PromptTuningInit;
        json["prompt_tuning_init_text"] = c.PromptTuningInitText;
        json["tokenizer_name_or_path"] = c.TokenizerNameOrPath;
        json["tokenizer_kwargs"] = null;
        PeftFiles.Write(directory, json, [PeftFiles.Entry(PromptLearningBase.EmbeddingsKey, table.Weight)], prefix: "");
    }

    /// <inheritdoc/>
    public override void Load(string directory, string name, Action<string>? warn = null)
    {
        var root = PeftFiles.ReadConfig(directory, Type,
            new HashSet<string>(PromptLearningBase.KnownFields) { "prompt_tuning_init", "prompt_tuning_init_text", "tokenizer_name_or_path", "tokenizer_kwargs" },
            PromptLearningBase.Refused(), warn);
        var config = new PromptTuningConfig
        {
            NumVirtualTokens = _base.ReadVirtualTokens(directory, root),
            PromptTuningInit = root["prompt_tuning_init"] switch
            {
                null => PromptInit.Random,
                JsonValue v when v.TryGetValue(out string? s) && PromptInit.All.Contains(s) => s,
                var other => throw PeftFiles.Bad(directory, "prompt_tuning_init", $"one of {string.Join(", ", PromptInit.All)}", other),
            },
            PromptTuningInitText = PromptLearningBase.Str(directory, root, "prompt_tuning_init_text"),
            TokenizerNameOrPath = PromptLearningBase.Str(directory, root, "tokenizer_name_or_path"),
            NumTransformerSubmodules = PromptLearningBase.Int(directory, root, "num_transformer_submodules", _base.DefaultSubmodules, 1),
        };
        int submodules;
        try { config.Validate(); submodules = Submodules(config); }
        catch (ArgumentException e) { throw new InvalidDataException($"{Path.Combine(directory, AdapterFiles.ConfigFile)}: {e.Message}"); }
        var values = PeftFiles.ReadWeights(directory,
            new Dictionary<string, int[]> { [PromptLearningBase.EmbeddingsKey] = [config.NumVirtualTokens * submodules, _base.TokenDim] }, prefix: "");
        _loading = true;   // the values come from the file: no tokenizer or vocabulary draw is needed
        try { Add(name, config); }
        finally { _loading = false; }
        _tables!.Items[name].Weight.Data.CopyFrom(values[PromptLearningBase.EmbeddingsKey]);
    }
}
