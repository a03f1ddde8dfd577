using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>The --json documents of docs/cli-json.md: each parses, names its schema, and carries the numbers the command computed.</summary>
public class JsonOutputTests
{
    static JsonElement Parse(string output) => JsonDocument.Parse(output).RootElement;

    static void AllNamesSnakeCase(JsonElement e, string where, params string[] dataObjects)
    {
        if (e.ValueKind == JsonValueKind.Array) foreach (var item in e.EnumerateArray()) AllNamesSnakeCase(item, where + "[]", dataObjects);
        if (e.ValueKind != JsonValueKind.Object) return;
        foreach (var p in e.EnumerateObject())
        {
            if (dataObjects.Contains(p.Name)) continue;   // keys that are data (metadata keys, ROUGE's own names)
            Assert.True(p.Name == p.Name.ToLowerInvariant(), $"{where}.{p.Name} is not snake_case");
            AllNamesSnakeCase(p.Value, where + "." + p.Name, dataObjects);
        }
    }

    [Fact]
    public void DevicesJsonListsWhatDeviceDiscoverFinds()
    {
        var (code, output, err) = CliTests.Run("devices", "--json");
        Assert.True(code == 0, err);
        var root = Parse(output);
        Assert.Equal("nanolora.devices/1", root.GetProperty("schema").GetString());
        Assert.Equal(Device.BestAvailable(), root.GetProperty("default").GetString());
        Assert.Equal(Device.Discover().Select(d => d.Id), root.GetProperty("devices").EnumerateArray().Select(d => d.GetProperty("id").GetString()));
        AllNamesSnakeCase(root, "devices");
    }

    [Fact]
    public void ParamsJsonCountsTheBuiltModelAgainstTheBase()
    {
        var (code, output, err) = CliTests.Run("params", "--preset", "tiny", "--json");
        Assert.True(code == 0, err);
        var root = Parse(output);
        Assert.Equal("nanolora.params/1", root.GetProperty("schema").GetString());
        using var model = new Seq2SeqTransformer(TransformerConfig.Preset("tiny", 8000), Device.Cpu);
        long total = model.ParameterCount();
        var lora = root.GetProperty("lora");
        long trainable = LoraModel.Inject(model, new LoraConfig()).Report().Trainable;
        Assert.Equal(total, root.GetProperty("parameters").GetInt64());
        Assert.Equal(trainable, lora.GetProperty("trainable_parameters").GetInt64());
        Assert.Equal(100.0 * trainable / total, lora.GetProperty("trainable_percent").GetDouble(), 9);   // of the base, adapters excluded
        Assert.Equal(LoraDefaults.TargetModules, lora.GetProperty("target_modules").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal(lora.GetProperty("adapted_layers").GetInt32(), lora.GetProperty("layers").GetArrayLength());
        Assert.Equal(4096, root.GetProperty("per_head_projection").GetProperty("full").GetInt64());   // tiny: 128×32
        AllNamesSnakeCase(root, "params");
    }

    [Fact]
    public void InspectJsonHasEveryTensorAndTheWholeMetadata()
    {
        var file = Path.Combine(Directory.CreateTempSubdirectory().FullName, "m.safetensors");
        var long_ = new string('y', 1000);
        Safetensors.Write(file, [("a.weight", [2, 3], new float[6]), ("b.bias", [4], new float[4])], new Dictionary<string, string> { ["Config"] = long_ });
        var (code, output, err) = CliTests.Run("inspect", file, "--json");
        Assert.True(code == 0, err);
        var root = Parse(output);
        Assert.Equal("nanolora.inspect/1", root.GetProperty("schema").GetString());
        Assert.Equal(2, root.GetProperty("tensor_count").GetInt32());
        Assert.Equal(40, root.GetProperty("data_bytes").GetInt64());
        var a = root.GetProperty("tensors")[0];
        Assert.Equal(("a.weight", "F32", 24L), (a.GetProperty("name").GetString(), a.GetProperty("dtype").GetString(), a.GetProperty("bytes").GetInt64()));
        Assert.Equal([2, 3], a.GetProperty("shape").EnumerateArray().Select(x => x.GetInt32()));
        Assert.Equal(long_, root.GetProperty("metadata").GetProperty("Config").GetString());   // keys kept as written, values whole
        AllNamesSnakeCase(root, "inspect", "metadata");
    }

    [Fact]
    public void EvalJsonScoresWhatPredictionsHold()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var predictions = Path.Combine(dir, "p.txt");
        var (code, output, err) = CliTests.Run("eval", "--model", CliTests.ShippedBase(), "--limit", "4", "--device", "cpu", "--json", "--predictions", predictions);
        Assert.True(code == 0, err);
        var root = Parse(output);
        Assert.Equal("nanolora.eval/1", root.GetProperty("schema").GetString());
        Assert.Equal(4, root.GetProperty("examples").GetInt32());
        Assert.Equal("test", root.GetProperty("split").GetString());
        Assert.Equal(JsonValueKind.Null, root.GetProperty("adapter").ValueKind);
        var examples = TaskData.Spread(TaskData.Load("debian").Test, 4);
        var expected = Rouge.Average(File.ReadAllLines(predictions), examples.Select(e => e.Target).ToList());
        Assert.Equal(expected.Rouge1.F, root.GetProperty("rouge").GetProperty("rouge1").GetProperty("f").GetDouble(), 12);
        Assert.Equal(Evaluator.LeadBaseline(examples).Rouge.RougeL.F, root.GetProperty("lead8").GetProperty("rougeL").GetProperty("f").GetDouble(), 12);
        AllNamesSnakeCase(root, "eval", "rouge", "lead8");
    }

    [Fact]
    public void GenerateJsonIsOneObjectALine()
    {
        var (code, output, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--max-length", "3", "--json", "--text", "a", "b c");
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        var second = Parse(lines[1]);
        Assert.Equal(("nanolora.generate/1", "b c", false), (second.GetProperty("schema").GetString(), second.GetProperty("source").GetString(), second.GetProperty("truncated").GetBoolean()));
        Assert.Equal(second.GetProperty("output").GetString(), second.GetProperty("output").GetString()!.Trim());
    }

    [Fact]
    public void FinetuneJsonSummarizesTheRun()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (code, output, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "2", "--batch-size", "2", "--train-examples", "8",
            "--device", "cpu", "--out", dir, "--overwrite", "--json");
        Assert.True(code == 0, err);
        var root = Parse(output);
        Assert.Equal("nanolora.train/1", root.GetProperty("schema").GetString());
        Assert.Equal(("finetune", "lora", 2), (root.GetProperty("command").GetString(), root.GetProperty("method").GetString(), root.GetProperty("steps_run").GetInt32()));
        long trainable = root.GetProperty("trainable_parameters").GetInt64(), baseParameters = root.GetProperty("base_parameters").GetInt64();
        var (model, _) = Checkpoint.Load(CliTests.ShippedBase());
        using (model) Assert.Equal(model.ParameterCount(), baseParameters);
        Assert.Equal(100.0 * trainable / baseParameters, root.GetProperty("trainable_percent").GetDouble(), 9);
        Assert.True(root.GetProperty("memory").GetProperty("peak_bytes_by_category").TryGetProperty("optimizer_state", out _));
        Assert.True(File.Exists(Path.Combine(dir, AdapterFiles.ConfigFile)));
        AllNamesSnakeCase(root, "finetune");
    }
}
