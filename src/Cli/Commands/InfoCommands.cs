using System.CommandLine;
using System.Text.Json;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>devices, params, inspect, rouge: commands that read or count, and train nothing.</summary>
public static class InfoCommands
{
    public static Command Devices()
    {
        var cmd = new Command("devices", "List the devices this machine offers (cpu, ilgpu-cpu, CUDA and OpenCL GPUs).");
        cmd.SetAction(_ => Program.Guard(() =>
        {
            var table = new Table().AddColumns("id", "device");
            foreach (var (id, description) in Device.Discover()) table.AddRow(Markup.Escape(id), Markup.Escape(description));
            AnsiConsole.Write(table);
            AnsiConsole.MarkupLine($"default: [bold]{Markup.Escape(Device.BestAvailable())}[/] (override with --device or NANOLORA_DEVICE)");
            return 0;
        }));
        return cmd;
    }

    public static Command Params()
    {
        var preset = new Option<string>("--preset") { Description = "tiny, small or transformer-base", DefaultValueFactory = _ => "transformer-base" };
        var rank = new Option<int>("--rank") { Description = "LoRA rank r", DefaultValueFactory = _ => 8 }.Range(1, 4096);
        var targets = new Option<string>("--targets") { Description = "comma-separated module names to adapt", DefaultValueFactory = _ => "q_proj,v_proj" };
        var vocab = new Option<int>("--vocab") { Description = "vocabulary size", DefaultValueFactory = _ => 8000 }.Range(5, 10_000_000);
        var cmd = new Command("params", "Count parameters: full fine-tuning vs LoRA, per matrix and for the whole model.") { preset, rank, targets, vocab };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var report = ParameterReport.Build(r.GetValue(preset)!, r.GetValue(rank), r.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), r.GetValue(vocab));
            Console.WriteLine(report);
            return 0;
        }));
        return cmd;
    }

    public static Command Inspect()
    {
        var file = new Argument<string>("file") { Description = "a .safetensors file" };
        var cmd = new Command("inspect", "List the tensors (name, dtype, shape, bytes) and metadata of a safetensors file.") { file };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var st = Safetensors.Read(r.GetValue(file)!);
            var table = new Table().AddColumns("name", "dtype", "shape", "bytes");
            foreach (var e in st.Entries)
                table.AddRow(Markup.Escape(e.Name), Markup.Escape(e.DType), Markup.Escape(ShapeMath.Format(e.Shape)), e.ByteLength.ToString("N0"));
            AnsiConsole.Write(table);
            foreach (var (k, v) in st.Metadata) AnsiConsole.MarkupLine($"[grey]{Markup.Escape(k)}[/] = {Markup.Escape(v.Length > 200 ? v[..200] + "…" : v)}");
            AnsiConsole.MarkupLine($"{st.Entries.Count} tensors, {st.Entries.Sum(e => e.ByteLength):N0} bytes of data");
            return 0;
        }));
        return cmd;
    }

    internal static string[] ReadLines(string path, string what)
    {
        if (Directory.Exists(path)) throw new ArgumentException($"{what} '{path}' is a directory; expected a text file, one example a line.");
        if (!File.Exists(path)) throw new FileNotFoundException($"{what} file '{path}' does not exist.", path);
        return File.ReadAllLines(path);
    }

    public static Command RougeCommand()
    {
        var predictions = new Argument<string>("predictions") { Description = "text file, one prediction a line" };
        var references = new Argument<string>("references") { Description = "text file, one reference a line" };
        var json = new Option<bool>("--json") { Description = "print {\"rouge1\":{\"precision\":P,\"recall\":R,\"f\":F},...}" };
        var stem = new Option<bool>("--stem") { Description = "Porter-stem tokens (rouge_score's use_stemmer)" };
        var cmd = new Command("rouge", "ROUGE-1/2/L/Lsum of predictions against references, averaged over lines.") { predictions, references, json, stem };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var p = ReadLines(r.GetValue(predictions)!, "predictions");
            var refs = ReadLines(r.GetValue(references)!, "references");
            if (p.Length != refs.Length) throw new ArgumentException($"{p.Length} predictions but {refs.Length} references: the files must have one example a line each.");
            WriteRouge(Rouge.Average(p, refs, r.GetValue(stem)), r.GetValue(json));
            return 0;
        }));
        return cmd;
    }

    /// <summary>ROUGE as the rouge and score commands print it: a table, or {"rouge1":{"precision":P,"recall":R,"f":F},...}.</summary>
    internal static void WriteRouge(RougeResult result, bool json)
    {
        if (json)
        {
            static Dictionary<string, double> S(RougeScore s) => new() { ["precision"] = s.Precision, ["recall"] = s.Recall, ["f"] = s.F };
            Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, Dictionary<string, double>>
            {
                ["rouge1"] = S(result.Rouge1), ["rouge2"] = S(result.Rouge2), ["rougeL"] = S(result.RougeL), ["rougeLsum"] = S(result.RougeLsum),
            }));
            return;
        }
        var table = new Table().AddColumns("metric", "precision", "recall", "F");
        foreach (var (name, s) in new[] { ("ROUGE-1", result.Rouge1), ("ROUGE-2", result.Rouge2), ("ROUGE-L", result.RougeL), ("ROUGE-Lsum", result.RougeLsum) })
            table.AddRow(name, s.Precision.ToString("F4"), s.Recall.ToString("F4"), s.F.ToString("F4"));
        AnsiConsole.Write(table);
    }
}
