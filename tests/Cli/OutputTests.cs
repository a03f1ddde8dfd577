using Nanolora.Cli;
using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>Result tables in pipes and on terminals, progress on stderr, and the options' shared defaults and names.</summary>
public class OutputTests
{
    static readonly string LongName = "encoder.layers.0.self_attn.q_proj.base_layer.weight_with_a_deliberately_long_suffix_to_exceed_eighty_columns";

    static TextTable Sample() => new TextTable(new TextColumn("name"), new TextColumn("bytes", AlignRight: true))
        .AddRow(LongName, "1,024").AddRow("b", null);

    [Fact]
    public void PlainTablesKeepEveryRowOnOneLineWhateverItsWidth()
    {
        var lines = Sample().ToPlainText().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(3, lines.Length);   // header + 2 rows, never wrapped
        Assert.StartsWith("name", lines[0]);
        Assert.Contains(LongName, lines[1]);
        Assert.EndsWith("1,024", lines[1]);
        Assert.EndsWith(TextTable.NotMeasured, lines[2]);        // a null cell reads "—", not 0
        Assert.Equal(lines[1].Length, lines[2].Length);          // right-aligned numbers end in the same column
        Assert.All(lines, l => Assert.Equal(l, l.TrimEnd()));
    }

    [Fact]
    public void TerminalTablesTakeTheWidthColumnsAsks()
    {
        Assert.Equal(200, Terminal.RequestedColumns("200"));
        Assert.Null(Terminal.RequestedColumns("wide"));
        Assert.Null(Terminal.RequestedColumns("0"));
        var wide = new StringWriter();
        Terminal.Write(Sample(), wide, terminal: true, width: 200);
        Assert.Contains(LongName, wide.ToString());   // 200 columns hold the name whole
        var narrow = new StringWriter();
        Terminal.Write(Sample(), narrow, terminal: true, width: 60);
        Assert.DoesNotContain(LongName, narrow.ToString());   // the terminal table wraps: this is what pipes must not get
    }

    [Fact]
    public void InspectInAPipeListsEveryTensorNameWhole()
    {
        Assert.True(Console.IsOutputRedirected, "the test host's stdout is a pipe, as `nanolora inspect | grep` has");
        var dir = Directory.CreateTempSubdirectory().FullName;
        var file = Path.Combine(dir, "adapter_model.safetensors");
        var names = Enumerable.Range(0, 24).Select(i => $"base_model.model.encoder.layers.{i}.self_attn.q_proj.lora_A.weight").ToList();
        Safetensors.Write(file, names.Select(n => (n, new[] { 8, 128 }, new float[8 * 128])), new Dictionary<string, string> { ["config"] = new string('x', 500) });
        var (code, output, err) = CliTests.Run("inspect", file);
        Assert.True(code == 0, err);
        var lines = output.Split('\n');
        Assert.Equal(24, lines.Count(l => l.Contains("q_proj")));
        foreach (var n in names) Assert.Contains(lines, l => l.StartsWith(n + " "));
        Assert.Contains("config = " + new string('x', 500), output);   // metadata whole in a pipe
    }

    [Fact]
    public void EvalWritesOnlyResultsToStdout()
    {
        var (code, output, err) = CliTests.Run("eval", "--model", CliTests.ShippedBase(), "--limit", "3", "--device", "cpu");
        Assert.True(code == 0, err);
        Assert.DoesNotContain("evaluating", output);
        Assert.Contains("evaluating", err);
        Assert.Contains("ROUGE-1", output);
        Assert.Contains("3 test examples, greedy", output);
    }

    [Fact]
    public void GenerateStartsWithAWordAndWarnsWhenItCutsASource()
    {
        string longSource = string.Join(' ', Enumerable.Repeat("library for parsing dates and times", 40));
        var (code, output, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--max-length", "4", "--text", "Perl date module", longSource);
        Assert.True(code == 0, err);
        var lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.All(lines, l => Assert.False(char.IsWhiteSpace(l[0]), $"'{l}' starts with a space"));
        Assert.DoesNotContain("source 1 ", err);
        Assert.Contains("warning: source 2 is longer than 96 tokens", err);
    }

    [Fact]
    public void OneSetOfLoraDefaultsReachesTheLibraryAndTheCommands()
    {
        var config = new LoraConfig();
        Assert.Equal((LoraDefaults.Rank, LoraDefaults.Alpha, LoraDefaults.TargetModules), (config.R, config.Alpha, config.TargetModules));
        Assert.Equal(LoraDefaults.TargetModules, new FineTuneOptions().Targets);
        Assert.Equal(LoraDefaults.LearningRate, new FineTuneOptions().LearningRate);
        var (_, help, _) = CliTests.Run("finetune", "--help");
        string Line(string option) => help.Split('\n').Single(l => l.TrimStart().StartsWith(option));
        Assert.Contains($"[default: {LoraDefaults.TargetList}]", Line("--targets"));
        Assert.Contains($"[default: {LoraDefaults.Alpha:G}]", Line("--alpha"));
        Assert.Contains($"[default: {LoraDefaults.Rank}]", Line("--rank"));
        Assert.Contains($"{LoraDefaults.LearningRate:G} for lora", Line("--lr"));
        var (_, paramsHelp, _) = CliTests.Run("params", "--help");
        Assert.Contains($"[default: {LoraDefaults.TargetList}]", paramsHelp);
        // The README's recipe is the same one.
        var readme = File.ReadAllText(Path.Combine(Path.GetDirectoryName(Path.GetDirectoryName(DataPaths.Find("debian-descriptions.jsonl.gz")))!, "README.md"));
        Assert.Contains($"r={LoraDefaults.Rank}, alpha {LoraDefaults.Alpha:G}", readme);
    }

    [Fact]
    public void ModelAndBaseNameOneOptionAndDeviceIsOnlyWhereSomethingComputes()
    {
        var missing = Path.Combine(Path.GetTempPath(), "nanolora-no-such-model");
        foreach (var name in new[] { "--model", "--base" })
        {
            var (code, _, err) = CliTests.Run("eval", name, missing, "--limit", "1");
            Assert.Equal(1, code);
            Assert.Contains(missing, err);   // the option took the path, under either name
        }
        var (paramsCode, _, paramsErr) = CliTests.Run("params", "--device", "cpu");
        Assert.Equal(1, paramsCode);
        Assert.Contains("--device", paramsErr);
        var (_, help, _) = CliTests.Run("finetune", "--help");
        Assert.Contains("--device", help);
    }

    [Fact]
    public void ABadChoiceIsOneErrorLineThatListsTheChoices()
    {
        var (code, output, err) = CliTests.Run("eval", "--split", "dev");
        Assert.Equal(1, code);
        Assert.Equal("", output);
        var line = Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal("error: --split is 'dev'; allowed: one of train, validation, test.", line);
        (_, _, err) = CliTests.Run("finetune", "--task", "nope", "--out", "x");
        Assert.Contains("one of " + string.Join(", ", TaskData.Names), err);
        (code, _, err) = CliTests.Run("finetune", "--dropout", "1", "--out", "x");
        Assert.Equal(1, code);
        Assert.Equal("error: --dropout is 1; allowed: a number ≥ 0 and < 1.", Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
    }

    [Fact]
    public void TheShippedBaseResolvesBesideTheProgram()
    {
        var resolved = ShippedPaths.Resolve(ShippedPaths.BaseModel);
        Assert.True(File.Exists(Path.Combine(resolved, Checkpoint.WeightsFile)), resolved);
        Assert.Equal("some/other/dir", ShippedPaths.Resolve("some/other/dir"));   // only the shipped default is looked up
    }
}
