using System.CommandLine;
using Nanolora.Cli.Output;
using Nanolora.Tensors;

namespace Nanolora.Cli;

/// <summary>experiment: the project's main job.</summary>
public static class ExperimentCommand
{
    /// <summary>The <c>experiment</c> command: base vs full fine-tuning vs LoRA, with the ablation, the adapter swap and the retrieval table.</summary>
    public static Command Create(Option<string?> device)
    {
        var quick = new Option<bool>("--quick") { Description = "the main job's budget: finishes within 15 minutes on a 2-core CPU (default: the full experiment)" };
        var output = new Option<string>("--out") { Description = "output folder (results.json, results.md, plots, adapters, predictions)", DefaultValueFactory = _ => "out/experiment" };
        var baseDir = SharedOptions.Model("seq2seq base checkpoint folder; the default is the shipped BERT2BERT base on all-MiniLM-L6-v2, found beside the program when not in the current directory",
            ShippedPaths.MiniLmBase);
        var steps = new Option<int?>("--steps") { Description = "fine-tuning steps per method (default: 100 quick, 600 full)" }.Range(1);
        var evalExamples = new Option<int?>("--eval-examples") { Description = "test examples to score, spread over the split (0: the whole split; default: 400 quick, all full)" }.Range(0);
        var ablationSteps = new Option<int?>("--ablation-steps") { Description = "steps per rank and seed in the ablation (default: none quick, 300 full)" }.Range(1);
        var swapTask = new Option<string>("--swap-task") { Description = "the second task whose LoRA adapter is swapped in on the same loaded base", DefaultValueFactory = _ => "translate-en-de" }
            .Choices(TaskData.Names);
        var swapSteps = new Option<int?>("--swap-steps") { Description = "steps for the second task's adapter (0: no task swap; default: 200 quick, 1,000 full)" }.Range(0);
        var ranks = new Option<string?>("--ranks") { Description = "comma-separated ranks for the ablation, 2 seeds each (default: none quick; 1,2,4,8,16,32,64 full)" };
        var part = new Option<string>("--part") { Description = "which tables: all, seq2seq (the BERT2BERT base's) or retrieval (all-MiniLM-L6-v2's)", DefaultValueFactory = _ => "all" }
            .Choices("all", "seq2seq", "retrieval");
        var retrievalSteps = new Option<int?>("--retrieval-steps") { Description = "training steps per method for the retrieval table (default: 60 quick, 100 full)" }.Range(1);
        var sweepSteps = new Option<int?>("--sweep-steps") { Description = "full only: steps of each learning-rate trial on the validation split (default 200)" }.Range(1);
        var sweepExamples = new Option<int?>("--sweep-validation-examples") { Description = "validation pairs each learning-rate trial (the sweep's and the comparison's) is scored on, spread over the split (0: the whole split, the full budget's default; full runs made before 2026-12-05 used 300)" }.Range(0);
        var resume = new Option<bool>("--resume") { Description = $"continue the experiment in --out from its last finished unit ({ExperimentState.File}, {RetrievalState.File}; the same settings and base, except that --ranks, the ablation's steps and seeds, --swap-steps and the targets may change when no finished unit depends on them: a run of the main rows only can be extended with the ablation and the swap)" };
        var overwrite = new Option<bool>("--overwrite") { Description = "replace the experiment --out already holds" };
        var compare = new Option<string?>("--compare")
        {
            Description = $"the PEFT comparison's methods after base, full and LoRA (in the seq2seq table, and in the retrieval table, which compares none in the quick run unless given): comma-separated {string.Join(", ", PeftRecipes.Names)}, adapters as NAME:FACTOR (reduction factor), chosen layers as selective:LAYERS (indices joined by '_'), or none " +
                          $"(default: {string.Join(",", ComparisonEntry.Defaults.Select(c => c.Option))}, and adapter-pfeiffer:4 in the full run)",
        };
        var loraTargets = new Option<string?>("--lora-targets")
            { Description = "comma-separated modules LoRA's main row adapts (default: q_proj,v_proj quick; q_proj,k_proj,v_proj,o_proj,fc2 full, 1.45 % of the base, chosen on the validation split)" };
        var ablationTargets = new Option<string?>("--ablation-targets")
            { Description = "comma-separated modules the rank ablation adapts (default: q_proj,v_proj full; those of --lora-targets when that is given)" };
        var loraInit = new Option<string>("--lora-init")
            { Description = "how the LoRA row's and the ablation's adapters start: lora-ga (the leading directions of each weight's loss gradient on the first 4 batches, PEFT's lora_ga; the default, chosen on the validation split) or kaiming (B = 0)", DefaultValueFactory = _ => "lora-ga" }
            .Choices("kaiming", "lora-ga");
        var rerunChanged = new Option<bool>("--rerun-changed")
            { Description = "with --resume: when --lora-targets, --lora-init, --ablation-targets, --ranks, --ablation-steps or --swap-steps differ from the recorded ones, rerun the finished units that depend on them (and only those: the LoRA sweep, row and swap; the ablation runs of ranks no longer listed) instead of refusing" };
        var json = JsonOutput.Option(ExperimentJson.SchemaName);
        var cmd = new Command("experiment", "Base vs full fine-tuning vs LoRA on Debian synopses (BERT2BERT base on all-MiniLM-L6-v2), a rank ablation, a translation adapter swapped in, and all-MiniLM-L6-v2 retrieval; writes results.json, results.md and plots.")
            { quick, output, baseDir, steps, evalExamples, ablationSteps, swapTask, swapSteps, ranks, part, retrievalSteps, sweepSteps, sweepExamples, compare, loraTargets, ablationTargets, loraInit, resume, rerunChanged, overwrite, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            Device dev = Workflows.ResolveDevice(r.GetValue(device));
            var o = ExperimentOptions.Defaults(r.GetValue(quick), r.GetValue(output)!) with { BaseDirectory = ShippedPaths.Resolve(r.GetValue(baseDir)!) };
            if (r.GetValue(steps) is int s) o = o with { Steps = s };
            if (r.GetValue(evalExamples) is int e && e > 0)
                o = o with { EvalExamples = e, AblationEvalExamples = Math.Min(o.AblationEvalExamples, e), SweepValidationExamples = o.SweepValidationExamples == 0 ? e : Math.Min(o.SweepValidationExamples, e), SwapEvalExamples = o.SwapEvalExamples == 0 ? e : Math.Min(o.SwapEvalExamples, e) };
            else if (r.GetValue(evalExamples) is 0) o = o with { EvalExamples = 0 };
            if (r.GetValue(sweepSteps) is int ss) o = o with { SweepSteps = ss };
            if (r.GetValue(sweepExamples) is int sv) o = o with { SweepValidationExamples = sv };
            if (r.GetValue(loraTargets) is string t) o = o with { LoraTargets = Targets("--lora-targets", t), AblationTargets = null };
            if (r.GetValue(ablationTargets) is string at) o = o with { AblationTargets = Targets("--ablation-targets", at) };
            o = o with { LoraInit = r.GetValue(loraInit) == "kaiming" ? Nanolora.Lora.LoraInit.KaimingUniform : Nanolora.Lora.LoraInit.LoraGa };
            if (r.GetValue(rerunChanged) && !r.GetValue(resume)) throw new ArgumentException("--rerun-changed: only with --resume (it decides which finished units of a resumed experiment run again).");
            if (r.GetValue(ablationSteps) is int a) o = o with { AblationSteps = a };
            o = o with { SwapTask = r.GetValue(swapTask)! };
            if (r.GetValue(swapSteps) is int w) o = o with { SwapSteps = w };
            if (r.GetValue(ranks) is string list) o = o with { Ranks = list.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ParseRank).ToList() };
            o = r.GetValue(part) switch
            {
                "all" => o,
                "seq2seq" => o with { RunRetrieval = false },
                "retrieval" => o with { RunSeq2Seq = false },
                var p => throw new ArgumentException($"--part must be all, seq2seq or retrieval, got '{p}'."),
            };
            if (r.GetValue(compare) is string c)
            {
                List<ComparisonEntry> methods = c.Trim() == "none" ? [] : c.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(ParseComparison).ToList();
                o = o with { Comparison = methods, Retrieval = o.Retrieval with { Comparison = methods } };
            }
            if (r.GetValue(retrievalSteps) is int rs)
                o = o with { Retrieval = o.Retrieval with { Steps = rs } };
            // With --json the runner prints results.json (the same bytes as the file) instead of the tables.
            new ExperimentRunner(o with { Json = r.GetValue(json), Resume = r.GetValue(resume), RerunChanged = r.GetValue(rerunChanged), Overwrite = r.GetValue(overwrite) }, dev).Run();
            return 0;
        }));
        return cmd;
    }

    /// <summary>NAME, NAME:FACTOR (bottleneck adapters' reduction factor) or selective:LAYERS (layer indices joined by '_', as in the unit's key).</summary>
    internal static ComparisonEntry ParseComparison(string text)
    {
        var parts = text.Split(':');
        var recipe = PeftRecipes.Find(parts[0]) ?? throw new ArgumentException($"--compare: '{parts[0]}' is not a method; expected one of {string.Join(", ", PeftRecipes.Names)} (or none).");
        if (recipe.Name == "selective")
        {
            var layers = parts.Length == 2 ? parts[1].Split('_').Select(l => int.TryParse(l, out int i) && i >= 0 ? i : -1).ToList() : [];
            if (layers.Count == 0 || layers.Contains(-1))
                throw new ArgumentException($"--compare: '{text}': expected selective:LAYERS, layer indices (integers ≥ 0) joined by '_', such as selective:5 or selective:4_5.");
            return new ComparisonEntry(recipe.Name, Layers: layers);
        }
        if (parts.Length == 1) return new ComparisonEntry(recipe.Name, recipe.UsesReductionFactor ? PeftRecipes.DefaultReductionFactor : null);
        if (parts.Length == 2 && recipe.UsesReductionFactor && int.TryParse(parts[1], out int f) && f >= 1) return new ComparisonEntry(recipe.Name, f);
        throw new ArgumentException($"--compare: '{text}': expected NAME, or NAME:FACTOR (an integer ≥ 1) for adapter-houlsby and adapter-pfeiffer.");
    }

    static string[] Targets(string option, string text)
    {
        var targets = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (targets.Length == 0) throw new ArgumentException($"{option}: expected comma-separated module names such as q_proj,v_proj, got '{text}'.");
        return targets;
    }

    static int ParseRank(string text) =>
        int.TryParse(text.Trim(), out int r) && r is >= 1 and <= 4096 ? r : throw new ArgumentException($"--ranks: '{text}' is not a rank; allowed: integers from 1 to 4096, comma-separated.");
}
