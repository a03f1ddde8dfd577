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
        var warmup = new Option<int?>("--warmup") { Description = "warm-up steps (default: a tenth of --steps)" };
        var rank = new Option<int>("--rank") { DefaultValueFactory = _ => 8 };
        var alpha = new Option<float?>("--alpha") { Description = "LoRA alpha (default 2·rank)" };
        var targets = new Option<string>("--targets") { DefaultValueFactory = _ => "q_proj,k_proj,v_proj,o_proj" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1UL };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "full only: save a resumable checkpoint to --out every N steps (and validate)", DefaultValueFactory = _ => 0 };
        var resume = new Option<bool>("--resume") { Description = "full only: continue the run checkpointed in --out (same schedule and data order)" };
        var trainExamples = new Option<int?>("--train-examples") { Description = "train on only the first N training examples (quick trials)" };
        var output = new Option<string>("--out") { Description = "where to write the adapter (lora) or checkpoint (full)", Required = true };
        var cmd = new Command("finetune", "Fine-tune a base checkpoint on a task: all weights (full) or LoRA adapters only.")
            { method, baseDir, task, steps, batch, lr, warmup, rank, alpha, targets, seed, checkpointEvery, resume, trainExamples, output };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var outDir = r.GetValue(output)!;
            bool isResume = r.GetValue(resume);
            if ((isResume || r.GetValue(checkpointEvery) > 0) && r.GetValue(method) != "full")
                throw new ArgumentException("--resume and --checkpoint-every need --method full.");
            var (model, tokenizer) = isResume ? ResumePoint(outDir, dev) : Checkpoint.Load(r.GetValue(baseDir)!, dev);
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            bool checkpointing = r.GetValue(checkpointEvery) > 0 || isResume;
            var o = new FineTuneOptions
            {
                Task = data.Name, Method = r.GetValue(method)!, Steps = r.GetValue(steps), BatchSize = r.GetValue(batch),
                LearningRate = r.GetValue(lr), FullLearningRate = r.GetValue(lr), WarmupSteps = r.GetValue(warmup), Rank = r.GetValue(rank),
                Alpha = r.GetValue(alpha), Seed = r.GetValue(seed), TrainExamples = r.GetValue(trainExamples),
                Targets = r.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                CheckpointDirectory = checkpointing ? outDir : null, CheckpointEvery = r.GetValue(checkpointEvery), Resume = isResume,
            };
            var (result, lora) = Workflows.FineTune(model, tokenizer, data, o, r.GetValue(baseDir)!);
            if (lora != null) AdapterFiles.Save(lora, "default", outDir);
            else if (!checkpointing) Checkpoint.Save(outDir, model, tokenizer); // a checkpointing run already saved its last step
            AnsiConsole.MarkupLine($"trained {result.TrainableParameters:N0} parameters, final loss {result.Losses[^1]:F3}, {result.MeanStepMilliseconds:F0} ms/step, optimizer state {result.OptimizerStateBytes:N0} B → {Markup.Escape(outDir)}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The model and tokenizer of the run checkpointed in <paramref name="outDir"/>.</summary>
    static (Seq2SeqTransformer, SubwordTokenizer) ResumePoint(string outDir, Nanolora.Tensors.Device device)
    {
        if (!File.Exists(Path.Combine(outDir, Checkpoint.StateFile)))
            throw new FileNotFoundException($"--resume: '{outDir}' holds no {Checkpoint.StateFile}; start the run with --checkpoint-every first.");
        return Checkpoint.Load(outDir, device);
    }

    public static Command Train(Option<string?> device)
    {
        var preset = new Option<string>("--preset") { Description = "tiny, small or transformer-base", DefaultValueFactory = _ => "tiny" };
        var task = new Option<string>("--task") { Description = "debian or wordnet", DefaultValueFactory = _ => "debian" };
        var vocab = new Option<int>("--vocab") { Description = "subword vocabulary size, built from the task's training split (GPT-2 ids kept by frequency)", DefaultValueFactory = _ => 8000 };
        var tokenizerFile = new Option<string?>("--tokenizer") { Description = "use this tokenizer.json instead of building one" };
        var steps = new Option<int>("--steps") { DefaultValueFactory = _ => 3000 };
        var batch = new Option<int>("--batch-size") { DefaultValueFactory = _ => 32 };
        var lr = new Option<float>("--lr") { DefaultValueFactory = _ => 2e-3f };
        var warmup = new Option<int?>("--warmup") { Description = "warm-up steps (default: a tenth of --steps)" };
        var seed = new Option<ulong>("--seed") { DefaultValueFactory = _ => 1UL };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "save a resumable checkpoint to --out every N steps (and validate)", DefaultValueFactory = _ => 500 };
        var resume = new Option<bool>("--resume") { Description = "continue the run checkpointed in --out (same schedule and data order)" };
        var trainExamples = new Option<int?>("--train-examples") { Description = "train on only the first N training examples (quick trials)" };
        var output = new Option<string>("--out") { Description = "checkpoint directory", Required = true };
        var cmd = new Command("train", "Train a freshly initialized model on a task (no base, no pretraining): all weights, resumable.")
            { preset, task, vocab, tokenizerFile, steps, batch, lr, warmup, seed, checkpointEvery, resume, trainExamples, output };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var outDir = r.GetValue(output)!;
            var data = TaskData.Load(r.GetValue(task)!);
            Seq2SeqTransformer model;
            SubwordTokenizer tokenizer;
            if (r.GetValue(resume)) (model, tokenizer) = ResumePoint(outDir, dev);
            else
            {
                if (File.Exists(Path.Combine(outDir, Checkpoint.StateFile)))
                    throw new ArgumentException($"'{outDir}' already holds a training run ({Checkpoint.StateFile}); continue it with --resume or choose another --out.");
                tokenizer = r.GetValue(tokenizerFile) is string path ? SubwordTokenizer.Load(path)
                    : SubwordTokenizer.Build(data.Train.SelectMany(e => new[] { e.Source, e.Target }), r.GetValue(vocab), minCount: 2);
                model = new Seq2SeqTransformer(TransformerConfig.Preset(r.GetValue(preset)!, tokenizer.VocabSize) with { Seed = r.GetValue(seed) }, dev);
            }
            using var _ = model;
            var o = new FineTuneOptions
            {
                Task = data.Name, Method = "full", Steps = r.GetValue(steps), BatchSize = r.GetValue(batch), FullLearningRate = r.GetValue(lr),
                WarmupSteps = r.GetValue(warmup), Seed = r.GetValue(seed), CheckpointDirectory = outDir, TrainExamples = r.GetValue(trainExamples),
                CheckpointEvery = r.GetValue(checkpointEvery), Resume = r.GetValue(resume),
            };
            var (result, _) = Workflows.FineTune(model, tokenizer, data, o, "(none)", title: $"training {r.GetValue(preset)} from scratch ({data.Name})");
            Plots.TrainingCurve(result.Losses, result.ValidationLosses, $"Training {model.Config.DModel}-wide {model.Config.EncoderLayers}+{model.Config.DecoderLayers} from scratch ({data.Name})",
                Path.Combine(outDir, "loss.png"));
            AnsiConsole.MarkupLine($"trained {result.TrainableParameters:N0} parameters, final loss {result.Losses[^1]:F3}, {result.MeanStepMilliseconds:F0} ms/step → {Markup.Escape(outDir)}");
            return 0;
        }));
        return cmd;
    }
}
