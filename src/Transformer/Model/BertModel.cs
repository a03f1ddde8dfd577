using System.Text.Json.Serialization;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// A BERT encoder's hyper-parameters, with Hugging Face's <c>config.json</c> field names (BertConfig), so a hub
/// folder's config reads as it is. Only what changes the maths is kept; other fields of config.json are ignored.
/// </summary>
public sealed record BertConfig
{
    /// <summary>Word-piece vocabulary size (rows of the word embedding table).</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 30522;
    /// <summary>Model width C.</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 384;
    /// <summary>Number of encoder layers.</summary>
    [JsonPropertyName("num_hidden_layers")] public int Layers { get; init; } = 6;
    /// <summary>Attention heads per layer.</summary>
    [JsonPropertyName("num_attention_heads")] public int Heads { get; init; } = 12;
    /// <summary>Feed-forward inner width.</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 1536;
    /// <summary>The feed-forward activation ("gelu").</summary>
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu";
    /// <summary>Rows of the learned position table: the longest input in tokens.</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositions { get; init; } = 512;
    /// <summary>Rows of the token-type (segment) embedding table.</summary>
    [JsonPropertyName("type_vocab_size")] public int TypeVocabSize { get; init; } = 2;
    /// <summary>LayerNorm's ε.</summary>
    [JsonPropertyName("layer_norm_eps")] public float LayerNormEps { get; init; } = 1e-12f;
    /// <summary>Dropout on embeddings and sublayer outputs in training.</summary>
    [JsonPropertyName("hidden_dropout_prob")] public float HiddenDropout { get; init; } = 0.1f;
    /// <summary>Dropout on the attention probabilities in training.</summary>
    [JsonPropertyName("attention_probs_dropout_prob")] public float AttentionDropout { get; init; } = 0.1f;
    /// <summary>Hugging Face's position embedding kind ("absolute": learned positions).</summary>
    [JsonPropertyName("position_embedding_type")] public string PositionEmbeddingType { get; init; } = "absolute";
    /// <summary>The [PAD] token's id.</summary>
    [JsonPropertyName("pad_token_id")] public int PadTokenId { get; init; }
    /// <summary>Seeds initialization and dropout (not part of config.json).</summary>
    [JsonIgnore] public ulong Seed { get; init; } = 1;

    /// <summary>all-MiniLM-L6-v2's config (sentence-transformers' hub folder).</summary>
    public static readonly BertConfig MiniLmL6 = new();

    /// <summary>Refuses what this encoder can't compute, naming the config field.</summary>
    public void Validate(string source = "config")
    {
        void Need(bool ok, string field, string expected, object actual)
        {
            if (!ok) throw new InvalidDataException($"{source}: {field} must be {expected}, got {actual}.");
        }
        Need(VocabSize is > 0 and <= 10_000_000, "vocab_size", "in 1..10,000,000", VocabSize);
        Need(HiddenSize is > 0 and <= 65_536, "hidden_size", "in 1..65,536", HiddenSize);
        Need(Heads > 0 && HiddenSize % Heads == 0, "num_attention_heads", $"a positive divisor of hidden_size {HiddenSize}", Heads);
        Need(Layers is > 0 and <= 1000, "num_hidden_layers", "in 1..1000", Layers);
        Need(IntermediateSize is > 0 and <= 1 << 20, "intermediate_size", "in 1..1,048,576", IntermediateSize);
        Need(HiddenAct == "gelu", "hidden_act", "\"gelu\" (the erf form; the tanh approximations are not implemented)", $"\"{HiddenAct}\"");
        Need(MaxPositions is > 0 and <= 1 << 16, "max_position_embeddings", "in 1..65,536", MaxPositions);
        Need(TypeVocabSize is > 0 and <= 1024, "type_vocab_size", "in 1..1024", TypeVocabSize);
        Need(LayerNormEps > 0 && float.IsFinite(LayerNormEps), "layer_norm_eps", "a positive finite number", LayerNormEps);
        Need(HiddenDropout is >= 0 and < 1, "hidden_dropout_prob", "in [0, 1)", HiddenDropout);
        Need(AttentionDropout is >= 0 and < 1, "attention_probs_dropout_prob", "in [0, 1)", AttentionDropout);
        Need(PositionEmbeddingType == "absolute", "position_embedding_type", "\"absolute\"", $"\"{PositionEmbeddingType}\"");
    }

