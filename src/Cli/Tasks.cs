using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>The shipped tasks: Debian description → synopsis (the summarization task) and WordNet definition → word.</summary>
public sealed record TaskData(string Name, IReadOnlyList<Example> Train, IReadOnlyList<Example> Validation, IReadOnlyList<Example> Test)
{
    public static readonly string[] Names = ["debian", "wordnet", "manpages"];

    public static string FileFor(string task) => task switch
    {
        "debian" => "debian-descriptions.jsonl.gz",
        "wordnet" => "wordnet-definitions.jsonl.gz",
        "manpages" => "manpage-synopses.jsonl.gz",
        _ => throw new ArgumentException($"Unknown task '{task}'; expected one of {string.Join(", ", Names)}."),
    };

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
    public static (int Source, int Target) For(string task) => task switch
    {
        "wordnet" => (48, 8),
        _ => (96, 24),
    };
}
