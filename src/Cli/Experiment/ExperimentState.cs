using System.Security.Cryptography;
using System.Text.Json;
using Nanolora.Cli.Output;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// What a seq2seq experiment has finished, in its --out folder (experiment-state.json), written atomically after every
/// unit of work (a baseline, a sweep point, a method, the swap, an ablation run). The full experiment takes hours on a
/// CPU; <c>experiment --resume</c> continues from here with the same rows, so it can run in chunks, across sessions,
/// and survive a kill. A resume must use the recipe the state was made with (steps, rates, ranks, seeds, the base's
/// weights); anything else is refused, naming what changed.
/// </summary>
public sealed class ExperimentState
{
    /// <summary>The file's name in the --out folder.</summary>
    public const string File = "experiment-state.json";

    /// <summary>The settings and base the rows were measured with, as "field=value" lines (compared on resume).</summary>
    public List<string> Recipe { get; set; } = [];
    /// <summary>Keys of the finished units (such as <c>full</c>, <c>sweep:lora:0.003</c>, <c>ablation:r8:seed2</c>).</summary>
    public List<string> Done { get; set; } = [];
    /// <summary>The table's rows so far, in the order they were measured.</summary>
    public List<ResultRow> Rows { get; set; } = [];
    /// <summary>The learning-rate sweep's points so far.</summary>
    public List<RougeSweepPoint> Sweep { get; set; } = [];
    /// <summary>Training losses per method, for the loss plot.</summary>
    public Dictionary<string, List<float>> Losses { get; set; } = new();
    /// <summary>The PEFT comparison's rows so far (absent from a state written before the comparison existed: empty).</summary>
    public List<ComparisonRow> Comparison { get; set; } = [];
    /// <summary>The base's parameter count (the trainable-% denominator).</summary>
    public long BaseParameters { get; set; }
    /// <summary>Seconds spent in earlier chunks (results.json's elapsed time is their sum with this chunk's).</summary>
    public double ElapsedSeconds { get; set; }

    /// <summary>Whether the unit <paramref name="key"/> finished in this or an earlier chunk.</summary>
    public bool IsDone(string key) => Done.Contains(key);

    /// <summary>Records <paramref name="key"/> as finished and writes the state.</summary>
    public void Complete(string key, string directory, double elapsedSeconds)
    {
        if (!Done.Contains(key)) Done.Add(key);
        ElapsedSeconds = elapsedSeconds;
        AtomicFile.WriteAllText(Path.Combine(directory, File), JsonSerializer.Serialize(this, JsonOutput.Options) + "\n");
    }

