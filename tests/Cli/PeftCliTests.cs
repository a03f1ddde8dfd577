using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>finetune --method for the PEFT methods beside LoRA, and eval/generate --peft loading what it saved (2 steps on models/base-tiny).</summary>
public class PeftCliTests
{
    static readonly string[] Quick = ["--steps", "2", "--batch-size", "2", "--train-examples", "8", "--device", "cpu"];

    static string FineTune(string method, params string[] extra)
    {
        var dir = Path.Combine(Directory.CreateTempSubdirectory().FullName, method);
        var (code, _, err) = CliTests.Run(["finetune", "--method", method, "--base", CliTests.ShippedBase(), .. Quick, .. extra, "--out", dir]);
        Assert.True(code == 0, err);
        return dir;
    }

    public static TheoryData<string, string[]> Methods => new()
    {
        { "bitfit", [] }, { "selective", ["--layers", "1"] }, { "ln-tuning", [] }, { "ia3", [] },
        { "adapter-houlsby", ["--reduction-factor", "8"] }, { "adapter-pfeiffer", [] }, { "prompt-tuning", [] }, { "prefix-tuning", [] },
    };

    [Theory]
    [MemberData(nameof(Methods))]
    public void FineTuneTrainsOnlyTheMethodsParametersAndSavesThemForEvalAndGenerate(string method, string[] extra)
    {
        var dir = Path.Combine(Directory.CreateTempSubdirectory().FullName, method);
        var (code, output, err) = CliTests.Run(["finetune", "--method", method, "--base", CliTests.ShippedBase(), .. Quick, .. extra, "--out", dir, "--json"]);
        Assert.True(code == 0, err);
        var root = JsonDocument.Parse(output).RootElement;
        Assert.Equal("nanolora.train/1", root.GetProperty("schema").GetString());
        Assert.Equal(method, root.GetProperty("method").GetString());

        // The count the method itself reports on a fresh copy of the base, with the CLI's knobs.
        var recipe = PeftRecipes.Find(method)!;
        var (fresh, _) = Checkpoint.Load(CliTests.ShippedBase(), Device.Get("cpu"));
        using var freshModel = fresh;
        long baseParameters = fresh.ParameterCount();
        var options = new FineTuneOptions { ReductionFactor = method == "adapter-houlsby" ? 8 : PeftRecipes.DefaultReductionFactor, Layers = method == "selective" ? [1] : null };
        var injected = recipe.Inject(fresh, options);
        long expected = injected.Report().Trainable;
        Assert.InRange(expected, 1, baseParameters / 2);
        Assert.Equal(expected, root.GetProperty("trainable_parameters").GetInt64());
        Assert.Equal(baseParameters, root.GetProperty("base_parameters").GetInt64());
        Assert.Equal(expected * 2 * sizeof(float), root.GetProperty("optimizer_state_bytes").GetInt64());   // AdamW's two moments, only for them

        using (var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile))))
            Assert.Equal(recipe.PeftType, config.RootElement.GetProperty("peft_type").GetString());

        // What was saved is the trained instance: loaded, it differs from the fresh one in some value.
        var (loadedModel, _) = Checkpoint.Load(CliTests.ShippedBase(), Device.Get("cpu"));
        using (loadedModel)
        {
            var loaded = PeftRecipes.Load(loadedModel, dir, "--peft");
            var trained = loaded.InstanceParameters("default").ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
            var start = injected.InstanceParameters("default").ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
            Assert.Equal(start.Keys.Order(), trained.Keys.Order());
            Assert.Contains(start.Keys, k => !start[k].SequenceEqual(trained[k]));
        }

        (code, output, err) = CliTests.Run("eval", "--model", CliTests.ShippedBase(), "--peft", dir, "--limit", "2", "--device", "cpu", "--json");
        Assert.True(code == 0, err);
        var eval = JsonDocument.Parse(output).RootElement;
        Assert.Equal(dir, eval.GetProperty("adapter").GetString());
        Assert.Equal(2, eval.GetProperty("examples").GetInt32());
        (code, output, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--peft", dir, "--text", "a tool to list files", "--max-length", "4", "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.Single(output.TrimEnd('\n').Split('\n'));   // one line per source (an untrained prompt may well produce an empty one)
    }

    [Fact]
    public void PeftLoadsALoraAdapterAsAdapterDoes()
    {
        var dir = Path.Combine(Directory.CreateTempSubdirectory().FullName, "lora");
        var (code, _, err) = CliTests.Run(["finetune", "--method", "lora", "--base", CliTests.ShippedBase(), .. Quick, "--out", dir]);
        Assert.True(code == 0, err);
        var viaAdapter = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--adapter", dir, "--text", "a tool to list files", "--max-length", "6", "--device", "cpu");
        var viaPeft = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--peft", dir, "--text", "a tool to list files", "--max-length", "6", "--device", "cpu");
        Assert.True(viaPeft.Code == 0, viaPeft.Err);
        Assert.Equal(viaAdapter.Out, viaPeft.Out);
    }

    static void OneErrorLine(string[] args, params string[] expected)
    {
        var (code, output, err) = CliTests.Run(args);
        Assert.Equal(1, code);
        var lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries).Where(l => l.StartsWith("error:")).ToList();
        Assert.Single(lines);
        foreach (var e in expected) Assert.Contains(e, lines[0]);
        Assert.DoesNotContain("   at ", err + output);
    }

    [Fact]
    public void KnobsOfAnotherMethodAndMissingLayersAreRefusedNamingTheOption()
    {
        string[] common = ["finetune", "--base", CliTests.ShippedBase(), .. Quick];
        string Out() => Path.Combine(Directory.CreateTempSubdirectory().FullName, "out");
        OneErrorLine([.. common, "--method", "ia3", "--reduction-factor", "8", "--out", Out()], "--reduction-factor", "adapter-houlsby", "ia3");
        OneErrorLine([.. common, "--method", "lora", "--layers", "0", "--out", Out()], "--layers", "selective", "lora");
        OneErrorLine([.. common, "--method", "selective", "--out", Out()], "--layers");
        OneErrorLine([.. common, "--method", "selective", "--layers", "0,9", "--out", Out()], "--layers", "layer 9", "0 to 1");
        OneErrorLine([.. common, "--method", "bitfit", "--layers", "0,x", "--out", Out()], "--layers", "'x'");
        OneErrorLine([.. common, "--method", "selective", "--layers-pattern", "decoder.layers", "--out", Out()], "--layers-pattern", "--layers");
        OneErrorLine([.. common, "--method", "selective", "--layers", "0", "--layers-pattern", "middle.layers", "--out", Out()], "selects no parameter");
    }

    // --layers-pattern picks one stack, as PEFT's layers_pattern: decoder.layers 0 trains that layer of the decoder alone,
    // and the saved file says so and loads back to the same selection.
    [Fact]
    public void LayersPatternPicksOneStack()
    {
        var dir = FineTune("selective", "--layers", "0", "--layers-pattern", "decoder.layers");
        var names = Nanolora.Transformer.Safetensors.Read(Path.Combine(dir, AdapterFiles.WeightsFile)).Entries.Select(e => e.Name).ToList();
        Assert.NotEmpty(names);
        Assert.All(names, n => Assert.StartsWith("base_model.model.decoder.layers.0.", n));
        Assert.Contains("base_model.model.decoder.layers.0.cross_attn.q_proj.weight", names);
        Assert.Contains("\"decoder.layers\"", File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)));
        var (model, _) = Checkpoint.Load(CliTests.ShippedBase(), Device.Get("cpu"));
        using (model)
            Assert.All(PeftRecipes.Load(model, dir, "--peft").InstanceParameters("default"), p => Assert.StartsWith("decoder.layers.0.", p.Name));
    }

    [Fact]
    public void AdapterLoadsOneNonLoraFolderAsPeftDoesAndPeftRefusesAnUnknownType()
    {
        var ia3 = FineTune("ia3");
        // Alone, --adapter dispatches on the folder's peft_type like --peft; beside a LoRA folder it is refused, naming both ways.
        var viaAdapter = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--adapter", ia3, "--text", "a tool to list files", "--max-length", "6", "--device", "cpu");
        var viaPeft = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--peft", ia3, "--text", "a tool to list files", "--max-length", "6", "--device", "cpu");
        Assert.True(viaAdapter.Code == 0, viaAdapter.Err);
        Assert.Equal(viaPeft.Out, viaAdapter.Out);
        var lora = FineTune("lora");
        OneErrorLine(["eval", "--model", CliTests.ShippedBase(), "--adapter", $"a={lora}", "--adapter", $"b={ia3}", "--limit", "1", "--device", "cpu"], "IA3", "must all be LoRA", $"--peft {ia3}");
        OneErrorLine(["eval", "--model", CliTests.ShippedBase(), "--adapter", ia3, "--peft", ia3, "--limit", "1", "--device", "cpu"], "--peft", "--adapter");
        var odd = Directory.CreateTempSubdirectory().FullName;
        File.WriteAllText(Path.Combine(odd, AdapterFiles.ConfigFile), "{\"peft_type\": \"VERA\"}");
        OneErrorLine(["generate", "--model", CliTests.ShippedBase(), "--peft", odd, "--text", "x", "--device", "cpu"], "--peft", "\"VERA\"", "IA3");
    }
}
