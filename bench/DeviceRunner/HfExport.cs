using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.DeviceRunner;

/// <summary>
/// A small BERT with random weights for the real-client check. Why not all-MiniLM-L6-v2: its ONNX is 91 MB and even
/// a 16-bit copy is 45 MB, while the device machine takes 64 MiB in all (tree and runner included); and a 16-bit copy
/// would check a rounded model. A model built on the device itself costs no carry, every parameter (LayerNorm γ and
/// β too) gets a non-trivial value, and the path under test is the same: Nanolora's writer, Hugging Face's reader.
/// The real MiniLM weights are held to ONNX Runtime by tests/Transformer/BertTests.cs.
/// </summary>
public static class SmallBert
{
    /// <summary>Accents (stripped by the lower-casing), a character outside the vocabulary ([UNK]), punctuation,
    /// digits, words split by WordPiece, a word spelled letter by letter, and lengths that need padding.</summary>
    public static readonly string[] Texts =
    [
        "Perl module for parsing dates",
        "Python 3 bindings for GTK+ (GObject introspection)",
        "Café résumé naïve ☃ snowman",
        "a tiny tool",
        "Library for reading and writing compressed archives, e.g. tar.gz and zip files",
    ];

    /// <summary>LoRA on every Linear PEFT would also pick for these names (query, key, value and all four dense).</summary>
    public static LoraConfig Adapter => new()
    {
        R = 4, Alpha = 8, TargetModules = ["query", "key", "value", "dense"], TaskType = "FEATURE_EXTRACTION",
    };

