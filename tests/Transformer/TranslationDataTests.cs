using System.IO.Compression;
using System.Text.Json;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>
/// The shipped DDTP translation files (data/ddtp-en-de.jsonl.gz, data/ddtp-en-fr.jsonl.gz) checked against the
/// summarization file they must not leak into: what data/README.md promises about their splits, read from the files.
/// </summary>
public class TranslationDataTests
{
    sealed record Row(string Source, string Target, string Split, string Package, string SourcePackage, string Lang);

    static List<JsonElement> Read(string file)
    {
        using var gz = new GZipStream(File.OpenRead(DataPaths.Find(file)), CompressionMode.Decompress);
        using var reader = new StreamReader(gz);
        var rows = new List<JsonElement>();
        while (reader.ReadLine() is { } line) if (line.Length > 0) rows.Add(JsonDocument.Parse(line).RootElement.Clone());
        return rows;
    }

    static readonly Lazy<List<Row>> Translations = new(() => new[] { "de", "fr" }.SelectMany(lang => Read($"ddtp-en-{lang}.jsonl.gz").Select(e =>
        new Row(e.GetProperty("source").GetString()!, e.GetProperty("target").GetString()!, e.GetProperty("split").GetString()!,
            e.GetProperty("package").GetString()!, e.GetProperty("source_package").GetString()!, e.GetProperty("lang").GetString()!))).ToList());

    /// <summary>The summarization rows: (package, its description's first 80 characters, synopsis, split).</summary>
    static readonly Lazy<List<(string Package, string Prefix, string Synopsis, string Split)>> Summarization = new(() =>
        Read("debian-descriptions.jsonl.gz").Select(e =>
        {
            string source = e.GetProperty("source").GetString()!;
            return (e.GetProperty("package").GetString()!, source[..Math.Min(80, source.Length)], e.GetProperty("target").GetString()!, e.GetProperty("split").GetString()!);
        }).ToList());

    [Theory]
    [InlineData("de", 12775, 11213, 737, 825)]
    [InlineData("fr", 19007, 16875, 926, 1206)]
    public void ShippedFilesHaveTheDocumentedCounts(string lang, int pairs, int train, int validation, int test)
    {
        var rows = Translations.Value.Where(r => r.Lang == lang).ToList();
        Assert.Equal(pairs, rows.Count);
        Assert.Equal(train, rows.Count(r => r.Split == "train"));
        Assert.Equal(validation, rows.Count(r => r.Split == "validation"));
        Assert.Equal(test, rows.Count(r => r.Split == "test"));
        string path = DataPaths.Find($"ddtp-en-{lang}.jsonl.gz");
        Assert.Equal(test, JsonlDataset.Load(path, "test").Count);   // the loader the tasks use reads the same
    }

    [Fact]
    public void PairsAreTranslatedNonEmptyAndUnique()
    {
        foreach (var lang in new[] { "de", "fr" })
        {
            var rows = Translations.Value.Where(r => r.Lang == lang).ToList();
            var bad = rows.FirstOrDefault(r => string.IsNullOrWhiteSpace(r.Source) || string.IsNullOrWhiteSpace(r.Target)
                || string.Equals(r.Source, r.Target, StringComparison.OrdinalIgnoreCase) || r.Target != string.Join(' ', r.Target.Split(' ', StringSplitOptions.RemoveEmptyEntries)));
            Assert.True(bad == null, $"{lang}: empty, untranslated or unnormalized pair: {bad}");
            var dup = rows.GroupBy(r => (r.Source, r.Target)).FirstOrDefault(g => g.Count() > 1);
            Assert.True(dup == null, $"{lang}: duplicate pair {dup?.Key}");
        }
    }

    [Fact]
    public void NoGroupStraddlesSplits()
    {
        // Both languages together: a package or an English sentence in en-de test must not be in en-fr train either,
        // so one base can learn both tasks without seeing the other's test sources.
        foreach (var (what, key) in new (string, Func<Row, string>)[]
        {
            ("package", r => r.Package), ("source package", r => r.SourcePackage), ("English synopsis", r => r.Source.ToLowerInvariant()),
        })
        {
            var straddling = Translations.Value.GroupBy(key).FirstOrDefault(g => g.Select(r => r.Split).Distinct().Count() > 1);
            Assert.True(straddling == null, $"{what} '{straddling?.Key}' is in splits {string.Join(", ", straddling?.Select(r => r.Split).Distinct() ?? [])}");
        }
    }

    [Fact]
    public void NothingOfTheSummarizationTestOrValidationSplitIsInAnotherTranslationSplit()
    {
        var summ = Summarization.Value;
        // What each summarization split holds, by package, by the source package a translation row names for it,
        // by description prefix and by synopsis (the translation source is a summarization target).
        var sourcePackageOf = Translations.Value.GroupBy(r => r.Package).ToDictionary(g => g.Key, g => g.First().SourcePackage);
        var splitsOf = new Dictionary<string, HashSet<string>>();
        void Note(string key, string split)
        {
            if (!splitsOf.TryGetValue(key, out var set)) splitsOf[key] = set = [];
            set.Add(split);
        }
        var prefixOfPackage = new Dictionary<string, string>();
        foreach (var (package, prefix, synopsis, split) in summ)
        {
            Note("pkg:" + package, split);
            if (sourcePackageOf.TryGetValue(package, out var src)) Note("src:" + src, split);
            Note("pre:" + prefix, split);
            Note("syn:" + synopsis.ToLowerInvariant(), split);
            prefixOfPackage[package] = prefix;
        }
        int matches = 0;
        foreach (var row in Translations.Value)
        {
            var keys = new List<string> { "pkg:" + row.Package, "src:" + row.SourcePackage, "syn:" + row.Source.ToLowerInvariant() };
            if (prefixOfPackage.TryGetValue(row.Package, out var prefix)) keys.Add("pre:" + prefix);
            foreach (var key in keys)
            {
                if (!splitsOf.TryGetValue(key, out var held)) continue;
                matches++;
                // A summarization test item may only be in translation test; a validation item only in validation.
                foreach (var (summarizationSplit, allowed) in new[] { ("test", "test"), ("validation", "validation") })
                    Assert.True(!held.Contains(summarizationSplit) || row.Split == allowed,
                        $"{row.Lang} {row.Split} row '{row.Source}' ({row.Package}) shares {key} with summarization {summarizationSplit}");
            }
        }
        Assert.True(matches > 30_000, $"only {matches} keys matched the summarization file: the check saw too little");
        // The translation test split is the summarization test's packages (a few unseen groups aside), not a random draw.
        var testPackages = summ.Where(s => s.Split == "test").Select(s => s.Package).ToHashSet();
        var translationTest = Translations.Value.Where(r => r.Split == "test").ToList();
        Assert.True(translationTest.Count(r => testPackages.Contains(r.Package)) > 0.8 * translationTest.Count);
    }
}
