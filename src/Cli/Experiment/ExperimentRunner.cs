using System.Diagnostics;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>Settings of the experiment (<see cref="Defaults"/> gives the quick and full ones).</summary>
public sealed record ExperimentOptions
{
    /// <summary>Whether these are the quick run's settings (recorded in results.json).</summary>
    public bool Quick { get; init; }
    /// <summary>The folder that receives results.json, results.md, the plots and the runs.</summary>
    public required string OutputDirectory { get; init; }
    /// <summary>The seq2seq base: BERT2BERT on all-MiniLM-L6-v2, its decoder trained with the synopsis task held out.</summary>
    public string BaseDirectory { get; init; } = "models/base-minilm";
    /// <summary>Training steps of the main full and LoRA rows.</summary>
    public int Steps { get; init; }
    /// <summary>Examples per batch.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Training steps per rank and seed in the rank ablation.</summary>
    public int AblationSteps { get; init; }
    /// <summary>The second task whose adapter is swapped in on the same loaded base, its steps and test examples (0: the whole split).</summary>
    public string SwapTask { get; init; } = "translate-en-de";
    /// <summary>Training steps of the swapped-in second adapter.</summary>
    public int SwapSteps { get; init; }
    /// <summary>Test examples of the swap task scored (0: the whole split).</summary>
    public int SwapEvalExamples { get; init; }
    /// <summary>
    /// The second task's adapter: LoRA r=16 on every linear layer at lr 2e-3. Writing German is new to a decoder trained on
    /// English only, and r=8 on q and v learned none of it in 100 steps (chrF2 9.4 against 33.8 for copying the source).
    /// </summary>
    public int SwapRank { get; init; } = 16;
    /// <summary>Modules the second adapter wraps.</summary>
    public IReadOnlyList<string> SwapTargets { get; init; } = [Nanolora.Lora.LoraConfig.AllLinear];
    /// <summary>Learning rate of the second adapter.</summary>
    public float SwapLearningRate { get; init; } = 2e-3f;
    /// <summary>Test examples scored for the main rows (0: the whole split; a subset spans the split).</summary>
    public int EvalExamples { get; init; }
    /// <summary>Test examples scored per ablation run (0: the whole split).</summary>
    public int AblationEvalExamples { get; init; }
    /// <summary>LoRA ranks of the ablation.</summary>
    public IReadOnlyList<int> Ranks { get; init; } = [1, 2, 4, 8, 16, 32, 64];
    /// <summary>Seeds per rank in the ablation (the plot shows their mean and spread).</summary>
    public IReadOnlyList<ulong> AblationSeeds { get; init; } = [1, 2];
    /// <summary>Learning rates tried per method on the validation split; one each: no sweep.</summary>
    public IReadOnlyList<float> FullLearningRates { get; init; } = [1e-4f];
    /// <summary>Learning rates tried for LoRA on the validation split.</summary>
    public IReadOnlyList<float> LoraLearningRates { get; init; } = [1e-3f];
    /// <summary>Training steps per learning rate in the sweep.</summary>
    public int SweepSteps { get; init; }
    /// <summary>
    /// How many more rates the sweep may try past an edge of its grid while the edge scores best (a best rate at the edge
    /// says the grid missed the optimum): each a grid step beyond the current edge.
    /// </summary>
    public int SweepEdgeExtensions { get; init; }
    /// <summary>Validation examples scored per learning rate in the sweep (0: the whole split).</summary>
    public int SweepValidationExamples { get; init; } = 300;
    /// <summary>Decoding never repeats an n-gram of this size (0: off), for every row alike.</summary>
    public int NoRepeatNgram { get; init; } = 2;
    /// <summary>Seeds data order, initialization and dropout for every row.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Which tables to produce: the seq2seq one and the pretrained encoder's retrieval one.</summary>
    public bool RunSeq2Seq { get; init; } = true;
    /// <summary>Whether to produce the retrieval table.</summary>
    public bool RunRetrieval { get; init; } = true;
    /// <summary>Settings of the retrieval table.</summary>
    public RetrievalOptions Retrieval { get; init; } = RetrievalOptions.Defaults(true);
    /// <summary>Print results.json on stdout instead of the tables (--json).</summary>
    public bool Json { get; init; }
    /// <summary>Continue the seq2seq experiment recorded in the output folder's <see cref="ExperimentState.File"/> (--resume).</summary>
    public bool Resume { get; init; }
    /// <summary>Replace an experiment the output folder already holds (--overwrite).</summary>
    public bool Overwrite { get; init; }
    /// <summary>The comparison's methods beside base, full and LoRA r=8, each trained on <see cref="Steps"/> like them (empty: no comparison).</summary>
    public IReadOnlyList<ComparisonEntry> Comparison { get; init; } = ComparisonEntry.Defaults;
    /// <summary>Each comparison method's learning rates: its default (<see cref="PeftRecipe.LearningRate"/>) times these, chosen on the validation split when more than one.</summary>
    public IReadOnlyList<float> CompareRateFactors { get; init; } = [1f];
    /// <summary>How the comparison measures inference latency.</summary>
    public LatencySettings Latency { get; init; } = new();
    /// <summary>
    /// After the comparison's methods, measure each one's latency again interleaved with a freshly loaded base (unit
    /// <c>compare:latency-paired</c>), for rows of a run begun before each unit measured its row that way.
    /// </summary>
    public bool PairedLatency { get; init; }
    /// <summary>
    /// When above 0, the comparison ends by timing every trained row's training step again in one sitting, this many steps
    /// per row, twice over (unit <c>compare:step-time</c>): a long run's own step times come from different days and machines.
    /// </summary>
    public int StepTimeSteps { get; init; }