    /// <summary>
    /// A WordPiece vocabulary for <paramref name="texts"/>: the five specials, every ASCII letter, digit and punctuation
    /// mark alone and as a ##continuation, words of up to five letters whole, longer ones as a 4-letter stem plus its
    /// ##rest (so WordPiece splits them), except "snowman", which is left to be spelled out letter by letter.
    /// </summary>
    public static string Vocabulary(IEnumerable<string> texts)
    {
        var tokens = new SortedSet<string>(StringComparer.Ordinal);
        foreach (char c in "abcdefghijklmnopqrstuvwxyz0123456789") { tokens.Add(c.ToString()); tokens.Add("##" + c); }
        foreach (char c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") tokens.Add(c.ToString());
        foreach (var text in texts)
        {
            var folded = new StringBuilder();
            foreach (char c in text.ToLowerInvariant().Normalize(NormalizationForm.FormD))
                if (CharUnicodeInfo.GetUnicodeCategory(c) != UnicodeCategory.NonSpacingMark) folded.Append(c is >= 'a' and <= 'z' || char.IsAsciiDigit(c) ? c : ' ');
            foreach (var word in folded.ToString().Split(' ', StringSplitOptions.RemoveEmptyEntries))
            {
                if (word == "snowman") continue;
                if (word.Length <= 5) tokens.Add(word);
                else { tokens.Add(word[..4]); tokens.Add("##" + word[4..]); }
            }
        }
        return string.Join('\n', new[] { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]" }.Concat(tokens)) + "\n";
    }

    /// <summary>BERT of width 64, 4 heads, FFN 128, 64 positions; weights U(±0.2), embeddings U(±1), biases U(±0.1), LayerNorm γ U(0.8, 1.2).</summary>
    public static BertModel Build(Device device, int vocabSize, int layers)
    {
        var config = new BertConfig { VocabSize = vocabSize, HiddenSize = 64, Layers = layers, Heads = 4, IntermediateSize = 128, MaxPositions = 64, Seed = 7 };
        var model = new BertModel(config, device);
        ulong seed = 1000;
        foreach (var (name, p) in model.NamedParameters().OrderBy(x => x.Name, StringComparer.Ordinal))
        {
            var (lo, hi) = name.EndsWith("LayerNorm.weight") ? (0.8f, 1.2f) : name.EndsWith(".bias") ? (-0.1f, 0.1f)
                : name.StartsWith("embeddings.") ? (-1f, 1f) : (-0.2f, 0.2f);
            using var values = TensorRandom.Uniform(p.Data.Shape, lo, hi, seed++, Device.Cpu);
            p.Data.CopyFrom(values.ToArray());
        }
        model.Eval();
        return model;
    }
}

/// <summary>
/// <c>hf-export --device D --out DIR</c>: what bench/device/hf_check.py needs. DIR/model is the small BERT written by
/// the same code as <c>nanolora convert</c> (config.json, model.safetensors, vocab.txt, sentence-transformers modules);
/// DIR/adapter a LoRA adapter in PEFT's layout (AdapterFiles, as <c>finetune --method lora</c> writes it);
/// DIR/nanolora_outputs.json the texts, Nanolora's ids and attention mask, and Nanolora's last_hidden_state,
/// pooler_output and sentence embeddings without and with the adapter, on the cpu backend and on D.
/// </summary>
public static class HfExportMode
{
    public static int Run(RunnerOptions o)
    {
        var device = o.Device();
        var dir = o.Require("out");
        if (Directory.Exists(dir) && Directory.EnumerateFileSystemEntries(dir).Any())
            throw new UsageException($"--out {dir} exists and is not empty; choose a new directory");
        var vocab = SmallBert.Vocabulary(SmallBert.Texts);
        var tokenizer = new BertWordPieceTokenizer(vocab, true, 32);
        var batch = tokenizer.EncodeBatch(SmallBert.Texts);
        var outputs = new JsonObject();
        foreach (var d in device.IsCpu ? [device] : new[] { Device.Cpu, device })
        {
            using var model = SmallBert.Build(d, tokenizer.VocabSize, layers: 2);
            if (d.IsCpu) PretrainedBert.SaveFolder(model, tokenizer, Path.Combine(dir, "model"));
            var perDevice = new JsonObject { ["base"] = Forward(model, batch) };
            var lora = LoraModel.Inject(model, SmallBert.Adapter);
            ModelChecks.RandomizeLoraB(lora, 11);
            if (d.IsCpu) AdapterFiles.Save(lora, "default", Path.Combine(dir, "adapter"));
            perDevice["lora"] = Forward(model, batch);
            outputs[d.Id] = perDevice;
        }
        var results = Results.Start("hf-export", device);
        results["out"] = Path.GetFullPath(dir);
        results["texts"] = new JsonArray(SmallBert.Texts.Select(t => (JsonNode)JsonValue.Create(t)!).ToArray());
        results["batch"] = batch.BatchSize;
        results["length"] = batch.Length;
        results["hidden"] = 64;
        results["input_ids"] = Ints(batch.Ids);
        results["attention_mask"] = Ints(batch.AttentionMask);
        results["token_type_ids"] = Ints(batch.TypeIds);
        results["outputs"] = outputs;
        File.WriteAllText(Path.Combine(dir, "nanolora_outputs.json"), results.ToJsonString());
        Console.WriteLine($"wrote {dir}/model (BERT: 2 layers, width 64, vocabulary {tokenizer.VocabSize}), {dir}/adapter (LoRA r 4 on query, key, value, dense) " +
            $"and {dir}/nanolora_outputs.json ({batch.BatchSize} texts padded to {batch.Length}; outputs on {string.Join(", ", outputs.Select(kv => kv.Key))})");
        results.Remove("outputs");
        Results.Write(o.JsonPath, results, true);
        return 0;
    }

    static JsonObject Forward(BertModel model, EncoderBatch batch)
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var hidden = model.Forward(batch);
        return new JsonObject
        {
            ["last_hidden_state"] = Floats(hidden.Data.ToArray()),
            ["pooler_output"] = Floats(model.Pooler(hidden).Data.ToArray()),
            ["sentence_embedding"] = Floats(BertModel.MeanPoolNormalized(hidden, batch).Data.ToArray()),
        };
    }

    static JsonArray Ints(int[] values) => new(values.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray());
    static JsonArray Floats(float[] values) => new(values.Select(v => (JsonNode)JsonValue.Create(v)!).ToArray());
}
