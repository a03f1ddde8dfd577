using System.Diagnostics;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

public sealed record ExperimentOptions
{
    public bool Quick { get; init; }
    public required string OutputDirectory { get; init; }
    public string BaseDirectory { get; init; } = "models/base-tiny";
    public int Steps { get; init; }
    public int AblationSteps { get; init; }
    public int WordnetSteps { get; init; }
    public int EvalExamples { get; init; }
    public int AblationEvalExamples { get; init; }
    public IReadOnlyList<int> Ranks { get; init; } = [1, 2, 4, 8, 16, 32, 64];
    public int PretrainSteps { get; init; } = 1500;
    public ulong Seed { get; init; } = 1;
    /// <summary>Which tables to produce: the seq2seq one (tiny base) and the pretrained encoder's retrieval one.</summary>
    public bool RunSeq2Seq { get; init; } = true;
    public bool RunRetrieval { get; init; } = true;
    public RetrievalOptions Retrieval { get; init; } = RetrievalOptions.Defaults(true);
    /// <summary>Print results.json on stdout instead of the tables (--json).</summary>
    public bool Json { get; init; }

    /// <summary>The main job's budget on a 2-core CPU (≤ 15 minutes) and the full experiment's.</summary>
    public static ExperimentOptions Defaults(bool quick, string output) => quick
        ? new() { Quick = true, OutputDirectory = output, Steps = 600, AblationSteps = 300, WordnetSteps = 300, EvalExamples = 400, AblationEvalExamples = 200, Ranks = [1, 4, 8, 16, 64], Retrieval = RetrievalOptions.Defaults(true) }
        : new() { Quick = false, OutputDirectory = output, Steps = 1500, AblationSteps = 400, WordnetSteps = 600, EvalExamples = 0, AblationEvalExamples = 500, Retrieval = RetrievalOptions.Defaults(false) };

    /// <summary>LoRA's main row: rank 8 on the attention query and value projections (PEFT's default targets).</summary>
    public static readonly string[] LoraTargets = ["q_proj", "v_proj"];
}

/// <summary>
/// The seed's experiment: base vs full fine-tuning vs LoRA on Debian description → synopsis, a rank
/// ablation, and a task swap (a WordNet adapter on the same base, switched in one process).
/// </summary>
public sealed class ExperimentRunner(ExperimentOptions o, Device device)
{
    readonly List<ResultRow> _rows = new();
    readonly Dictionary<string, List<float>> _losses = new();
    long _baseParameters;   // the seq2seq base's parameter count: every row's trainable-% denominator

    public IReadOnlyList<ResultRow> Run()
    {
        var clock = Stopwatch.StartNew();
        Directory.CreateDirectory(o.OutputDirectory);
        if (o.RunRetrieval) MiniLmPackage.Locate();   // fail now, not after the seq2seq table's minutes
        if (o.RunSeq2Seq) RunSeq2Seq();
        RetrievalExperiment? retrieval = null;
        if (o.RunRetrieval)
        {
            // The seq2seq table is on disk before the second part starts, so a failure there loses nothing.
            if (o.RunSeq2Seq) new ExperimentReport(o, _rows, _losses, clock.Elapsed).Write();
            retrieval = new RetrievalExperiment(o.Retrieval, o.OutputDirectory, device);
            retrieval.Run();
        }
        var report = new ExperimentReport(o, _rows, _losses, clock.Elapsed, retrieval);
        report.Write();
        report.Print();
        return _rows;
    }