    /// <summary>The main job's budget on a 2-core CPU (≤ 15 minutes) and the full experiment's.</summary>
    public static ExperimentOptions Defaults(bool quick, string output) => quick
        // Quick: each method at the rate a probe on 200 validation pairs chose for the shipped base after 100 steps of batch 16
        // (README: zero-shot 0.2566; full 3e-5 → 0.2577, 1e-4 → 0.2615; LoRA 3e-4 → 0.2253, 1e-3 → 0.2656; LoRA started by
        // LoRA-GA 3e-4 → 0.2661, 1e-3 → 0.2833). The previous base's 3e-4 and 3e-3 left both below the zero-shot base here.
        // The full run sweeps its own on the validation split. Both start LoRA by LoRA-GA, chosen on the validation split
        // (docs/results/full-retrained-base/probes-600.md).
        ? new() { Quick = true, OutputDirectory = output, Steps = 100, BatchSize = 16, AblationSteps = 0, SwapSteps = 200, SwapEvalExamples = 200, EvalExamples = 400, AblationEvalExamples = 0,
                  Ranks = [], AblationSeeds = [], FullLearningRates = [1e-4f], LoraLearningRates = [1e-3f], Retrieval = RetrievalOptions.Defaults(true),
                  Comparison = ComparisonEntry.Quick, Latency = new(Steps: 8, Repeats: 3), LoraInit = Nanolora.Lora.LoraInit.LoraGa }
        : new() { Quick = false, OutputDirectory = output, Steps = 600, BatchSize = 32, AblationSteps = 300, SwapSteps = 1000, SwapEvalExamples = 0, EvalExamples = 0, AblationEvalExamples = 500,
                  FullLearningRates = [1e-4f, 3e-4f, 1e-3f], LoraLearningRates = [1e-3f, 3e-3f, 1e-2f], SweepSteps = 200, SweepEdgeExtensions = 2, Retrieval = RetrievalOptions.Defaults(false),
                  // The whole validation split (3,026 pairs, ~75 s a point here, for the PEFT comparison's sweep too): 300 of
                  // them ranked three LoRA recipes against their test order, the whole split as the test split did
                  // (probes-600.md, fifth round).
                  SweepValidationExamples = 0,
                  Comparison = [.. ComparisonEntry.Defaults, new("adapter-pfeiffer", ReductionFactor: 4)], CompareRateFactors = [1f / 3, 1f, 3f], Latency = new(Steps: 16, Repeats: 7), PairedLatency = true, StepTimeSteps = 8,
                  // Chosen on the validation split (docs/results/full/probe-lora-targets): r=8 on attention and fc2 is
                  // 1.45 % of the base and scored 0.256 against q,v's 0.238; the ablation keeps the seed's q,v.
                  LoraTargets = ["q_proj", "k_proj", "v_proj", "o_proj", "fc2"], AblationTargets = ["q_proj", "v_proj"], LoraInit = Nanolora.Lora.LoraInit.LoraGa };