    /// <summary>The shared encoder blocks' view of this config: post-LN, GELU, learned positions, no decoder.</summary>
    public TransformerConfig ToTransformerConfig() => new()
    {
        VocabSize = VocabSize, DModel = HiddenSize, Heads = Heads, DFF = IntermediateSize,
        EncoderLayers = Layers, DecoderLayers = 0, Dropout = HiddenDropout, PreNorm = false, Activation = "gelu",
        ActivationDropout = 0f, AttentionDropout = AttentionDropout,   // BertIntermediate has no dropout; BertSelfAttention drops probabilities
        TieEmbeddings = false, LearnedPositions = true, MaxPositions = MaxPositions, LayerNormEps = LayerNormEps, Seed = Seed,
    };
}

/// <summary>word + position + token-type embeddings, then LayerNorm and dropout (BertEmbeddings).</summary>
public sealed class BertEmbeddings : Module
{
    readonly float _dropout;
    readonly int _maxPositions;
    readonly SeedSequence _seeds;

    /// <summary>Creates word_embeddings, position_embeddings, token_type_embeddings and LayerNorm for <paramref name="c"/>.</summary>
    public BertEmbeddings(BertConfig c, SeedSequence seeds, Device device)
    {
        _dropout = c.HiddenDropout;
        _maxPositions = c.MaxPositions;
        _seeds = seeds;
        RegisterModule("word_embeddings", new Embedding(c.VocabSize, c.HiddenSize, seeds, device, std: 0.02f));
        RegisterModule("position_embeddings", new Embedding(c.MaxPositions, c.HiddenSize, seeds, device, std: 0.02f));
        RegisterModule("token_type_embeddings", new Embedding(c.TypeVocabSize, c.HiddenSize, seeds, device, std: 0.02f));
        RegisterModule("LayerNorm", new LayerNorm(c.HiddenSize, device, c.LayerNormEps));
    }

    /// <summary>
    /// ids and typeIds [B, T] → [B, P+T, C] and P: word embeddings, then <paramref name="hook"/>'s P prepended rows (none
    /// without a hook), then for all P+T rows positions 0 … P+T−1, token types (0 for the prompt rows, as PEFT prepends zeros
    /// to token_type_ids), LayerNorm and dropout.
    /// </summary>
    public (Variable Embeddings, int PrefixLength) Forward(int[] ids, int[] typeIds, int batch, int length, InputEmbeddingHook? hook)
    {
        var words = ((Embedding)Child("word_embeddings")).Forward(ids, batch, length);
        int prefix = 0;
        if (hook != null) (words, prefix) = hook(words);
        int total = prefix + length;
        if (total > _maxPositions)
            throw new ArgumentException($"{prefix} virtual tokens and {length} tokens exceed max_position_embeddings {_maxPositions}.");
        if (prefix > 0)
        {
            var widened = new int[batch * total];
            for (int b = 0; b < batch; b++) Array.Copy(typeIds, b * length, widened, b * total + prefix, length);
            typeIds = widened;
        }
        var types = ((Embedding)Child("token_type_embeddings")).Forward(typeIds, batch, total);
        var positions = ((Embedding)Child("position_embeddings")).Forward(Enumerable.Range(0, total).ToArray(), total);
        // Each sum is freed once used unless a backward rule reads it (the LayerNorm reads its input): the three lookups and
        // the partial sum need not sit beside the embeddings until backward.
        var partial = F.Add(words, types);
        Variable.ReleaseAllIfUnread(words, types);
        var sum = F.Add(partial, positions);
        Variable.ReleaseAllIfUnread(partial, positions);
        var x = Layer("LayerNorm").Forward(sum);
        sum.ReleaseIfUnread();
        if (!Training) return (x, prefix);
        var dropped = F.Dropout(x, _dropout, _seeds.Next(), Training);
        x.ReleaseIfUnread();
        return (dropped, prefix);
    }