    /// <summary>
    /// A new state for <paramref name="o"/>, or with <paramref name="resume"/> the one in its --out folder (which must
    /// exist and match the recipe). Without --resume a folder that holds an experiment is refused unless
    /// <paramref name="overwrite"/>.
    /// </summary>
    public static ExperimentState Open(ExperimentOptions o, string baseDirectory, bool resume, bool overwrite)
    {
        string path = Path.Combine(o.OutputDirectory, File);
        var recipe = RecipeOf(o, baseDirectory);
        if (!resume)
        {
            bool held = System.IO.File.Exists(path) || System.IO.File.Exists(Path.Combine(o.OutputDirectory, ExperimentJson.File));
            if (held && !overwrite)
                throw new ArgumentException($"experiment: --out '{o.OutputDirectory}' already holds an experiment; continue it with --resume, choose another --out, or pass --overwrite to replace it.");
            return new ExperimentState { Recipe = recipe };
        }
        if (!System.IO.File.Exists(path))
            throw new ArgumentException($"experiment --resume: '{path}' does not exist; nothing to continue (run without --resume to start).");
        ExperimentState state;
        try { state = JsonSerializer.Deserialize<ExperimentState>(System.IO.File.ReadAllText(path), JsonOutput.Options) ?? throw new JsonException("empty document"); }
        catch (JsonException e) { throw new InvalidDataException($"experiment --resume: '{path}' is not an experiment state ({e.Message})."); }
        // A setting added after the state was written (the comparison's) is taken as given: none of its units ran yet.
        foreach (var line in recipe)
            if (AddedLater.Contains(Key(line)) && !state.Recipe.Any(l => Key(l) == Key(line))) state.Recipe.Add(line);
        foreach (var (key, implied) in ImpliedBefore)
            if (!state.Recipe.Any(l => Key(l) == key)) state.Recipe.Add(implied(state.Recipe));
        state.AcceptAddedMethods(recipe);
        var changed = recipe.Except(state.Recipe).Select(Key).ToList();
        if (changed.Count == 0) return state;
        string differ = $"the settings differ from those '{path}' was made with ({string.Join(", ", changed)}): " +
            $"expected {string.Join("; ", state.Recipe.Where(l => changed.Contains(Key(l))))}, got {string.Join("; ", recipe.Where(l => changed.Contains(Key(l))))}";
        if (changed.Contains("lora_init"))
            differ += " (lora_init=true is --lora-init kaiming, the start before LoRA-GA became the default)";
        if (changed.Contains("sweep_validation_examples"))
            differ += " (--sweep-validation-examples sets it; the full budget's sweep scored 300 validation pairs before the whole split became its default)";
        if (!changed.All(Rerunnable.ContainsKey))
            throw new ArgumentException($"experiment --resume: {differ}.");
        // Only the finished units that depend on a changed line go; a change nothing finished depends on (more ranks for the
        // ablation, a swap added to a run that had none) is taken without --rerun-changed.
        var dropped = state.Done.Where(unit => changed.Any(k => Rerunnable[k](unit, o))).ToList();
        if (dropped.Count > 0 && !o.RerunChanged)
            throw new ArgumentException($"experiment --resume: {differ}. Pass --rerun-changed to rerun the finished units that depend on them " +
                $"({string.Join(", ", dropped)}) and keep the rest.");
        foreach (var unit in dropped) state.Forget(unit);
        state.Recipe = [.. state.Recipe.Where(l => !changed.Contains(Key(l))), .. recipe.Where(l => changed.Contains(Key(l)))];
        Output.Terminal.Status($"experiment --resume: {differ}; rerunning {(dropped.Count == 0 ? "nothing finished" : string.Join(", ", dropped))}.");
        return state;
    }