    /// <summary>The modules LoRA's main row (and, unless <see cref="AblationTargets"/> says otherwise, the rank ablation) adapts: by
    /// default the attention query and value projections (PEFT's default targets); the full run's defaults add k, o and fc2.</summary>
    public IReadOnlyList<string> LoraTargets { get; init; } = ["q_proj", "v_proj"];
    /// <summary>How the LoRA row's and the ablation's adapters start (Kaiming A and B = 0, or LoRA-GA).</summary>
    public Nanolora.Lora.LoraInit LoraInit { get; init; } = Nanolora.Lora.LoraInit.KaimingUniform;
    /// <summary>The modules the rank ablation adapts (null: <see cref="LoraTargets"/>). The ablation's runs are short, many and
    /// comparable among themselves, so a study can keep them on the seed's q,v while the main row moves.</summary>
    public IReadOnlyList<string>? AblationTargets { get; init; }
    /// <summary>The ablation's targets as used: <see cref="AblationTargets"/>, else <see cref="LoraTargets"/>.</summary>
    public IReadOnlyList<string> AblationTargetsUsed => AblationTargets ?? LoraTargets;
    /// <summary>On --resume, rerun the finished units that depend on changed LoRA targets instead of refusing (--rerun-changed).</summary>
    public bool RerunChanged { get; init; }
}

/// <summary>One learning rate tried for a seq2seq method: validation ROUGE-1 after <see cref="ExperimentOptions.SweepSteps"/> steps.</summary>
public sealed record RougeSweepPoint(string Method, float LearningRate, double ValidationRouge1, int Steps, int ValidationExamples);

/// <summary>
/// The seed's experiment: base vs full fine-tuning vs LoRA on Debian description → synopsis (each method at the
/// learning rate its validation sweep chose, same steps, data order and seed), a rank ablation over seeds, and a task
/// swap (a second adapter on the same loaded base, switched in one process).
/// </summary>
public sealed partial class ExperimentRunner(ExperimentOptions o, Device device)
{
    ExperimentState _state = new();   // rows, sweep, losses and finished units: written after each unit, read by --resume
    readonly Stopwatch _clock = new();
    double _elapsedBefore;            // seconds spent by earlier chunks of a resumed run
    double Elapsed => _elapsedBefore + _clock.Elapsed.TotalSeconds;

    /// <summary>Trains and scores every row (base, full, LoRA, rank ablation, adapter swap) and returns them.</summary>
    public IReadOnlyList<ResultRow> Run()
    {
        _clock.Start();
        Directory.CreateDirectory(o.OutputDirectory);
        if (o.RunRetrieval || o.RunSeq2Seq) MiniLmPackage.Locate();   // fail now, not after the first table's minutes
        if (o.RunSeq2Seq)
        {
            _state = ExperimentState.Open(o, EnsureBase(), o.Resume, o.Overwrite);
            _elapsedBefore = _state.ElapsedSeconds;
            RunSeq2Seq();
        }
        RetrievalExperiment? retrieval = null;
        if (o.RunRetrieval)
        {
            retrieval = new RetrievalExperiment(o.Retrieval, o.OutputDirectory, device, o.Resume, o.Overwrite);
            retrieval.Run();
        }
        var report = new ExperimentReport(o, _state.Rows, _state.Losses, TimeSpan.FromSeconds(Elapsed), retrieval, _state.Sweep, _state.Comparison);
        report.Write();
        report.Print();
        return _state.Rows;
    }