    /// <summary>ids and typeIds [B, T] → [B, T, C]; positions are 0 … T−1 in every row.</summary>
    public Variable Forward(int[] ids, int[] typeIds, int batch, int length) => Forward(ids, typeIds, batch, length, null).Embeddings;
}

/// <summary>
/// A padded batch of word-piece ids for an encoder: ids, token types and the attention mask (1 token, 0 padding),
/// each [B, T] row-major.
/// </summary>
public sealed record EncoderBatch(int[] Ids, int[] TypeIds, int[] AttentionMask, int BatchSize, int Length)
{
    /// <summary>
    /// Pads sequences of ids with <paramref name="padId"/> to the longest one rounded up to a multiple of
    /// <paramref name="multiple"/>; token types all 0. Rounding keeps the number of distinct batch shapes small, so the
    /// buffer pool reuses its buffers instead of allocating new ones for every length (padding is masked: the outputs
    /// at real tokens do not change).
    /// </summary>
    public static EncoderBatch Pad(IReadOnlyList<IReadOnlyList<int>> sequences, int padId = 0, int multiple = 8)
    {
        if (multiple < 1) throw new ArgumentOutOfRangeException(nameof(multiple), $"Padding multiple must be at least 1, got {multiple}.");
        int b = sequences.Count, t = Math.Max(1, sequences.Max(s => s.Count));
        t = (t + multiple - 1) / multiple * multiple;
        var ids = new int[b * t];
        var mask = new int[b * t];
        Array.Fill(ids, padId);
        for (int i = 0; i < b; i++)
            for (int j = 0; j < sequences[i].Count; j++) { ids[i * t + j] = sequences[i][j]; mask[i * t + j] = 1; }
        return new EncoderBatch(ids, new int[b * t], mask, b, t);
    }
}