    void RunSeq2Seq()
    {
        var debian = TaskData.Load("debian");
        var wordnet = TaskData.Load("wordnet");
        string baseDir = EnsureBase();
        var test = TaskData.Spread(debian.Test, o.EvalExamples);
        var ablationTest = TaskData.Spread(debian.Test, o.AblationEvalExamples);
        long fullCheckpointBytes = new FileInfo(Path.Combine(baseDir, Checkpoint.WeightsFile)).Length;

        var lead = Save("lead-8", Evaluator.LeadBaseline(test));
        Add("lead-8", "debian", 0, lead.Rouge, null, 0, 0, 0, test.Count, 0);

        var (model, tokenizer) = Checkpoint.Load(baseDir, device);
        long total = _baseParameters = model.ParameterCount();
        var baseEval = Save("base", Workflows.Evaluate(model, tokenizer, "debian", test, Workflows.DecodeFor("debian"), "base: evaluating"));
        Add("base", "debian", 0, baseEval.Rouge, null, 0, total, fullCheckpointBytes, test.Count, 0);
        model.Dispose();

        // (b) full fine-tuning
        (model, tokenizer) = Checkpoint.Load(baseDir, device);
        // Same data, steps and seed for both methods; each gets its usual learning rate (LoRA's is higher, as in PEFT practice).
        var ft = new FineTuneOptions { Task = "debian", Method = "full", Steps = o.Steps, Seed = o.Seed, LearningRate = 3e-3f, FullLearningRate = 1e-3f, Targets = ExperimentOptions.LoraTargets };
        var (fullResult, _) = Workflows.FineTune(model, tokenizer, debian, ft, baseDir);
        var fullEval = Save("full", Workflows.Evaluate(model, tokenizer, "debian", test, Workflows.DecodeFor("debian"), "full: evaluating"));
        Checkpoint.Save(Path.Combine(o.OutputDirectory, "full"), model, tokenizer);
        Add("full", "debian", 0, fullEval.Rouge, fullResult, 0, total, new FileInfo(Path.Combine(o.OutputDirectory, "full", Checkpoint.WeightsFile)).Length, test.Count, o.Steps);
        _losses["full"] = fullResult.Losses;
        model.Dispose();

        // (c) LoRA r=8 on the attention projections; the same process then learns and swaps a WordNet adapter.
        (model, tokenizer) = Checkpoint.Load(baseDir, device);
        var loraOptions = ft with { Method = "lora", Rank = 8 };
        var (loraResult, lora) = Workflows.FineTune(model, tokenizer, debian, loraOptions, baseDir, adapterName: "debian");
        var loraEval = Save("lora-r8", Workflows.Evaluate(model, tokenizer, "debian", test, Workflows.DecodeFor("debian"), "LoRA r=8: evaluating"));
        string adapterDir = Path.Combine(o.OutputDirectory, "adapters", "debian-r8");
        AdapterFiles.Save(lora!, "debian", adapterDir);
        long adapterBytes = new FileInfo(Path.Combine(adapterDir, AdapterFiles.WeightsFile)).Length;
        Add("lora", "debian", 8, loraEval.Rouge, loraResult, adapterBytes, total, 0, test.Count, o.Steps);
        _losses["lora"] = loraResult.Losses;
        TaskSwap(model, tokenizer, lora!, wordnet, test, loraEval, baseDir);
        model.Dispose();

        // Rank ablation: the same recipe at each rank (shorter runs, a smaller test sample).
        foreach (int rank in o.Ranks)
        {
            (model, tokenizer) = Checkpoint.Load(baseDir, device);
            var opt = loraOptions with { Rank = rank, Alpha = 2f * rank, Steps = o.AblationSteps };   // alpha/r stays 2 across ranks
            var (r, l) = Workflows.FineTune(model, tokenizer, debian, opt, baseDir, adapterName: $"r{rank}");
            var e = Workflows.Evaluate(model, tokenizer, "debian", ablationTest, Workflows.DecodeFor("debian"), $"ablation r={rank}: evaluating");
            string dir = Path.Combine(o.OutputDirectory, "adapters", $"ablation-r{rank}");
            AdapterFiles.Save(l!, $"r{rank}", dir);
            Add("lora-ablation", "debian", rank, e.Rouge, r, new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length, total, 0, ablationTest.Count, opt.Steps);
            model.Dispose();
        }
    }