    void RunSeq2Seq()
    {
        var debian = TaskData.Load("debian");
        string baseDir = EnsureBase();
        var test = TaskData.Spread(debian.Test, o.EvalExamples);
        var ablationTest = TaskData.Spread(debian.Test, o.AblationEvalExamples);
        var validation = TaskData.Spread(debian.Validation, o.SweepValidationExamples);
        long baseBytes = new FileInfo(Path.Combine(baseDir, Checkpoint.WeightsFile)).Length;

        Unit("lead-8", () => Add("lead-8", "debian", 0, Save("lead-8", Evaluator.LeadBaseline(test)), null, 0, 0, 0, test.Count, 0));
        Unit("base", () =>
        {
            var (model, tokenizer) = Checkpoint.Load(baseDir, device);
            using (model)
            {
                _state.BaseParameters = model.ParameterCount();
                var baseEval = Save("base", Workflows.Evaluate(model, tokenizer, "debian", test, Decode("debian"), "base: evaluating"));
                Add("base", "debian", 0, baseEval, null, 0, _state.BaseParameters, baseBytes, test.Count, 0);
            }
        });
        long total = _state.BaseParameters;

        // Same data, steps and seed for both methods; each at the rate its own sweep chose on the validation split.
        var recipe = new FineTuneOptions { Task = "debian", Steps = o.Steps, BatchSize = o.BatchSize, Seed = o.Seed, Rank = 8, Alpha = 16, Targets = [.. o.LoraTargets], Init = o.LoraInit };
        float fullRate = ChooseRate("full", o.FullLearningRates, recipe, debian, validation, baseDir);
        float loraRate = ChooseRate("lora", o.LoraLearningRates, recipe, debian, validation, baseDir);
        if (_state.ForgetAblationAtOtherRate(loraRate) is { Count: > 0 } stale)
            Output.Terminal.Status($"experiment: LoRA's learning rate is now {loraRate:G3}; rerunning the ablation runs trained at another ({string.Join(", ", stale)}).");

        var full = recipe with { Method = "full", LearningRate = fullRate, FullLearningRate = fullRate };
        string fullDir = Path.Combine(o.OutputDirectory, "full");
        Unit("full", () =>
        {
            var (model, tokenizer) = Checkpoint.Load(baseDir, device);
            using (model)
            {
                var (fullResult, _) = Workflows.FineTune(model, tokenizer, debian, full, baseDir);
                var fullEval = Save("full", Workflows.Evaluate(model, tokenizer, "debian", test, Decode("debian"), "full: evaluating"));
                Checkpoint.Save(fullDir, model, tokenizer);
                Add("full", "debian", 0, fullEval, fullResult, 0, total, new FileInfo(Path.Combine(fullDir, Checkpoint.WeightsFile)).Length, test.Count, o.Steps, fullRate);
                _state.Losses["full"] = fullResult.Losses;
            }
        });

        // A progress folder is committed without the 114 MB checkpoint; a later unit that needs it retrains it with the
        // recorded recipe (deterministic: the same data order, seed and arithmetic give the same weights) and checks that
        // its losses are the recorded ones.
        string FullCheckpoint()
        {
            if (File.Exists(Path.Combine(fullDir, Checkpoint.WeightsFile))) return fullDir;
            Output.Terminal.Status($"experiment: the fully fine-tuned checkpoint is not in {fullDir} (a progress folder leaves it out); retraining it with the recorded recipe.");
            var (model, tokenizer) = Checkpoint.Load(baseDir, device);
            using (model)
            {
                var (again, _) = Workflows.FineTune(model, tokenizer, debian, full, baseDir);
                if (_state.Losses.TryGetValue("full", out var recorded) && !recorded.SequenceEqual(again.Losses))
                    throw new InvalidOperationException($"Retraining the full fine-tuning row gave other losses than the recorded run (step 1: {again.Losses.FirstOrDefault()} vs {recorded.FirstOrDefault()}); " +
                        $"the code or the machine's arithmetic changed since. Rerun the experiment's 'full' unit: remove it from {ExperimentState.File}'s done list.");
                Checkpoint.Save(fullDir, model, tokenizer);
            }
            return fullDir;
        }

        // LoRA r=8 on the attention query and value projections; the same process then learns and swaps a second adapter.
        var loraOptions = recipe with { Method = "lora", LearningRate = loraRate };
        string adapterDir = Path.Combine(o.OutputDirectory, "adapters", "debian-r8");
        Unit("lora", () =>
        {
            var (model, tokenizer) = Checkpoint.Load(baseDir, device);
            using (model)
            {
                var (loraResult, lora) = Workflows.FineTune(model, tokenizer, debian, loraOptions, baseDir, adapterName: "debian");
                AdapterFiles.Save(lora!, "debian", adapterDir);
                // An initialisation that rewrote the base (LoRA-GA) is saved converted to plain LoRA on the original base, which
                // equals the trained model only to fp32 rounding: the row scores the file, as the swap reloads it and users get it.
                var scored = model;
                Seq2SeqTransformer? reloaded = null;
                if (LoraConfig.Rewrites(loraOptions.Init))
                {
                    (reloaded, _) = Checkpoint.Load(baseDir, device);
                    var fromFile = LoraModel.For(reloaded);
                    AdapterFiles.Load(fromFile, adapterDir, "debian");
                    fromFile.SetActiveAdapter("debian");
                    scored = reloaded;
                }
                EvalResult loraEval;
                using (reloaded) loraEval = Save("lora-r8", Workflows.Evaluate(scored, tokenizer, "debian", test, Decode("debian"), "LoRA r=8: evaluating"));
                Add("lora", "debian", 8, loraEval, loraResult, new FileInfo(Path.Combine(adapterDir, AdapterFiles.WeightsFile)).Length, total, 0, test.Count, o.Steps, loraRate);
                _state.Losses["lora"] = loraResult.Losses;
            }
        });
        if (o.SwapSteps > 0)
            Unit("swap", () =>
            {
                // The Debian adapter as saved (a resumed run has only the file). The predictions it gave when trained are the
                // reference: after the second adapter is trained and scored, switching back must reproduce them exactly.
                var (model, tokenizer) = Checkpoint.Load(baseDir, device);
                using (model)
                {
                    var lora = LoraModel.For(model);
                    AdapterFiles.Load(lora, adapterDir, "debian");
                    lora.SetActiveAdapter("debian");
                    var saved = File.ReadAllLines(Path.Combine(o.OutputDirectory, "predictions", "lora-r8.txt"));
                    TaskSwap(model, tokenizer, lora, test, saved, baseDir);
                }
            });

        // Rank ablation: the same recipe at each rank and seed (shorter runs, a smaller test sample).
        foreach (int rank in o.Ranks)
            foreach (ulong seed in o.AblationSeeds)
                Unit($"ablation:r{rank}:seed{seed}", () =>
                {
                    var (model, tokenizer) = Checkpoint.Load(baseDir, device);
                    using (model)
                    {
                        var opt = loraOptions with { Rank = rank, Alpha = 2f * rank, Steps = o.AblationSteps, Seed = seed, Targets = [.. o.AblationTargetsUsed] };
                        var (r, l) = Workflows.FineTune(model, tokenizer, debian, opt, baseDir, adapterName: $"r{rank}", title: $"ablation r={rank} seed {seed}");
                        var e = Workflows.Evaluate(model, tokenizer, "debian", ablationTest, Decode("debian"), $"ablation r={rank} seed {seed}: evaluating");
                        string dir = Path.Combine(o.OutputDirectory, "adapters", $"ablation-r{rank}-seed{seed}");
                        AdapterFiles.Save(l!, $"r{rank}", dir);
                        Add("lora-ablation", "debian", rank, e, r, new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length, total, 0, ablationTest.Count, opt.Steps, loraRate, seed);
                    }
                });

        // The PEFT comparison: new units after all of the above, so a run begun before it existed resumes into it.
        if (o.Comparison.Count > 0)
            new PeftComparison(o, device, _state, Unit, Save, Decode("debian")).Run(debian, test, validation, baseDir, recipe, adapterDir, FullCheckpoint);
    }

