using System.Text.Json;
using Nanolora.Cli;
using Nanolora.Transformer;
using static Nanolora.Tests.Cli.CliTests;

namespace Nanolora.Tests.Cli;

/// <summary>The score command and the translation tasks as the finetune and eval commands see them.</summary>
public class ScoreCliTests
{
    static (string Hyps, string Refs) Files(string[] hyps, string[] refs)
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        string h = Path.Combine(dir, "hyps.txt"), r = Path.Combine(dir, "refs.txt");
        File.WriteAllLines(h, hyps);
        File.WriteAllLines(r, refs);
        return (h, r);
    }

    // sacrebleu's README example with its first reference stream. The values themselves are checked against sacrebleu
    // in SacrebleuAgreementTests; here the command must print what the library computes.
    static readonly string[] Hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."];
    static readonly string[] Refs = ["The dog bit the man.", "It was not unexpected.", "The man bit him first."];

    [Fact]
    public void ChrfAndBleuJsonCarryTheLibraryScores()
    {
        var (h, r) = Files(Hyps, Refs);
        var (code, output, err) = Run("score", h, r, "--metric", "chrf", "--json");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal("chrF2", doc.RootElement.GetProperty("name").GetString());
            Assert.Equal(Chrf.Corpus(Hyps, Refs), doc.RootElement.GetProperty("score").GetDouble(), 12);
        }
        (code, output, err) = Run("score", h, r, "--metric", "chrf++", "--json");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal("chrF2++", doc.RootElement.GetProperty("name").GetString());
            Assert.Equal(Chrf.Corpus(Hyps, Refs, ChrfOptions.PlusPlus), doc.RootElement.GetProperty("score").GetDouble(), 12);
        }
        (code, output, err) = Run("score", h, r, "--metric", "bleu", "--json");
        Assert.True(code == 0, err);
        var bleu = Bleu.Corpus(Hyps, Refs);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal(bleu.Score, doc.RootElement.GetProperty("score").GetDouble(), 12);
            Assert.Equal(bleu.Counts, doc.RootElement.GetProperty("counts").EnumerateArray().Select(e => e.GetDouble()));
            Assert.Equal(bleu.SysLen, doc.RootElement.GetProperty("sys_len").GetInt64());
        }
        (code, output, err) = Run("score", h, r, "--metric", "bleu");
        Assert.True(code == 0, err);
        Assert.StartsWith($"BLEU = {bleu.Score:F2} ", output);   // sacrebleu's one-line format
    }

    [Fact]
    public void UncasedAndRougeVariants()
    {
        var (h, r) = Files(["bibliotheque pour ecrans"], ["Bibliothèque pour écrans"]);
        var (code, output, err) = Run("score", h, r, "--metric", "chrf", "--uncased", "--json");
        Assert.True(code == 0, err);
        using (var doc = JsonDocument.Parse(output))
        {
            Assert.Equal("chrF2 (uncased)", doc.RootElement.GetProperty("name").GetString());
            Assert.Equal(100.0, doc.RootElement.GetProperty("score").GetDouble(), 9);
        }
        (code, output, _) = Run("score", h, r, "--metric", "chrf");
        Assert.Equal(0, code);
        Assert.DoesNotContain("100.00", output);   // sacrebleu's default keeps case and accents
        // rouge through score prints what the rouge command prints.
        var (rougeCode, rougeOut, _) = Run("rouge", h, r, "--json");
        (code, output, _) = Run("score", h, r, "--json");
        Assert.Equal((0, rougeOut), (code, output));
        Assert.Equal(0, rougeCode);
    }

    [Theory]
    [InlineData(new[] { "--metric", "meteor" }, "meteor")]
    [InlineData(new[] { "--metric", "rouge", "--uncased" }, "--uncased is for chrf and bleu")]
    [InlineData(new[] { "--metric", "bleu", "--stem" }, "--stem is for --metric rouge")]
    public void BadOptionsAreOneErrorLine(string[] options, string expect)
    {
        var (h, r) = Files(["a"], ["a"]);
        var (code, _, err) = Run(["score", h, r, .. options]);
        Assert.Equal(1, code);
        Assert.Contains(expect, err);
        Assert.DoesNotContain("   at ", err);
    }

    [Fact]
    public void FilesOfDifferentLengthAreRefused()
    {
        var (h, r) = Files(["a", "b"], ["a"]);
        var (code, _, err) = Run("score", h, r, "--metric", "chrf");
        Assert.Equal(1, code);
        Assert.Contains("2 hypotheses but 1 references", err);
    }

    [Theory]
    [InlineData("translate-en-de", 825)]
    [InlineData("translate-en-fr", 1206)]
    public void TranslationTasksLoadAndFitTheirTokenBudget(string task, int testCount)
    {
        Assert.Contains(task, TaskData.Names);
        Assert.True(TaskData.IsTranslation(task));
        Assert.False(TaskData.IsTranslation("debian"));
        var data = TaskData.Load(task);
        Assert.Equal(testCount, data.Test.Count);
        // Lengths.For's budgets against the shipped base's tokenizer: nearly every example fits untruncated.
        var tokenizer = SubwordTokenizer.Load(Path.Combine(ShippedBase(), Checkpoint.TokenizerFile));
        var (maxSource, maxTarget) = Lengths.For(task);
        var sample = TaskData.Spread(data.Train, 2000);
        double sourcesFit = sample.Count(e => tokenizer.Encode(e.Source).Length + 1 <= maxSource) / (double)sample.Count;   // + EOS
        double targetsFit = sample.Count(e => tokenizer.Encode(e.Target).Length + 1 <= maxTarget) / (double)sample.Count;
        Assert.True(sourcesFit >= 0.995, $"{task}: only {sourcesFit:P1} of sources fit in {maxSource} tokens");
        Assert.True(targetsFit >= 0.99, $"{task}: only {targetsFit:P1} of targets fit in {maxTarget} tokens");
    }

    [Fact]
    public void EvalOnATranslationTaskReportsChrfAndBleu()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        string predictions = Path.Combine(dir, "p.txt");
        var (code, output, err) = Run("eval", "--model", ShippedBase(), "--task", "translate-en-de", "--limit", "3", "--device", "cpu", "--predictions", predictions);
        Assert.True(code == 0, err);
        foreach (var metric in new[] { "chrF2", "chrF2++", "BLEU", "chrF2 uncased", "copy source" }) Assert.Contains(metric, output);
        Assert.DoesNotContain("ROUGE", output);
        Assert.Equal(3, File.ReadAllLines(predictions).Length);
    }
}
