using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Prompt-tuning hook on an input side: gets the word embeddings [B, L, C] (as <c>WordEmbeddings</c> returns them, before
/// positions) and returns them with P vectors prepended ([B, P+L, C]) and P. As in PEFT, which hands that concatenation to
/// the base model as <c>inputs_embeds</c>, the model then embeds the whole P+L rows: positions 0 … P+L−1 (the virtual
/// tokens take the first ones), BERT's token type 0 and the embedding norm, then dropout. The encoder widens the padding
/// mask to admit the P rows; the decoder (and BERT) drop them from the output and, with a KV cache, call the hook only on
/// the first step (<see cref="LayerCache.PromptLength"/> keeps P for the later steps' positions). The value it returns is
/// freed once the positions are added unless a backward rule reads it (<see cref="Variable.ReleaseIfUnread"/>): a hook that
/// keeps it for later must copy it.
/// </summary>
public delegate (Variable Embeddings, int PrefixLength) InputEmbeddingHook(Variable embeddings);

/// <summary>
/// The encoder-decoder of "Attention Is All You Need". Parameter names follow Hugging Face:
/// <c>shared.weight</c>, <c>encoder.layers.0.self_attn.q_proj.weight</c>, <c>decoder.layers.1.cross_attn.v_proj.bias</c>,
/// <c>decoder.layers.1.ffn.fc1.weight</c>, <c>encoder.final_norm.weight</c>, <c>lm_head.weight</c> (when untied).
/// </summary>
public sealed class Seq2SeqTransformer : Module
{
    /// <summary>The configuration the model was built from.</summary>
    public TransformerConfig Config { get; }
    /// <summary>Where the parameters live.</summary>
    public Device Device { get; }
    readonly Tensor _sinusoids;               // [MaxPositions, C], constant
    readonly SeedSequence _dropoutSeeds;      // embedding dropout
    readonly SeedSequence _layerSeeds;        // initialization, then (the same stream) the layers' dropout
    readonly Parameter? _logitsBias;
    /// <summary>Prompt tuning on the encoder input: prepends virtual tokens to the embeddings (null: none).</summary>
    public InputEmbeddingHook? EncoderInputHook { get; set; }
    /// <summary>Prompt tuning on the decoder input: prepends virtual tokens to the embeddings (null: none).</summary>
    public InputEmbeddingHook? DecoderInputHook { get; set; }

    /// <summary>Creates a randomly initialized model for <paramref name="config"/> (seeded by its Seed) on <paramref name="device"/> (null: <see cref="Device.Default"/>).</summary>
    public Seq2SeqTransformer(TransformerConfig config, Device? device = null)
    {
        config.Validate();
        Config = config;
        Device = device ?? Device.Default;
        var seeds = _layerSeeds = new SeedSequence(config.Seed);
        _dropoutSeeds = new SeedSequence(config.Seed ^ 0xD40F0D40UL);
        // N(0, 1/C) as fairseq: the input side is scaled by √C, and tied output logits start with unit variance.
        RegisterModule("shared", new Embedding(config.VocabSize, config.DModel, seeds, Device, std: 1f / MathF.Sqrt(config.DModel)));
        if (config.LearnedPositions)
        {
            RegisterModule("encoder_positions", new Embedding(config.MaxPositions, config.DModel, seeds, Device, std: 0.02f));
            RegisterModule("decoder_positions", new Embedding(config.MaxPositions, config.DModel, seeds, Device, std: 0.02f));
        }
        RegisterModule("encoder", new EncoderStack(config, config.EncoderLayers, (c, s, d) => new EncoderLayer(c, s, d), Device, seeds));
        RegisterModule("decoder", new EncoderStack(config, config.DecoderLayers, (c, s, d) => new DecoderLayer(c, s, d), Device, seeds));
        if (!config.TieEmbeddings) RegisterModule("lm_head", new Linear(config.DModel, config.VocabSize, false, seeds, Device));
        // Registered last and drawing no seeds, so the presets' initialization is what it always was.
        if (config.EmbeddingNorm)
        {
            RegisterModule("encoder_embed_norm", new LayerNorm(config.DModel, Device, config.LayerNormEps));
            RegisterModule("decoder_embed_norm", new LayerNorm(config.DModel, Device, config.LayerNormEps));
        }
        if (config.LogitsBias) _logitsBias = RegisterParameter("logits_bias", new Parameter("logits_bias", Tensor.Zeros([config.VocabSize], Device)));
        _sinusoids = Tensor.FromArray(Sinusoids(config.MaxPositions, config.DModel), [config.MaxPositions, config.DModel], Device, MemoryCategory.Other);
    }

    Embedding Shared => (Embedding)Child("shared");
    EncoderStack Encoder => (EncoderStack)Child("encoder");
    EncoderStack Decoder => (EncoderStack)Child("decoder");

    /// <summary>PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(...), as in the paper.</summary>
    public static float[] Sinusoids(int positions, int width)
    {
        var pe = new float[positions * width];
        for (int pos = 0; pos < positions; pos++)
            for (int i = 0; i < width; i += 2)
            {
                double angle = pos / Math.Pow(10000, (double)i / width);
                pe[pos * width + i] = (float)Math.Sin(angle);
                if (i + 1 < width) pe[pos * width + i + 1] = (float)Math.Cos(angle);
            }
        return pe;
    }

    /// <summary>Additive key mask [B, L]: 0 for tokens, −1e9 for padding.</summary>
    public Tensor PaddingMask(int[] ids, int batch, int length)
    {
        var mask = new float[batch * length];
        for (int i = 0; i < mask.Length; i++) mask[i] = ids[i] == SubwordTokenizer.Pad ? -1e9f : 0f;
        return Tensor.FromArray(mask, [batch, length], Device, MemoryCategory.Other);
    }

    /// <summary>Word embeddings [..shape, C] of <paramref name="ids"/>: the shared table's rows, × √C unless BERT-style (what an input hook receives).</summary>
    public Variable WordEmbeddings(int[] ids, params int[] shape)
    {
        var x = Shared.Forward(ids, shape);
        if (!Config.ScaleEmbeddings) return x;
        var scaled = F.Scale(x, MathF.Sqrt(Config.DModel));
        x.ReleaseIfUnread();   // neither the lookup's backward nor the scale's reads it
        return scaled;
    }

    /// <summary>
    /// Word embeddings, then <paramref name="hook"/>'s prepended rows (P of them, returned), plus positions (offset for cached
    /// decoding) over all P+L rows, a LayerNorm when configured, then dropout. [B, P+L, C]. <paramref name="side"/> is
    /// "encoder" or "decoder".
    /// </summary>
    (Variable X, int Prefix) Embed(int[] ids, int batch, int length, int positionOffset, string side, InputEmbeddingHook? hook)
    {
        var x = WordEmbeddings(ids, batch, length);
        int prefix = 0;
        if (hook != null) (x, prefix) = hook(x);
        if (positionOffset + prefix + length > Config.MaxPositions)
            throw new ArgumentException($"Sequence reaches position {positionOffset + prefix + length}{(prefix > 0 ? $" ({prefix} of them prompt)" : "")}, beyond the model's {Config.MaxPositions}.");
        int total = prefix + length;
        Variable pos = Config.LearnedPositions
            ? ((Embedding)Child(side + "_positions")).Forward(Enumerable.Range(positionOffset, total).ToArray(), total)
            : Variable.Constant(Ops.Slice(_sinusoids, 0, positionOffset, total));
        var sum = F.Add(x, pos);
        // Each value below is freed once the next is made unless a backward rule reads it (a LayerNorm reads its input):
        // otherwise a training step would hold four [B, L, C] copies of the embeddings until backward.
        x.ReleaseIfUnread();
        pos.ReleaseIfUnread();
        if (Config.EmbeddingNorm) sum = Then(sum, Layer(side + "_embed_norm").Forward(sum));
        return (Training ? Then(sum, F.Dropout(sum, Config.Dropout, _dropoutSeeds.Next(), Training)) : sum, prefix);

        static Variable Then(Variable used, Variable next)
        {
            used.ReleaseIfUnread();
            return next;
        }
    }

    /// <summary>
    /// Every random state the model draws from while training (the dropout seed counters). A checkpoint saves it and a
    /// resume restores it, so the resumed run's dropout masks are the ones the uninterrupted run would have drawn.
    /// </summary>
    public ulong[] RandomState
    {
        get => [_dropoutSeeds.State, _layerSeeds.State];
        set
        {
            if (value is not { Length: 2 }) throw new ArgumentException($"The model's random state is 2 seed counters, got {value?.Length.ToString() ?? "none"}.");
            (_dropoutSeeds.State, _layerSeeds.State) = (value[0], value[1]);
        }
    }

    /// <summary>Runs the encoder: source ids [B, S] → memory [B, S', C] and its key mask [B, S'] (S' includes prompt prefixes).</summary>
    public (Variable Memory, Tensor Mask) Encode(int[] sourceIds, int batch, int sourceLength)
    {
        var (x, prefix) = Embed(sourceIds, batch, sourceLength, 0, "encoder", EncoderInputHook);
        var mask = PaddingMask(sourceIds, batch, sourceLength);
        if (prefix > 0)
        {
            using var zeros = Tensor.Zeros([batch, prefix], Device);
            var widened = Ops.Concat([zeros, mask], 1);
            mask.Dispose();
            mask = widened;
        }
        return (Encoder.RunEncoder(x, mask), mask);
    }

    /// <summary>Decoder hidden states [B, T, C] for target inputs [B, T] (positions start at positionOffset).</summary>
    public Variable Decode(int[] targetIds, int batch, int targetLength, Variable memory, Tensor sourceMask, LayerCache[]? caches = null, int positionOffset = 0)
    {
        // A decoder prompt is prepended once: a cached decoding step after the first finds it in the keys/values, and
        // its positions continue after the prompt's.
        bool continuingFromCache = caches is { Length: > 0 } && caches[0].Self.Keys != null;
        var (y, prefix) = continuingFromCache
            ? Embed(targetIds, batch, targetLength, positionOffset + caches![0].PromptLength, "decoder", null)
            : Embed(targetIds, batch, targetLength, positionOffset, "decoder", DecoderInputHook);
        if (caches is { Length: > 0 } && !continuingFromCache) caches[0].PromptLength = prefix;
        var hidden = Decoder.RunDecoder(y, memory, sourceMask, caches);
        // Only the target positions have logits: the prompt rows are dropped.
        return prefix == 0 ? hidden : F.Slice(hidden, 1, prefix, targetLength);
    }

    /// <summary>Vocabulary logits [B, T, V] (through the tied embedding unless lm_head exists), plus logits_bias if any.</summary>
    public Variable Logits(Variable hidden)
    {
        if (Config.TieEmbeddings) return F.Linear(hidden, Shared.Weight, _logitsBias);
        var logits = ((Linear)Child("lm_head")).Forward(hidden);
        return _logitsBias == null ? logits : F.Add(logits, _logitsBias);
    }

    /// <summary>Teacher-forced, label-smoothed cross-entropy over non-pad target tokens.</summary>
    public Variable Loss(Batch batch, float labelSmoothing)
    {
        var (memory, mask) = Encode(batch.SourceIds, batch.BatchSize, batch.SourceLength);
        using (mask)
        {
            var hidden = Decode(batch.TargetInput, batch.BatchSize, batch.TargetLength, memory, mask);
            var logits = Logits(hidden);
            var flat = F.Reshape(logits, batch.BatchSize * batch.TargetLength, Config.VocabSize);
            // Cross-entropy keeps log-probabilities and reads neither its logits nor (with a frozen output projection) the last
            // hidden state: the log-probabilities are written over the logits when no rule reads those (the unflattened logits
            // let go first, so the flat view holds their storage alone), then both are let go.
            logits.ReleaseIfUnread();
            var loss = F.CrossEntropy(flat, batch.TargetOutput, SubwordTokenizer.Pad, labelSmoothing, logitsUnread: flat.UnreadByBackward);
            flat.ReleaseIfUnread();
            hidden.ReleaseIfUnread();
            return loss;
        }
    }

    /// <summary>
    /// Activation checkpointing on every encoder and decoder layer (Hugging Face's <c>gradient_checkpointing_enable()</c>):
    /// see <see cref="EncoderStack.GradientCheckpointing"/>. Off by default.
    /// </summary>
    public bool GradientCheckpointing
    {
        get => Encoder.GradientCheckpointing;
        set => Encoder.GradientCheckpointing = Decoder.GradientCheckpointing = value;
    }

    /// <summary>Empty decoding caches, one per decoder layer (dispose them after decoding).</summary>
    public LayerCache[] NewCaches() => Enumerable.Range(0, Config.DecoderLayers).Select(_ => new LayerCache()).ToArray();

    /// <summary>Frees the constant sinusoid table and every parameter.</summary>
    public override void Dispose()
    {
        _sinusoids.Dispose();
        base.Dispose();
    }
}

/// <summary>A stack of layers (child "layers"; BERT's "layer") with a final LayerNorm when pre-LN (child "final_norm").</summary>
public sealed class EncoderStack : Module
{
    readonly bool _preNorm;
    readonly string _layerListName;

    /// <summary>Builds <paramref name="count"/> layers with <paramref name="make"/>.</summary>
    /// <param name="c">The model configuration passed to each layer.</param>
    /// <param name="count">Number of layers.</param>
    /// <param name="make">Creates one layer from the configuration, a seed stream and the device.</param>
    /// <param name="device">Where the parameters live.</param>
    /// <param name="seeds">Initializes the layers' weights, then (same stream, so runs repeat) seeds their dropout.</param>
    /// <param name="layerListName">The child name of the layer list ("layers"; BERT's "layer").</param>
    public EncoderStack(TransformerConfig c, int count, Func<TransformerConfig, SeedSequence, Device, Module> make, Device device, SeedSequence seeds,
        string layerListName = "layers")
    {
        _preNorm = c.PreNorm;
        _layerListName = layerListName;
        RegisterModule(layerListName, new LayerList<Module>(Enumerable.Range(0, count).Select(_ => make(c, seeds, device))));
        if (_preNorm) RegisterModule("final_norm", new LayerNorm(c.DModel, device, c.LayerNormEps));
    }

    /// <summary>The layers, in order.</summary>
    public LayerList<Module> Layers => (LayerList<Module>)Child(_layerListName);

    /// <summary>
    /// Activation checkpointing per layer (Hugging Face's <c>gradient_checkpointing</c>): in training, each layer keeps only
    /// its input and output and recomputes the rest during backward (<see cref="ActivationCheckpoint"/>), with the same dropout masks.
    /// Gradients are unchanged; without a graph (evaluation, decoding) it changes nothing.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    internal Variable RunEncoder(Variable x, Tensor mask)
    {
        for (int i = 0; i < Layers.Count; i++)
        {
            var layer = (EncoderLayer)Layers[i];
            x = GradientCheckpointing ? ActivationCheckpoint.Run((v, t, recompute) => layer.Forward(v[0], t[0], recompute), [x], [mask]) : layer.Forward(x, mask);
        }
        return _preNorm ? ((ILayer)Child("final_norm")).Forward(x) : x;
    }

    internal Variable RunDecoder(Variable y, Variable memory, Tensor mask, LayerCache[]? caches)
    {
        for (int i = 0; i < Layers.Count; i++)
        {
            var layer = (DecoderLayer)Layers[i];
            // A KV cache is decoding state the forward changes, so cached decoding never recomputes (it runs without a graph anyway).
            y = GradientCheckpointing && caches == null
                ? ActivationCheckpoint.Run((v, t, recompute) => layer.Forward(v[0], v[1], t[0], recompute: recompute), [y, memory], [mask])
                : layer.Forward(y, memory, mask, caches?[i]);
        }
        return _preNorm ? ((ILayer)Child("final_norm")).Forward(y) : y;
    }
}