    /// <summary>
    /// Runs a unit of work unless an earlier chunk finished it, then records it (with the rows it added) in the state file
    /// and rewrites results.json and results.md, so an interrupted run keeps everything up to its last unit.
    /// </summary>
    void Unit(string key, Action work)
    {
        if (_state.IsDone(key)) { Output.Terminal.Status($"experiment: '{key}' was done in an earlier run; its rows are kept."); return; }
        work();
        _state.Complete(key, o.OutputDirectory, Elapsed);
        new ExperimentReport(o, _state.Rows, _state.Losses, TimeSpan.FromSeconds(Elapsed), sweep: _state.Sweep, comparison: _state.Comparison).Write();
    }

    /// <summary>
    /// Adds a second task's adapter (<see cref="ExperimentOptions.SwapTask"/>) to the model that already holds the Debian
    /// one, trains it, then answers both tasks from the one loaded base by switching adapters. The Debian predictions must
    /// be those it gave when trained alone. A translation task is scored with sacrebleu's chrF and BLEU, beside the base
    /// (adapters disabled) and copying the English source.
    /// </summary>
    void TaskSwap(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, LoraModel lora, IReadOnlyList<Example> debianTest, IReadOnlyList<string> debianAlone, string baseDir)
    {
        var task = TaskData.Load(o.SwapTask);
        var options = new FineTuneOptions { Task = task.Name, Method = "lora", Rank = o.SwapRank, Alpha = 2f * o.SwapRank, Steps = o.SwapSteps, BatchSize = o.BatchSize, Seed = o.Seed + 1,
            LearningRate = o.SwapLearningRate, Targets = o.SwapTargets };
        var (result, _) = Workflows.FineTune(model, tokenizer, task, options, baseDir, lora, adapterName: task.Name);
        var test = TaskData.Spread(task.Test, o.SwapEvalExamples);
        var adapted = Save($"{task.Name}-lora-r{o.SwapRank}", Workflows.Evaluate(model, tokenizer, task.Name, test, Decode(task.Name), $"swap → {task.Name} adapter"));
        string dir = Path.Combine(o.OutputDirectory, "adapters", $"{task.Name}-r{o.SwapRank}");
        AdapterFiles.Save(lora, task.Name, dir);
        Add("lora", task.Name, o.SwapRank, adapted, result, new FileInfo(Path.Combine(dir, AdapterFiles.WeightsFile)).Length, _state.BaseParameters, 0, test.Count, options.Steps, o.SwapLearningRate);

        lora.SetActiveAdapter("debian");
        var again = Workflows.Evaluate(model, tokenizer, "debian", debianTest, Decode("debian"), "swap → debian adapter");
        bool same = again.Predictions.Select(p => p.ReplaceLineEndings(" ")).SequenceEqual(debianAlone);
        Output.Terminal.Status($"adapter swap: debian predictions after switching back are {(same ? "identical" : "different")} to those the adapter gave when trained.");
        if (!same) throw new InvalidOperationException($"The Debian adapter (saved in '{Path.Combine(o.OutputDirectory, "adapters", "debian-r8")}'), loaded beside the {task.Name} adapter and switched back to, predicts differently from when it was trained: saving, loading or switching adapters changed its outputs.");
        using (lora.DisableAdapters())
        {
            var baseOnTask = Save($"{task.Name}-base", Workflows.Evaluate(model, tokenizer, task.Name, test, Decode(task.Name), $"adapters disabled → {task.Name}"));
            Add("base", task.Name, 0, baseOnTask, null, 0, _state.BaseParameters, 0, test.Count, 0);
        }
        if (TaskData.IsTranslation(task.Name))
        {
            var copy = new EvalResult(Rouge.Average(test.Select(e => e.Source).ToList(), test.Select(e => e.Target).ToList()), test.Select(e => e.Source).ToList(), test.Select(e => e.Target).ToList());
            Add("copy-source", task.Name, 0, copy, null, 0, 0, 0, test.Count, 0);
        }
    }

