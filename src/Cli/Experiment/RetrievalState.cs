using System.Text.Json;
using Nanolora.Cli.Output;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// What the retrieval table has finished, in its --out folder (retrieval-state.json), written atomically after each
/// method (its sweep, test scores, adapter and latency). With every PEFT family the full table is some 30 trainings,
/// hours on a 2-core CPU; <c>experiment --resume</c> continues from the last finished method with the same rows. A
/// resume must use the settings the state was made with; anything else is refused, naming the settings.
/// </summary>
public sealed class RetrievalState
{
    /// <summary>The file's name in the --out folder.</summary>
    public const string File = "retrieval-state.json";

    /// <summary>The <see cref="RetrievalOptions"/> the rows were measured with, as JSON (compared on resume).</summary>
    public string Recipe { get; set; } = "";
    /// <summary>Labels of the finished methods (<c>base</c>, <c>full</c>, <c>lora r=8 (query,value)</c>, <c>ia3</c>, …).</summary>
    public List<string> Done { get; set; } = [];
    /// <summary>The table's rows so far.</summary>
    public List<RetrievalRow> Rows { get; set; } = [];
    /// <summary>The learning-rate sweep's points so far.</summary>
    public List<SweepPoint> Sweep { get; set; } = [];
    /// <summary>Training losses per method label.</summary>
    public Dictionary<string, List<float>> Losses { get; set; } = new();
    /// <summary>The model's parameter count (the trainable-% denominator).</summary>
    public long TotalParameters { get; set; }

    /// <summary>Records <paramref name="label"/> as finished and writes the state.</summary>
    public void Complete(string label, string directory)
    {
        if (!Done.Contains(label)) Done.Add(label);
        Directory.CreateDirectory(directory);
        AtomicFile.WriteAllText(Path.Combine(directory, File), JsonSerializer.Serialize(this, JsonOutput.Options) + "\n");
    }

    /// <summary>The recipe line of <paramref name="o"/>: its settings as JSON, seeds and rates included.</summary>
    public static string RecipeOf(RetrievalOptions o) => JsonSerializer.Serialize(o, JsonOutput.Options);

    /// <summary>
    /// A new state for <paramref name="o"/>, or with <paramref name="resume"/> the one in <paramref name="directory"/>
    /// when there is one (a resumed experiment whose retrieval table had not started yet starts it). Without --resume a
    /// folder holding a retrieval state is refused unless <paramref name="overwrite"/>.
    /// </summary>
    public static RetrievalState Open(RetrievalOptions o, string directory, bool resume, bool overwrite)
    {
        string path = Path.Combine(directory, File);
        string recipe = RecipeOf(o);
        if (!System.IO.File.Exists(path)) return new RetrievalState { Recipe = recipe };
        if (!resume)
        {
            if (!overwrite)
                throw new ArgumentException($"experiment: --out '{directory}' already holds a retrieval table ({File}); continue it with --resume, choose another --out, or pass --overwrite to replace it.");
            return new RetrievalState { Recipe = recipe };
        }
        RetrievalState state;
        try { state = JsonSerializer.Deserialize<RetrievalState>(System.IO.File.ReadAllText(path), JsonOutput.Options) ?? throw new JsonException("empty document"); }
        catch (JsonException e) { throw new InvalidDataException($"experiment --resume: '{path}' is not a retrieval state ({e.Message})."); }
        if (state.Recipe != recipe)
            throw new ArgumentException($"experiment --resume: the retrieval settings differ from those '{path}' was made with: expected {state.Recipe}, got {recipe}.");
        return state;
    }
}