/// <summary>
/// Hugging Face's BertModel built from the shared encoder blocks: <c>embeddings.*</c>, then post-LN encoder layers
/// named <c>encoder.layer.N.attention.self.query</c> … <c>encoder.layer.N.output.LayerNorm</c>, then
/// <c>pooler.dense</c>. LoRA targets them by PEFT's names (query, key, value, dense).
/// Legend: B batch, T tokens, C hidden width.
/// </summary>
public sealed class BertModel : Module
{
    /// <summary>The configuration the model was built from.</summary>
    public BertConfig Config { get; }
    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }

    /// <summary>Whether the model has pooler.dense (<see cref="Pooler"/> needs it).</summary>
    public bool HasPooler { get; }
    /// <summary>
    /// Prompt tuning: prepends virtual tokens to the word embeddings (null: none). The attention mask admits them, and
    /// <see cref="Forward"/> drops their rows from last_hidden_state, so outputs, pooling and the pooler see the real tokens only.
    /// </summary>
    public InputEmbeddingHook? InputHook { get; set; }

    /// <summary>Creates a randomly initialized BERT encoder for <paramref name="config"/> (load weights afterwards).</summary>
    /// <param name="config">Sizes and hyperparameters (vocabulary, width, layers, heads...).</param>
    /// <param name="device">Where the parameters live (null: <see cref="Device.Default"/>).</param>
    /// <param name="pooler">Whether the model has pooler.dense (hub folders saved without it load with false).</param>
    public BertModel(BertConfig config, Device? device = null, bool pooler = true)
    {
        config.Validate();
        Config = config;
        Device = device ?? Device.Default;
        var seeds = new SeedSequence(config.Seed);
        var blocks = config.ToTransformerConfig();
        RegisterModule("embeddings", new BertEmbeddings(config, seeds, Device));
        RegisterModule("encoder", new EncoderStack(blocks, config.Layers,
            (c, s, d) => new EncoderLayer(c, s, d, EncoderLayerNames.Bert), Device, seeds, layerListName: "layer"));
        HasPooler = pooler;
        if (pooler) RegisterModuleAt("pooler.dense", new Linear(config.HiddenSize, config.HiddenSize, true, seeds, Device));
    }

    /// <summary>
    /// Activation checkpointing on every encoder layer (Hugging Face's <c>gradient_checkpointing_enable()</c>): see
    /// <see cref="EncoderStack.GradientCheckpointing"/>. Off by default.
    /// </summary>
    public bool GradientCheckpointing
    {
        get => ((EncoderStack)Child("encoder")).GradientCheckpointing;
        set => ((EncoderStack)Child("encoder")).GradientCheckpointing = value;
    }

    /// <summary>Additive key mask [B, T]: 0 for tokens, −1e9 for padding.</summary>
    public Tensor KeyMask(EncoderBatch batch)
    {
        var mask = new float[batch.AttentionMask.Length];
        for (int i = 0; i < mask.Length; i++) mask[i] = batch.AttentionMask[i] != 0 ? 0f : -1e9f;
        return Tensor.FromArray(mask, [batch.BatchSize, batch.Length], Device, MemoryCategory.Other);
    }

    /// <summary>last_hidden_state [B, T, C].</summary>
    public Variable Forward(EncoderBatch batch)
    {
        foreach (int id in batch.Ids)
            if ((uint)id >= (uint)Config.VocabSize) throw new ArgumentException($"Token id {id} is outside the vocabulary (0..{Config.VocabSize - 1}).");
        if (batch.Length > Config.MaxPositions)
            throw new ArgumentException($"Sequence of {batch.Length} tokens exceeds max_position_embeddings {Config.MaxPositions}.");
        var (x, prefix) = ((BertEmbeddings)Child("embeddings")).Forward(batch.Ids, batch.TypeIds, batch.BatchSize, batch.Length, InputHook);
        using var mask = KeyMask(batch);
        if (prefix == 0) return ((EncoderStack)Child("encoder")).RunEncoder(x, mask);
        using var zeros = Tensor.Zeros([batch.BatchSize, prefix], Device);
        using var widened = Ops.Concat([zeros, mask], 1);
        var hidden = ((EncoderStack)Child("encoder")).RunEncoder(x, widened);
        return F.Slice(hidden, 1, prefix, batch.Length);
    }

    /// <summary>pooler_output [B, C]: tanh(dense(hidden of the first token)).</summary>
    public Variable Pooler(Variable hidden) => !HasPooler
        ? throw new InvalidOperationException("This BERT model was loaded without pooler weights.")
        : F.Tanh(Layer("pooler.dense").Forward(F.Reshape(F.Slice(hidden, 1, 0, 1), hidden.Dim(0), hidden.Dim(2))));

    /// <summary>
    /// Sentence embeddings [B, C] as sentence-transformers computes them for all-MiniLM-L6-v2: the mean of
    /// last_hidden_state over the attention mask, then L2 normalization. Differentiable (training uses it).
    /// </summary>
    public Variable Embed(EncoderBatch batch) => MeanPoolNormalized(Forward(batch), batch);

    /// <summary>Mean of <paramref name="hidden"/> [B, T, C] over each row's real (unpadded) tokens, L2-normalized: [B, C].</summary>
    public static Variable MeanPoolNormalized(Variable hidden, EncoderBatch batch)
    {
        int b = batch.BatchSize, t = batch.Length;
        var weights = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            int count = 0;
            for (int j = 0; j < t; j++) count += batch.AttentionMask[i * t + j] != 0 ? 1 : 0;
            for (int j = 0; j < t; j++) weights[i * t + j] = batch.AttentionMask[i * t + j] != 0 ? 1f / Math.Max(1, count) : 0f;
        }
        var w = Variable.Constant(Tensor.FromArray(weights, [b, 1, t], hidden.Device, MemoryCategory.Other));
        var mean = F.Reshape(F.Matmul(w, hidden), b, hidden.Dim(2));          // [B, C]
        // sentence-transformers' Normalize divides by max(‖x‖, 1e-12); √(‖x‖² + 1e-24) is the same for any real sentence and smooth at 0.
        var norm = F.Sqrt(F.AddScalar(F.SumLastAxis(F.Mul(mean, mean)), 1e-24f));
        return F.Div(mean, F.Reshape(norm, b, 1));
    }
}