    /// <summary>
    /// The experiment's decoding, the same for every row: greedy, never repeating a bigram (Hugging Face's
    /// no_repeat_ngram_size, as summarization recipes set it), which stops the base's "for the library for the library" loops.
    /// </summary>
    DecodeOptions Decode(string task) => Workflows.DecodeFor(task, noRepeatNgram: o.NoRepeatNgram);

    string EnsureBase()
    {
        if (File.Exists(Path.Combine(o.BaseDirectory, Checkpoint.WeightsFile))) return o.BaseDirectory;
        throw new FileNotFoundException($"No base checkpoint at '{o.BaseDirectory}' (the repository ships models/base-minilm). Build one with " +
            "`nanolora pretrain --init minilm --out DIR` (hours on a CPU; see README) or pass --base.");
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

    /// <summary>
    /// Adds a row; 0 for rank, sizes or steps means "none" and is stored as null, as is every cost of an untrained row. A
    /// translation task's row also gets sacrebleu's chrF and BLEU (and the uncased variants) of the predictions.
    /// </summary>
    void Add(string method, string task, int rank, EvalResult eval, TrainResult? train, long adapterBytes, long totalParams, long checkpointBytes, int examples, int steps,
        float? rate = null, ulong? seed = null)
    {
        var row = ResultRow.Of(method, task, rank, eval.Rouge, train, adapterBytes, totalParams, checkpointBytes, examples, steps) with { LearningRate = rate, Seed = seed };
        if (TaskData.IsTranslation(task))
        {
            var t = TranslationScores.Compute(eval.Predictions, eval.References);
            row = row with { Chrf = t.Chrf, Bleu = t.Bleu, ChrfUncased = t.ChrfUncased, BleuUncased = t.BleuUncased };
        }
        _state.Rows.Add(row);
    }
}
