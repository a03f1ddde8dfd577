using System.Text.Json;

namespace Nanolora.Tests.Cli;

/// <summary>eval and generate with several adapters on one base: generate per input line (mixed batches), eval each in turn.</summary>
public class MultiAdapterCliTests
{
    /// <summary>An adapter on the shipped base with B large enough to change greedy outputs.</summary>
    static string SavedAdapter(int rank, int seed, string[] targets) => MergeCliTests.SavedAdapter(rank, seed, targets, scale: 0.6f);

    static string[] Generate(params string[] args)
    {
        var (code, output, err) = CliTests.Run(["generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--max-length", "6", .. args]);
        Assert.True(code == 0, err);
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
    }

    [Fact]
    public void EachLineIsAnsweredByItsOwnAdapterAsIfAlone()
    {
        string one = SavedAdapter(2, 10, ["q_proj", "v_proj"]), two = SavedAdapter(4, 30, ["fc1", "fc2", "o_proj"]);
        string[] sources = ["Perl module for parsing dates", "library for reading PNG images", "command-line tool to compress files", "fonts for the X window system"];
        string[] names = ["one", "two", "__base__", "one"];
        var lines = sources.Select((s, i) => $"{names[i]}\t{s}").ToArray();
        var mixed = Generate(["--adapter", $"one={one}", "--adapter", $"two={two}", "--batch-size", "3", "--text", .. lines]);
        Assert.Equal(sources.Length, mixed.Length);
        var alone = new Dictionary<string, string[]>
        {
            ["one"] = Generate(["--adapter", one, "--text", .. sources]),
            ["two"] = Generate(["--adapter", two, "--text", .. sources]),
            ["__base__"] = Generate(["--text", .. sources]),
        };
        for (int i = 0; i < sources.Length; i++) Assert.Equal(alone[names[i]][i], mixed[i]);
        // The adapters change the outputs, so picking the wrong one per line would be seen.
        Assert.NotEqual(alone["one"], alone["two"]);
        Assert.NotEqual(alone["one"], alone["__base__"]);

        var json = CliTests.Run(["generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--max-length", "6", "--adapter", $"one={one}", "--adapter", $"two={two}", "--json", "--text", .. lines]);
        var first = JsonDocument.Parse(json.Out.Split('\n')[0]).RootElement;
        Assert.Equal("one", first.GetProperty("adapter").GetString());
        Assert.Equal(sources[0], first.GetProperty("source").GetString());
    }

    [Fact]
    public void BadPerLineInputAndNamesGetOneClearLine()
    {
        string one = SavedAdapter(2, 10, ["q_proj"]), two = SavedAdapter(2, 11, ["v_proj"]);
        var (code, _, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--adapter", $"a={one}", "--adapter", $"b={two}", "--text", "c\tsome text");
        Assert.Equal(1, code);
        Assert.Contains("input line 1: no adapter 'c'; expected one of a, b or __base__", err);
        (code, _, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--adapter", $"a={one}", "--adapter", $"b={two}", "--text", "no tab here");
        Assert.Equal(1, code);
        Assert.Contains("expected ADAPTER<TAB>SOURCE", err);
        (code, _, err) = CliTests.Run("generate", "--model", CliTests.ShippedBase(), "--device", "cpu", "--adapter", $"a={one}", "--adapter", $"a={two}", "--text", "x");
        Assert.Equal(1, code);
        Assert.Contains("the name 'a' is given twice", err);
    }

    [Fact]
    public void EvalScoresEachAdapterInTurn()
    {
        string one = SavedAdapter(2, 10, ["q_proj", "v_proj"]), two = SavedAdapter(4, 30, ["fc1", "fc2"]);
        var (code, output, err) = CliTests.Run("eval", "--model", CliTests.ShippedBase(), "--device", "cpu", "--limit", "3", "--adapter", $"one={one}", "--adapter", $"two={two}", "--json");
        Assert.True(code == 0, err);
        var docs = output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal([one, two], docs.Select(d => d.GetProperty("adapter").GetString()));
        foreach (var (dir, doc) in new[] { one, two }.Zip(docs))
        {
            var (c, single, e) = CliTests.Run("eval", "--model", CliTests.ShippedBase(), "--device", "cpu", "--limit", "3", "--adapter", dir, "--json");
            Assert.True(c == 0, e);
            var alone = JsonDocument.Parse(single).RootElement;
            Assert.Equal(alone.GetProperty("rouge").GetProperty("rouge1").GetProperty("f").GetDouble(), doc.GetProperty("rouge").GetProperty("rouge1").GetProperty("f").GetDouble(), 12);
        }
    }
}
