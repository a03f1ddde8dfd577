using System.CommandLine;
using System.Text.Json;
using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>devices, params, inspect, rouge: commands that read or count, and train nothing.</summary>
public static class InfoCommands
{
    /// <summary>The <c>devices</c> command: lists the devices this machine offers.</summary>
    public static Command Devices()
    {
        var json = JsonOutput.Option("nanolora.devices/1");
        var cmd = new Command("devices", "List the devices this machine offers (cpu, ilgpu-cpu, CUDA and OpenCL GPUs).") { json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var found = Device.Discover().ToList();
            string best = Device.BestAvailable();
            if (r.GetValue(json))
            {
                JsonOutput.Write(new DevicesJson("nanolora.devices/1", best, found.Select(d => new DeviceJson(d.Id, d.Description)).ToList()));
                return 0;
            }
            var table = new TextTable(new TextColumn("id"), new TextColumn("device"));
            foreach (var (id, description) in found) table.AddRow(id, description);
            Terminal.Write(table);
            Console.WriteLine($"default: {best} (override with --device or NANOLORA_DEVICE)");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The <c>params</c> command: parameter counts of full fine-tuning vs LoRA.</summary>
    public static Command Params()
    {
        var preset = new Option<string>("--preset") { Description = "model size preset", DefaultValueFactory = _ => "transformer-base" }
            .Choices(TransformerConfig.PresetNames);
        var rank = new Option<int>("--rank") { Description = "LoRA rank r (A is r × in, B is out × r)", DefaultValueFactory = _ => LoraDefaults.Rank }.Range(1, 4096);
        var targets = new Option<string>("--targets") { Description = "comma-separated module names to adapt (name suffixes)", DefaultValueFactory = _ => LoraDefaults.TargetList };
        var vocab = new Option<int>("--vocab") { Description = "vocabulary size, in tokens", DefaultValueFactory = _ => 8000 }.Range(5, 10_000_000);
        var json = JsonOutput.Option("nanolora.params/1");
        var cmd = new Command("params", "Count parameters: full fine-tuning vs LoRA, per matrix and for the whole model.") { preset, rank, targets, vocab, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var report = ParameterReport.Build(r.GetValue(preset)!, r.GetValue(rank), r.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries), r.GetValue(vocab));
            if (r.GetValue(json)) JsonOutput.Write(report);
            else Console.WriteLine(report.ToText());
            return 0;
        }));
        return cmd;
    }

    /// <summary>The <c>inspect</c> command: the tensors and metadata of a safetensors file.</summary>
    public static Command Inspect()
    {
        var file = new Argument<string>("file") { Description = "a .safetensors file" };
        var json = JsonOutput.Option("nanolora.inspect/1");
        var cmd = new Command("inspect", "List the tensors (name, dtype, shape, bytes) and metadata of a safetensors file.") { file, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var path = r.GetValue(file)!;
            var st = Safetensors.Read(path);
            long dataBytes = st.Entries.Sum(e => e.ByteLength);
            if (r.GetValue(json))
            {
                JsonOutput.Write(new InspectJson("nanolora.inspect/1", path, st.Entries.Count, dataBytes,
                    st.Entries.Select(e => new TensorJson(e.Name, e.DType, e.Shape, e.ByteLength)).ToList(), st.Metadata));
                return 0;
            }
            var table = new TextTable(new TextColumn("name"), new TextColumn("dtype"), new TextColumn("shape"), new TextColumn("bytes", AlignRight: true));
            foreach (var e in st.Entries) table.AddRow(e.Name, e.DType, ShapeMath.Format(e.Shape), e.ByteLength.ToString("N0"));
            Terminal.Write(table);
            // A long value (a config) is cut on a terminal only; a pipe gets it whole.
            foreach (var (k, v) in st.Metadata)
                Console.WriteLine($"{k} = {(Terminal.StdoutIsTerminal && v.Length > 200 ? v[..200] + $"… ({v.Length:N0} characters; --json has it whole)" : v)}");
            Console.WriteLine($"{st.Entries.Count} tensors, {dataBytes:N0} bytes of data");
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

    /// <summary>The <c>rouge</c> command: ROUGE of a predictions file against a references file.</summary>
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
        var table = new TextTable(new TextColumn("metric"), new TextColumn("precision", true), new TextColumn("recall", true), new TextColumn("F", true));
        foreach (var (name, s) in new[] { ("ROUGE-1", result.Rouge1), ("ROUGE-2", result.Rouge2), ("ROUGE-L", result.RougeL), ("ROUGE-Lsum", result.RougeLsum) })
            table.AddRow(name, s.Precision.ToString("F4"), s.Recall.ToString("F4"), s.F.ToString("F4"));
        Terminal.Write(table);
    }
}

/// <summary>devices --json (schema nanolora.devices/1).</summary>
internal sealed record DevicesJson(string Schema, string Default, IReadOnlyList<DeviceJson> Devices);

/// <summary>One device: the id --device takes, and what it is.</summary>
internal sealed record DeviceJson(string Id, string Description);

/// <summary>inspect --json (schema nanolora.inspect/1): every tensor, and the metadata whole.</summary>
internal sealed record InspectJson(string Schema, string File, int TensorCount, long DataBytes, IReadOnlyList<TensorJson> Tensors, IReadOnlyDictionary<string, string> Metadata);

/// <summary>One tensor of a safetensors file.</summary>
internal sealed record TensorJson(string Name, string Dtype, IReadOnlyList<int> Shape, long Bytes);