    /// <summary>
    /// Methods added to the comparison change no finished number: each is a unit of its own, and the finished ones are kept.
    /// So a resume whose comparison list is the recorded one (same order) with more methods in it takes it, and — where the paired latency
    /// re-measurement already ran — drops that unit so it runs again over every row, the new ones included.
    /// </summary>
    void AcceptAddedMethods(List<string> recipe)
    {
        const string key = "compare_methods";
        string? now = recipe.FirstOrDefault(l => Key(l) == key), before = Recipe.FirstOrDefault(l => Key(l) == key);
        if (now == null || before == null || now == before) return;
        static string[] Methods(string line) => line[(key.Length + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries);
        string[] old = Methods(before), all = Methods(now);
        if (all.Length <= old.Length || !all.Where(old.Contains).SequenceEqual(old)) return;
        Recipe[Recipe.IndexOf(before)] = now;
        bool remeasure = Done.Remove(PairedLatencyUnit) | Done.Remove(StepTimeUnit);
        Output.Terminal.Status($"experiment --resume: the comparison gained {string.Join(", ", all.Except(old))}; the finished rows are kept" +
            (remeasure ? ", and the re-measurements over every row (paired latency, step time) run again." : "."));
    }

    /// <summary>The unit that re-measures every comparison row's latency interleaved with a fresh base's.</summary>
    public const string PairedLatencyUnit = "compare:latency-paired";

    /// <summary>The unit that times every comparison row's training step again, all in one sitting.</summary>
    public const string StepTimeUnit = "compare:step-time";

    /// <summary>
    /// The recipe lines a resume may change, each with the test for the finished units whose numbers depend on it. Every
    /// other line changes numbers too widely to keep any row.
    /// </summary>
    static readonly Dictionary<string, Func<string, ExperimentOptions, bool>> Rerunnable = new()
    {
        ["lora_targets"] = (unit, _) => DependsOnLoraRow(unit),
        ["lora_init"] = (unit, _) => DependsOnLoraRow(unit) || IsAblation(unit),
        ["ablation_targets"] = (unit, _) => IsAblation(unit),
        ["ablation_steps"] = (unit, _) => IsAblation(unit),
        ["ablation_eval_examples"] = (unit, _) => IsAblation(unit),
        // Each ablation unit is one rank and one seed: only those no longer listed go.
        ["ranks"] = (unit, o) => IsAblation(unit) && !o.Ranks.Contains(AblationRank(unit)),
        ["ablation_seeds"] = (unit, o) => IsAblation(unit) && !o.AblationSeeds.Contains(AblationSeed(unit)),
        // More (or fewer) rates past the sweep's edge drop nothing up front: a row goes only if the sweep then chooses another
        // rate, which the runner asks --rerun-changed for (ExperimentRunner.ChooseRate).
        ["sweep_edge_extensions"] = (_, _) => false,
        ["swap_steps"] = (unit, _) => unit == "swap",
        ["swap_eval_examples"] = (unit, _) => unit == "swap",
    };

    // The LoRA sweep and row, the swap that reloads its adapter, its comparison row and the two re-measurements over every row.
    static bool DependsOnLoraRow(string unit) =>
        unit is "lora" or "swap" or "compare:lora" or PairedLatencyUnit or StepTimeUnit || unit.StartsWith("sweep:lora:");
    static bool IsAblation(string unit) => unit.StartsWith("ablation:");
    static int AblationRank(string unit) => int.Parse(unit.Split(':')[1][1..]);                        // ablation:r8:seed2
    static ulong AblationSeed(string unit) => ulong.Parse(unit.Split(':')[2]["seed".Length..]);

    /// <summary>
    /// The ablation trains at the rate LoRA's sweep chose. When a rerun sweep (new LoRA targets) chooses another, the ablation
    /// runs kept from before were trained at the old rate: they are dropped to run again, and their keys returned.
    /// </summary>
    public List<string> ForgetAblationAtOtherRate(float loraRate)
    {
        var stale = Rows.Where(r => r.Method == "lora-ablation" && r.LearningRate != loraRate).Select(r => $"ablation:r{r.Rank}:seed{r.Seed}").Distinct().ToList();
        foreach (var unit in stale) Forget(unit);
        return stale;
    }

    /// <summary>
    /// The finished units to rerun when the sweep now chooses another rate for <paramref name="method"/> (full or lora)
    /// than its finished row was trained at (a resume allowed the sweep more extensions past its edge): the row, its
    /// comparison row and the step-time re-measurement, and for LoRA also the swap that reloads its adapter and the paired
    /// latency (which measures LoRA's row, not full fine-tuning's). Empty when the row is missing or at that rate. Its
    /// sweep points stay.
    /// </summary>
    public List<string> UnitsAtOtherRate(string method, float rate)
    {
        var row = Rows.FirstOrDefault(r => r.Method == method && r.Task == "debian");
        if (row == null || row.LearningRate == rate) return [];
        var stale = Done.Where(unit => unit == method || unit == $"compare:{method}" || unit == StepTimeUnit
                                       || (method == "lora" && unit is "swap" or PairedLatencyUnit)).ToList();
        if (!stale.Contains(method)) stale.Add(method);   // a row without its unit (an older state): it goes all the same
        return stale;
    }

    /// <summary>Drops finished units and everything they recorded, so they run again.</summary>
    public void Forget(IEnumerable<string> units)
    {
        foreach (var unit in units.ToList()) Forget(unit);
    }

    /// <summary>Drops a finished unit and everything it recorded (rows, sweep points, losses), so it runs again.</summary>
    void Forget(string unit)
    {
        Done.Remove(unit);
        if (unit.StartsWith("sweep:lora:"))
        {
            float rate = float.Parse(unit["sweep:lora:".Length..], System.Globalization.CultureInfo.InvariantCulture);
            Sweep.RemoveAll(p => p.Method == "lora" && p.LearningRate == rate);
        }
        else if (unit is "lora" or "full") { Rows.RemoveAll(r => r.Method == unit && r.Task == "debian"); Losses.Remove(unit); }
        else if (unit == "swap") Rows.RemoveAll(r => r.Task != "debian");
        else if (unit is "compare:lora" or "compare:full") Comparison.RemoveAll(r => r.Method == unit["compare:".Length..]);
        else if (unit is PairedLatencyUnit or StepTimeUnit) { }   // re-measurements: their numbers are rewritten when they run again
        else if (unit.StartsWith("ablation:"))
        {
            int rank = AblationRank(unit);
            ulong seed = AblationSeed(unit);
            Rows.RemoveAll(r => r.Method == "lora-ablation" && r.Rank == rank && r.Seed == seed);
        }
        else throw new InvalidOperationException($"experiment: no rule to forget unit '{unit}'.");
    }

    static string Key(string line) => line.Split('=')[0];

    /// <summary>Recipe lines newer than the first state files: a state without them still resumes (and records them then).</summary>
    static readonly HashSet<string> AddedLater = ["compare_methods", "compare_rate_factors", "latency"];

    /// <summary>
    /// Recipe lines added later whose absence means the one value every earlier run used: a state without them reads as that
    /// value (the ablation used LoRA's targets until it had its own line).
    /// </summary>
    static readonly Dictionary<string, Func<List<string>, string>> ImpliedBefore = new()
    {
        ["lora_targets"] = _ => "lora_targets=q_proj,v_proj",
        ["lora_init"] = _ => "lora_init=true",
        ["sweep_edge_extensions"] = _ => "sweep_edge_extensions=0",
        ["ablation_targets"] = recipe => "ablation_targets=" + (recipe.FirstOrDefault(l => Key(l) == "lora_targets")?[("lora_targets=".Length)..] ?? "q_proj,v_proj"),
    };

    /// <summary>Every setting that changes a number in the table, and a hash of the base's weights.</summary>
    static List<string> RecipeOf(ExperimentOptions o, string baseDirectory)
    {
        static string F(IEnumerable<float> v) => string.Join(',', v.Select(x => x.ToString("R", System.Globalization.CultureInfo.InvariantCulture)));
        string weights = Path.Combine(baseDirectory, Checkpoint.WeightsFile);
        string hash = System.IO.File.Exists(weights) ? Convert.ToHexString(SHA256.HashData(System.IO.File.ReadAllBytes(weights)))[..16] : "none";
        return
        [
            $"quick={o.Quick}", $"base_weights_sha256={hash}", $"steps={o.Steps}", $"batch_size={o.BatchSize}", $"seed={o.Seed}",
            $"eval_examples={o.EvalExamples}", $"no_repeat_ngram={o.NoRepeatNgram}", $"lora_targets={string.Join(',', o.LoraTargets)}", $"lora_init={Nanolora.Lora.LoraConfig.InitName(o.LoraInit)}", $"ablation_targets={string.Join(',', o.AblationTargetsUsed)}",
            $"full_learning_rates={F(o.FullLearningRates)}", $"lora_learning_rates={F(o.LoraLearningRates)}", $"sweep_steps={o.SweepSteps}",
            $"sweep_validation_examples={o.SweepValidationExamples}", $"sweep_edge_extensions={o.SweepEdgeExtensions}", $"swap_task={o.SwapTask}", $"swap_steps={o.SwapSteps}", $"swap_eval_examples={o.SwapEvalExamples}",
            $"swap_rank={o.SwapRank}", $"swap_targets={string.Join(',', o.SwapTargets)}", $"swap_learning_rate={F([o.SwapLearningRate])}",
            $"ablation_steps={o.AblationSteps}", $"ablation_eval_examples={o.AblationEvalExamples}", $"ranks={string.Join(',', o.Ranks)}",
            $"ablation_seeds={string.Join(',', o.AblationSeeds)}",
            $"compare_methods={string.Join(',', o.Comparison.Select(c => c.Key))}", $"compare_rate_factors={F(o.CompareRateFactors)}", $"latency={o.Latency}",
        ];
    }
}
