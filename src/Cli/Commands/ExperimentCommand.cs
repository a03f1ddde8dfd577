using System.CommandLine;
using Nanolora.Tensors;

namespace Nanolora.Cli;

/// <summary>experiment: the project's main job.</summary>
public static class ExperimentCommand
{
    public static Command Create(Option<string?> device)
    {
        var quick = new Option<bool>("--quick") { Description = "the main job's budget: finishes within 15 minutes on a 2-core CPU" };
        var output = new Option<string>("--out") { Description = "output directory", DefaultValueFactory = _ => "out/experiment" };
        var baseDir = new Option<string>("--base") { Description = "seq2seq base checkpoint", DefaultValueFactory = _ => "models/base-minilm" };
        var steps = new Option<int?>("--steps") { Description = "fine-tuning steps per method (overrides the preset)" }.Range(1);
        var evalExamples = new Option<int?>("--eval-examples") { Description = "test examples to score (0: the whole split)" }.Range(0);
        var ablationSteps = new Option<int?>("--ablation-steps") { Description = "steps per rank in the ablation" }.Range(1);
        var wordnetSteps = new Option<int?>("--wordnet-steps") { Description = "steps for the WordNet adapter of the task swap" }.Range(1);
        var ranks = new Option<string?>("--ranks") { Description = "comma-separated ranks for the ablation, e.g. 1,2,4,8,16,32,64" };
        var part = new Option<string>("--part") { Description = "all, seq2seq (the tiny base's table) or retrieval (all-MiniLM-L6-v2's table)", DefaultValueFactory = _ => "all" };
        var retrievalSteps = new Option<int?>("--retrieval-steps") { Description = "training steps per method for the retrieval table" }.Range(1);
        var cmd = new Command("experiment", "Base vs full fine-tuning vs LoRA on Debian synopses, a rank ablation and a WordNet adapter swap; writes results.json, results.md and plots.")
            { quick, output, baseDir, steps, evalExamples, ablationSteps, wordnetSteps, ranks, part, retrievalSteps };
        cmd.SetAction(r => Program.Guard(() =>
        {
            Device dev = Workflows.ResolveDevice(r.GetValue(device));
            var o = ExperimentOptions.Defaults(r.GetValue(quick), r.GetValue(output)!) with { BaseDirectory = r.GetValue(baseDir)! };
            if (r.GetValue(steps) is int s) o = o with { Steps = s };
            if (r.GetValue(evalExamples) is int e) o = o with { EvalExamples = e, AblationEvalExamples = Math.Min(o.AblationEvalExamples, e) };
            if (r.GetValue(ablationSteps) is int a) o = o with { AblationSteps = a };
            if (r.GetValue(wordnetSteps) is int w) o = o with { WordnetSteps = w };
            if (r.GetValue(ranks) is string list) o = o with { Ranks = list.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(ParseRank).ToList() };
            o = r.GetValue(part) switch
            {
                "all" => o,
                "seq2seq" => o with { RunRetrieval = false },
                "retrieval" => o with { RunSeq2Seq = false },
                var p => throw new ArgumentException($"--part must be all, seq2seq or retrieval, got '{p}'."),
            };
            if (r.GetValue(retrievalSteps) is int rs)
                o = o with { Retrieval = o.Retrieval with { Steps = rs } };
            new ExperimentRunner(o, dev).Run();
            return 0;
        }));
        return cmd;
    }

    static int ParseRank(string text) =>
        int.TryParse(text.Trim(), out int r) && r is >= 1 and <= 4096 ? r : throw new ArgumentException($"--ranks: '{text}' is not a rank; allowed: integers from 1 to 4096, comma-separated.");
}
