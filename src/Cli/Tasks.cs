using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// The shipped tasks: Debian description → synopsis (the summarization task), WordNet definition → word, man page →
/// NAME line, and translation of Debian synopses from English into German and French (DDTP), scored with chrF/BLEU.
/// </summary>
public sealed record TaskData(string Name, IReadOnlyList<Example> Train, IReadOnlyList<Example> Validation, IReadOnlyList<Example> Test)
{
    /// <summary>The task names the commands accept.</summary>
    public static readonly string[] Names = ["debian", "wordnet", "manpages", "translate-en-de", "translate-en-fr"];

    /// <summary>Translation tasks are scored with chrF and BLEU (sacrebleu's), the others with ROUGE.</summary>
    public static bool IsTranslation(string task) => task.StartsWith("translate-", StringComparison.Ordinal);

    /// <summary>The data file name of a task.</summary>
    public static string FileFor(string task) => task switch
    {
        "debian" => "debian-descriptions.jsonl.gz",
        "wordnet" => "wordnet-definitions.jsonl.gz",
        "manpages" => "manpage-synopses.jsonl.gz",
        "translate-en-de" => "ddtp-en-de.jsonl.gz",
        "translate-en-fr" => "ddtp-en-fr.jsonl.gz",
        _ => throw new ArgumentException($"Unknown task '{task}'; expected one of {string.Join(", ", Names)}."),
    };

    /// <summary>Loads a task's three splits, at most <paramref name="limitPerSplit"/> examples each (null: all).</summary>
    public static TaskData Load(string task, int? limitPerSplit = null)
    {
        var path = DataPaths.Find(FileFor(task));
        return new TaskData(task,
            JsonlDataset.Load(path, "train", limitPerSplit),
            JsonlDataset.Load(path, "validation", limitPerSplit),
            JsonlDataset.Load(path, "test", limitPerSplit));
    }

    /// <summary>A deterministic subset (every k-th example) so a quick run still spans the whole split.</summary>
    public static IReadOnlyList<Example> Spread(IReadOnlyList<Example> examples, int count)
    {
        if (count <= 0 || count >= examples.Count) return examples;
        double stride = (double)examples.Count / count;
        return Enumerable.Range(0, count).Select(i => examples[(int)(i * stride)]).ToList();
    }
}

/// <summary>Token budgets per task (sources are truncated, as the data README advises).</summary>
public static class Lengths
{
    /// <summary>The source and target token budgets of a task.</summary>
    public static (int Source, int Target) For(string task) => task switch
    {
        "wordnet" => (48, 8),
        // Measured with models/base-tiny's tokenizer (EOS included): English synopses p99 32-34 tokens, max 52;
        // German/French targets p99 56/60, p99.9 64/71, max 81/87 (it spells much of them letter by letter).
        // tests/Cli/ScoreCliTests checks the share that fits.
        "translate-en-de" or "translate-en-fr" => (48, 64),
        _ => (96, 24),
    };
}