    /// <summary>
    /// Adds a WordNet adapter to the model that already holds the Debian one, trains it, then answers both tasks
    /// from the one loaded base by switching adapters. The Debian scores must be those it had when trained alone.
    /// </summary>
    void TaskSwap(Seq2SeqTransformer model, SubwordTokenizer tokenizer, LoraModel lora, TaskData wordnet, IReadOnlyList<Example> debianTest, EvalResult debianAlone, string baseDir)
    {
        var options = new FineTuneOptions { Task = "wordnet", Method = "lora", Rank = 8, Steps = o.WordnetSteps, Seed = o.Seed + 1, LearningRate = 3e-3f, Targets = ExperimentOptions.LoraTargets };
        var (result, _) = Workflows.FineTune(model, tokenizer, wordnet, options, baseDir, lora, adapterName: "wordnet");
        var wordnetTest = TaskData.Spread(wordnet.Test, o.Quick ? 400 : 2000);
        var wordnetEval = Save("wordnet-lora-r8", Workflows.Evaluate(model, tokenizer, "wordnet", wordnetTest, Workflows.DecodeFor("wordnet"), "swap → wordnet adapter"));
        string dir = Path.Combine(o.OutputDirectory, "adapters", "wordnet-r8");
        AdapterFiles.Save(lora, "wordnet", dir);
        Add("lora", "wordnet", 8, wordnetEval.Rouge, result, new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length, _baseParameters, 0, wordnetTest.Count, options.Steps);

        lora.SetActiveAdapter("debian");
        var again = Workflows.Evaluate(model, tokenizer, "debian", debianTest, Workflows.DecodeFor("debian"), "swap → debian adapter");
        bool same = again.Predictions.SequenceEqual(debianAlone.Predictions);
        Output.Terminal.Status($"adapter swap: debian predictions after switching back are {(same ? "identical" : "different")} to those before the WordNet adapter was added.");
        if (!same) throw new InvalidOperationException("Switching back to the Debian adapter changed its outputs; adapters are not isolated.");
        using (lora.DisableAdapters())
        {
            var baseOnWordnet = Workflows.Evaluate(model, tokenizer, "wordnet", wordnetTest, Workflows.DecodeFor("wordnet"), "adapters disabled → wordnet");
            Add("base", "wordnet", 0, baseOnWordnet.Rouge, null, 0, _baseParameters, 0, wordnetTest.Count, 0);
        }
    }

    string EnsureBase()
    {
        if (File.Exists(Path.Combine(o.BaseDirectory, Checkpoint.WeightsFile))) return o.BaseDirectory;
        var dir = Path.Combine(o.OutputDirectory, "base");
        Output.Terminal.Status($"warning: no base checkpoint at {o.BaseDirectory}; pretraining one ({o.PretrainSteps} steps) into {dir}");
        var (model, _, _) = Workflows.Pretrain(new PretrainOptions(Steps: o.PretrainSteps, Seed: o.Seed), device, dir);
        model.Dispose();
        return dir;
    }

    /// <summary>Keeps each method's outputs (one a line, aligned with references.txt) for inspection and `nanolora rouge`.</summary>
    EvalResult Save(string name, EvalResult result)
    {
        var dir = Path.Combine(o.OutputDirectory, "predictions");
        Directory.CreateDirectory(dir);
        AtomicFile.WriteAllText(Path.Combine(dir, name + ".txt"), string.Join('\n', result.Predictions.Select(p => p.ReplaceLineEndings(" "))) + "\n");
        AtomicFile.WriteAllText(Path.Combine(dir, name + ".references.txt"), string.Join('\n', result.References.Select(p => p.ReplaceLineEndings(" "))) + "\n");
        return result;
    }

    /// <summary>Adds a row; 0 for rank, sizes or steps means "none" and is stored as null, as is every cost of an untrained row.</summary>
    void Add(string method, string task, int rank, RougeResult rouge, TrainResult? train, long adapterBytes, long totalParams, long checkpointBytes, int examples, int steps) =>
        _rows.Add(ResultRow.Of(method, task, rank, rouge, train, adapterBytes, totalParams, checkpointBytes, examples, steps));
}
