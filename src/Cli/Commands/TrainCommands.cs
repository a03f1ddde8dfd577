using System.CommandLine;
using Nanolora.Lora;
using Nanolora.Transformer;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>pretrain and finetune.</summary>
public static class TrainCommands
{
    public static Command Pretrain(Option<string?> device)
    {
        var preset = new Option<string>("--preset") { Description = "tiny, small or transformer-base", DefaultValueFactory = _ => "tiny" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 3000 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 32 };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => 1e-3f };
        var vocab = new Option<int>("--vocab") { Description = "subword vocabulary size (GPT-2 ids kept by frequency)", DefaultValueFactory = _ => 8000 };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1UL };
        var output = new Option<string>("--out") { Description = "checkpoint directory", DefaultValueFactory = _ => "models/base-tiny" };
        var cmd = new Command("pretrain", "Pretrain a base encoder-decoder with T5-style span corruption on Debian descriptions and man pages (plus man page → synopsis).")
            { preset, steps, batch, lr, vocab, seed, output };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var o = new PretrainOptions(r.GetValue(preset)!, r.GetValue(steps), r.GetValue(batch), r.GetValue(lr), r.GetValue(vocab), null, r.GetValue(seed));
            var (model, _, result) = Workflows.Pretrain(o, dev, r.GetValue(output)!);
            AnsiConsole.MarkupLine($"pretrained {model.ParameterCount():N0} parameters on {dev.Id}: final loss {result.Losses[^1]:F3}, {result.MeanStepMilliseconds:F0} ms/step → {Markup.Escape(r.GetValue(output)!)}");
            model.Dispose();
            if (Nanolora.Autograd.Profiler.Enabled) Console.WriteLine(Nanolora.Autograd.Profiler.Report());
            return 0;
        }));
        return cmd;
    }

    public static Command FineTune(Option<string?> device)
    {
        var method = new Option<string>("--method") { Description = "full or lora", DefaultValueFactory = _ => "lora" };
        var baseDir = new Option<string>("--base") { Description = "base checkpoint directory", DefaultValueFactory = _ => "models/base-tiny" };
        var task = new Option<string>("--task") { Description = "debian or wordnet", DefaultValueFactory = _ => "debian" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 600 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 32 };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => 1e-3f };
        var rank = new Option<int>("--rank") { DefaultValueFactory = _ => 8 };
        var alpha = new Option<float?>("--alpha") { Description = "LoRA alpha (default 2·rank)" };
        var targets = new Option<string>("--targets") { DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj" };
        var output = new Option<string>("--out") { Description = "where to write the adapter (lora) or checkpoint (full)", Required = true };
        var cmd = new Command("finetune", "Fine-tune a base checkpoint on a task: all weights (full) or LoRA adapters only.")
            { method, baseDir, task, steps, batch, lr, rank, alpha, targets, output };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var (model, tokenizer) = Checkpoint.Load(r.GetValue(baseDir)!, dev);
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            var o = new FineTuneOptions
            {
                Task = data.Name, Method = r.GetValue(method)!, Steps = r.GetValue(steps), BatchSize = r.GetValue(batch),
                LearningRate = r.GetValue(lr), FullLearningRate = r.GetValue(lr), Rank = r.GetValue(rank), Alpha = r.GetValue(alpha),
                Targets = r.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
            var (result, lora) = Workflows.FineTune(model, tokenizer, data, o, r.GetValue(baseDir)!);
            var outDir = r.GetValue(output)!;
            if (lora != null) AdapterFiles.Save(lora, "default", outDir);
            else Checkpoint.Save(outDir, model, tokenizer);
            AnsiConsole.MarkupLine($"trained {result.TrainableParameters:N0} parameters, final loss {result.Losses[^1]:F3}, {result.MeanStepMilliseconds:F0} ms/step, optimizer state {result.OptimizerStateBytes:N0} B → {Markup.Escape(outDir)}");
            return 0;
        }));
        return cmd;
    }
}
