using System.CommandLine;
using Nanolora.Cli.Output;
using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>pretrain and finetune.</summary>
public static class TrainCommands
{
    /// <summary>Full fine-tuning's default learning rate (LoRA's is <see cref="LoraDefaults.LearningRate"/>).</summary>
    const float FullLearningRate = 1e-3f;

    /// <summary>The <c>pretrain</c> command: pretrains a base encoder-decoder.</summary>
    public static Command Pretrain(Option<string?> device)
    {
        var preset = Preset();
        var steps = Steps(3000);
        var batch = BatchSize();
        var lr = LearningRate(1e-3f);
        var vocab = Vocab("subword vocabulary size, in tokens (GPT-2 ids kept by frequency)");
        var seed = Seed();
        var output = new Option<string>("--out") { Description = "checkpoint folder to write (relative to the current directory)", DefaultValueFactory = _ => ShippedPaths.BaseModel };
        var overwrite = Overwrite();
        var json = JsonOutput.Option(TrainingSummary.Schema);
        var init = new Option<string>("--init")
        {
            Description = "none: a fresh model of --preset with span corruption; minilm: BERT2BERT on all-MiniLM-L6-v2, decoder trained on gap sentences + man pages; "
                + "DIR: the same on the BERT of a Hugging Face folder (config.json, model.safetensors, vocab.txt), e.g. bert-base-uncased",
            DefaultValueFactory = _ => "none",
        };
        init.Validators.Add(v =>
        {
            var value = v.GetValueOrDefault<string>();
            if (value is not ("none" or Bert2Bert.MiniLmInit) && !Directory.Exists(value))
                v.AddError($"--init: '{value}' is neither none, minilm nor a folder; expected a Hugging Face BERT folder (config.json, model.safetensors, vocab.txt).");
        });
        var decoderLayers = new Option<int>("--decoder-layers") { Description = "minilm or a BERT folder: decoder layers (from the BERT's layers spread over its depth; at most as many as it has)", DefaultValueFactory = _ => 3 }.Range(1, 64);
        var stopAfter = new Option<int?>("--stop-after") { Description = "minilm or a BERT folder: end this process after step N (checkpointed), to train in chunks" }.Range(1);
        var resume = new Option<bool>("--resume") { Description = "minilm or a BERT folder: continue the run checkpointed in --out" };
        var forceResume = ForceResume();
        var encoderRank = new Option<int>("--encoder-rank") { Description = "minilm or a BERT folder: 0 keeps the BERT's encoder; R trains it too through LoRA adapters of rank R on every linear layer (a base on MiniLM ships the change low-rank)", DefaultValueFactory = _ => 0 }.Range(0, 384);
        var encoderFull = new Option<bool>("--encoder-full") { Description = "minilm or a BERT folder: train the encoder's layers in full (not through adapters; the embeddings stay the BERT's); the shipped base then stores the whole encoder" };
        var encoderLrScale = new Option<float>("--encoder-lr-scale") { Description = "minilm or a BERT folder with --encoder-rank or --encoder-full: the encoder's learning rate as a multiple of --lr", DefaultValueFactory = _ => 1f }.Positive(1000f);
        var gapExamples = new Option<int>("--gap-examples") { Description = "minilm or a BERT folder: gap-sentence examples in the mixture, each from a distinct Debian training description (more than there are: all of them)", DefaultValueFactory = _ => new Bert2BertPretrainOptions().GapExamples }.Range(0);
        var ship = new Option<string?>("--ship") { Description = "minilm or a BERT folder: when the run has finished, also write the base there compactly (F16; on MiniLM only what differs from it)" };
        var cmd = new Command("pretrain", "Pretrain a base encoder-decoder: T5-style span corruption on Debian descriptions and man pages (plus man page → synopsis), or (--init minilm or a BERT folder) a BERT2BERT decoder on all-MiniLM-L6-v2 or that BERT.")
            { preset, steps, batch, lr, vocab, seed, output, overwrite, init, decoderLayers, encoderRank, encoderFull, encoderLrScale, gapExamples, stopAfter, resume, forceResume, ship, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            if (r.GetValue(init) != "none")
            {
                if (r.GetResult(preset) is { Implicit: false } || r.GetResult(vocab) is { Implicit: false }) throw new ArgumentException($"--preset and --vocab do not apply to --init {r.GetValue(init)} (the model and vocabulary are the BERT's).");
                if (r.GetValue(encoderRank) > 0 && r.GetValue(encoderFull))
                    throw new ArgumentException($"--encoder-rank {r.GetValue(encoderRank)} and --encoder-full: the encoder trains through adapters or in full, not both.");
                if (r.GetValue(encoderRank) == 0 && !r.GetValue(encoderFull) && r.GetResult(encoderLrScale) is { Implicit: false })
                    throw new ArgumentException("--encoder-lr-scale applies only with --encoder-rank R > 0 or --encoder-full (the encoder is frozen otherwise).");
                var outDir = r.GetValue(output)!;
                // Refused before the run folder is made: a BERT too shallow for --decoder-layers (here, naming the option), or a
                // folder that does not build (Run builds the model before it calls back to make the folders).
                string bertName = r.GetValue(init) == Bert2Bert.MiniLmInit ? "all-MiniLM-L6-v2" : $"the BERT in {r.GetValue(init)}";
                int depth = r.GetValue(init) == Bert2Bert.MiniLmInit ? Bert2Bert.MiniLmLayers : PretrainedBert.CheckFolder(r.GetValue(init)!).Layers;
                if (r.GetValue(decoderLayers) > depth)
                    throw new ArgumentException($"--decoder-layers is {r.GetValue(decoderLayers)}; {bertName} has {depth} layers to start them from, so at most {depth}.");
                var bo = new Bert2BertPretrainOptions
                {
                    DecoderLayers = r.GetValue(decoderLayers), Steps = r.GetValue(steps), LearningRate = r.GetResult(lr) is { Implicit: false } ? r.GetValue(lr) : 3e-4f,
                    BatchSize = r.GetResult(batch) is { Implicit: false } ? r.GetValue(batch) : 16, Seed = r.GetValue(seed), StopAfterStep = r.GetValue(stopAfter), Resume = r.GetValue(resume), ForceResume = r.GetValue(forceResume),
                    EncoderRank = r.GetValue(encoderRank), EncoderFull = r.GetValue(encoderFull), EncoderLearningRateScale = r.GetValue(encoderLrScale), GapExamples = r.GetValue(gapExamples),
                    Init = r.GetValue(init)!,
                };
                var shipDir = r.GetValue(ship);
                var run = Bert2BertPretraining.Run(bo, dev, outDir, () =>
                {
                    if (!r.GetValue(resume)) RunFolders.RequireFresh(outDir, r.GetValue(overwrite), "pretrain");
                    // Refused before hours of training, not after them.
                    if (shipDir != null) RunFolders.RequireFresh(shipDir, r.GetValue(overwrite), "pretrain", "--ship");
                });
                using (run.Model)
                {
                    var res = run.Result;
                    long baseParameters = run.EncoderDelta?.Report().BaseParameters ?? run.Model.ParameterCount();
                    TrainingSummary.Write(r.GetValue(json), "pretrain", bo.EncoderRank > 0 ? "decoder+encoder-lora" : bo.EncoderFull ? "decoder+encoder" : "decoder", "gap-sentences+manpages", dev.Id, outDir, bo.Steps, baseParameters, res);
                    if (res.Losses.Count >= bo.Steps)
                    {
                        Bert2BertPretraining.Finish(run, outDir, shipDir);
                        if (shipDir != null) Terminal.Status($"shipped the base (F16) → {shipDir}");
                    }
                }
                return 0;
            }
            if (r.GetResult(encoderRank) is { Implicit: false } || r.GetResult(encoderLrScale) is { Implicit: false } || r.GetValue(encoderFull))
                throw new ArgumentException("--encoder-rank, --encoder-full and --encoder-lr-scale apply only to --init minilm or a BERT folder (the span-corruption base trains every weight).");
            if (r.GetResult(gapExamples) is { Implicit: false })
                throw new ArgumentException("--gap-examples applies only to --init minilm or a BERT folder (the span-corruption base reads every shipped text).");
            RunFolders.RequireFresh(r.GetValue(output)!, r.GetValue(overwrite), "pretrain");
            var o = new PretrainOptions(r.GetValue(preset)!, r.GetValue(steps), r.GetValue(batch), r.GetValue(lr), r.GetValue(vocab), null, r.GetValue(seed));
            var (model, _, result) = Workflows.Pretrain(o, dev, r.GetValue(output)!);
            TrainingSummary.Write(r.GetValue(json), "pretrain", "full", "span-corruption", dev.Id, r.GetValue(output)!, o.Steps, model.ParameterCount(), result);
            model.Dispose();
            if (Nanolora.Autograd.Profiler.Enabled) Console.Error.WriteLine(Nanolora.Autograd.Profiler.Report());
            return 0;
        }));
        return cmd;
    }

    /// <summary>The <c>finetune</c> command: full or LoRA fine-tuning of a base checkpoint on a task.</summary>
    public static Command FineTune(Option<string?> device)
    {
        var method = new Option<string>("--method")
        {
            Description = "what trains: LoRA adapters (lora), every weight (full), or " + string.Join("; ", PeftRecipes.All.Select(m => $"{m.Name}: {m.Summary}")),
            DefaultValueFactory = _ => "lora",
        }.Choices(["lora", "full", .. PeftRecipes.Names]);
        var reductionFactor = new Option<int?>("--reduction-factor")
            { Description = $"adapter-houlsby, adapter-pfeiffer: the bottleneck is the model width divided by this (default {PeftRecipes.DefaultReductionFactor})" }.Range(1, 65_536);
        var layers = new Option<string?>("--layers") { Description = "selective: comma-separated layer indices that train whole (e.g. 0,2; encoder and decoder alike); bitfit: only these layers' biases" };
        var layersPattern = new Option<string?>("--layers-pattern") { Description = "with --layers: the layer list the indices count in, as PEFT's layers_pattern — encoder.layers or decoder.layers for one stack (default: both)" };
        var baseDir = SharedOptions.Model("base checkpoint folder to fine-tune; the default is the shipped base, found beside the program when not in the current directory");
        var task = SharedOptions.Task();
        var steps = Steps(600);
        var batch = BatchSize();
        var lr = new Option<float?>("--lr")
        {
            Description = $"peak AdamW learning rate (default: {LoraDefaults.LearningRate:G} for lora, {FullLearningRate:G} for full, " +
                          string.Join(", ", PeftRecipes.All.Select(m => $"{m.LearningRate:G} for {m.Name}")) + ")",
        }.Positive(10f);
        var warmup = Warmup();
        var rank = new Option<int>("--rank") { Description = "LoRA rank r (A is r × in, B is out × r)", DefaultValueFactory = _ => LoraDefaults.Rank }.Range(1, 4096);
        var alpha = new Option<float>("--alpha") { Description = "LoRA alpha: the update B·A is scaled by alpha / rank", DefaultValueFactory = _ => LoraDefaults.Alpha }.Positive(1e6f);
        var gradientCheckpointing = new Option<bool>("--gradient-checkpointing")
            { Description = "recompute each layer's forward in backward instead of keeping its activations: same gradients, several times less activation memory, about a third more time" };
        var dropout = new Option<float?>("--dropout")
            { Description = "the model's dropout while it trains: every rate the base's config turns on (hidden, attention) at this value, 0 for none (default: the base's, 0.1 for the shipped one)" }.Fraction();
        var baseDType = new Option<string>("--base-dtype")
            { Description = "how the frozen base's linear weights and embeddings are stored: float32, or bfloat16 (half their memory, rounded once; the GEMM and the lookup widen them, so the arithmetic stays float32). Not for full fine-tuning", DefaultValueFactory = _ => "float32" }
            .Choices("float32", "bfloat16");
        var loraPlus = new Option<float?>("--loraplus-ratio") { Description = "LoRA+: train the B matrices at R × the learning rate of the A matrices (PEFT's loraplus_lr_ratio; 16 is usual; default off)" }.Positive(1e6f);
        var riemannian = new Option<bool>("--riemannian") { Description = "lora: Riemannian preconditioned LoRA (PEFT's create_riemannian_optimizer): before each AdamW step, A's gradient is multiplied by (BᵀB + reg·I)⁻¹ and B's by (A·Aᵀ + reg·I)⁻¹" };
        var riemannianReg = new Option<float>("--riemannian-reg") { Description = "with --riemannian: the damping reg added to each r × r matrix's diagonal before inverting", DefaultValueFactory = _ => RiemannianPreconditioner.DefaultReg }.Positive(1e6f);
        var targets = new Option<string>("--targets") { Description = "comma-separated module names to adapt (name suffixes: q_proj, k_proj, v_proj, o_proj, fc1, fc2)", DefaultValueFactory = _ => LoraDefaults.TargetList };
        var useDora = new Option<bool>("--use-dora") { Description = "lora: DoRA, a learned magnitude per output row on top of the low-rank direction (PEFT's use_dora)" };
        var loraInit = new Option<string>("--init") { Description = "lora: how adapters start: kaiming (B = 0), gaussian (B = 0), pissa (the top-r SVD part of each weight) or lora-ga (the top-2r SVD directions of each weight's loss gradient on the first --lora-ga-batches batches, PEFT's lora_ga); pissa and lora-ga adapters are saved converted to a rank-2r LoRA for the base", DefaultValueFactory = _ => "kaiming" }
            .Choices("kaiming", "gaussian", "pissa", "lora-ga");
        var loraGaGamma = new Option<float>("--lora-ga-gamma") { Description = "lora-ga: stable_gamma γ, the initial factors are scaled by out^¼/√γ (PEFT's default)", DefaultValueFactory = _ => 16f }.Positive(1e9f);
        var loraGaBatches = new Option<int>("--lora-ga-batches") { Description = "lora-ga: training batches whose mean gradient initialises the adapters", DefaultValueFactory = _ => 4 }.Range(1, 1000);
        var bias = new Option<string>("--bias") { Description = "lora: biases that also train and are saved with the adapter: none, all (every bias, the logits bias included), or lora_only (those of adapted layers), as PEFT's bias field; trained biases change the base's, so disabling the adapter no longer gives the base's output", DefaultValueFactory = _ => "none" }
            .Choices("none", "all", "lora_only");
        var seed = Seed();
        var checkpointEvery = CheckpointEvery(0, "full only: save a resumable checkpoint to --out every N steps (and validate)");
        var resume = new Option<bool>("--resume") { Description = "full only: continue the run checkpointed in --out (same schedule and data order)" };
        var forceResume = ForceResume();
        var maxLossRatio = MaxLossRatio();
        var trainExamples = TrainExamples();
        var output = new Option<string>("--out") { Description = "folder for the adapter (adapter_config.json + adapter_model.safetensors, PEFT's layout where PEFT has the method) or the checkpoint (full)", Required = true };
        var overwrite = Overwrite();
        var json = JsonOutput.Option(TrainingSummary.Schema);
        var cmd = new Command("finetune", "Fine-tune a base checkpoint on a task: all weights (full), LoRA adapters, or another PEFT method (BitFit, chosen layers, LN tuning, (IA)³, Houlsby or Pfeiffer adapters).")
            { method, baseDir, task, steps, batch, lr, warmup, rank, alpha, loraPlus, riemannian, riemannianReg, gradientCheckpointing, dropout, baseDType, targets, useDora, loraInit, loraGaGamma, loraGaBatches, bias, reductionFactor, layers, layersPattern, seed, checkpointEvery, resume, forceResume, maxLossRatio, trainExamples, output, overwrite, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var outDir = r.GetValue(output)!;
            bool isResume = r.GetValue(resume);
            if ((isResume || r.GetValue(checkpointEvery) > 0) && r.GetValue(method) != "full")
                throw new ArgumentException("--resume and --checkpoint-every need --method full.");
            if ((r.GetValue(useDora) || r.GetValue(loraInit) != "kaiming") && r.GetValue(method) != "lora")
                throw new ArgumentException("--use-dora and --init shape LoRA adapters; they need --method lora.");
            if (r.GetValue(bias) != "none" && r.GetValue(method) != "lora")
                throw new ArgumentException($"--bias {r.GetValue(bias)} picks the biases a LoRA adapter trains; it needs --method lora, got {r.GetValue(method)} (bitfit trains biases alone).");
            var peftRecipe = PeftRecipes.Find(r.GetValue(method)!);
            if (r.GetValue(reductionFactor) != null && peftRecipe?.UsesReductionFactor != true)
                throw new ArgumentException($"--reduction-factor shapes bottleneck adapters; it needs --method adapter-houlsby or adapter-pfeiffer, got {r.GetValue(method)}.");
            var layerList = r.GetValue(layers) is string text ? ParseLayers(text) : null;
            if (layerList != null && peftRecipe?.UsesLayers != true)
                throw new ArgumentException($"--layers picks the layers of a selective method; it needs --method selective or bitfit, got {r.GetValue(method)}.");
            string[] pattern = r.GetValue(layersPattern) is string lp ? lp.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) : [];
            if (pattern.Length > 0 && layerList == null)
                throw new ArgumentException($"--layers-pattern '{r.GetValue(layersPattern)}' names the layer list --layers counts in; give --layers too.");
            if (r.GetValue(baseDType) == "bfloat16" && r.GetValue(method) == "full")
                throw new ArgumentException("--base-dtype bfloat16 stores the frozen base in 16 bits, and full fine-tuning trains every weight; use it with lora or a PEFT method.");
            if (peftRecipe != null && r.GetValue(loraPlus) != null) throw new ArgumentException($"--loraplus-ratio needs --method lora, got {r.GetValue(method)}.");
            if (r.GetValue(riemannian) && r.GetValue(method) != "lora") throw new ArgumentException($"--riemannian preconditions LoRA adapters; it needs --method lora, got {r.GetValue(method)}.");
            if (!r.GetValue(riemannian) && r.GetResult(riemannianReg) is { Implicit: false }) throw new ArgumentException("--riemannian-reg is the damping of --riemannian; give --riemannian too.");
            if (!isResume) RunFolders.RequireFresh(outDir, r.GetValue(overwrite), "finetune");
            if (Path.GetFullPath(outDir) == Path.GetFullPath(r.GetValue(baseDir)!)) throw new ArgumentException($"--out '{outDir}' is the --base folder; write the fine-tuned model elsewhere.");
            string baseFolder = ShippedPaths.Resolve(r.GetValue(baseDir)!);
            var (model, tokenizer) = isResume ? ResumePoint(outDir, dev, r.GetValue(dropout)) : Checkpoint.Load(baseFolder, dev, r.GetValue(dropout));
            using var _ = model;
            var data = TaskData.Load(r.GetValue(task)!);
            bool checkpointing = r.GetValue(checkpointEvery) > 0 || isResume;
            var o = new FineTuneOptions
            {
                Task = data.Name, Method = r.GetValue(method)!, Steps = r.GetValue(steps), BatchSize = r.GetValue(batch),
                LearningRate = r.GetValue(lr) ?? peftRecipe?.LearningRate ?? LoraDefaults.LearningRate, FullLearningRate = r.GetValue(lr) ?? FullLearningRate, WarmupSteps = r.GetValue(warmup), Rank = r.GetValue(rank),
                Alpha = r.GetValue(alpha), Seed = r.GetValue(seed), TrainExamples = r.GetValue(trainExamples),
                Targets = r.GetValue(targets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
                UseDora = r.GetValue(useDora),
                Bias = r.GetValue(bias) switch { "all" => LoraBias.All, "lora_only" => LoraBias.LoraOnly, _ => LoraBias.None },
                Init = r.GetValue(loraInit) switch { "gaussian" => LoraInit.Gaussian, "pissa" => LoraInit.Pissa, "lora-ga" => LoraInit.LoraGa, _ => LoraInit.KaimingUniform },
                LoraGaStableGamma = r.GetValue(loraGaGamma), LoraGaBatches = r.GetValue(loraGaBatches),
                CheckpointDirectory = checkpointing ? outDir : null, CheckpointEvery = r.GetValue(checkpointEvery), Resume = isResume,
                ForceResume = r.GetValue(forceResume), MaxLossRatio = r.GetValue(maxLossRatio), LoraPlusRatio = r.GetValue(loraPlus), RiemannianReg = r.GetValue(riemannian) ? r.GetValue(riemannianReg) : null, GradientCheckpointing = r.GetValue(gradientCheckpointing),
                BaseBFloat16 = r.GetValue(baseDType) == "bfloat16",
                ReductionFactor = r.GetValue(reductionFactor) ?? PeftRecipes.DefaultReductionFactor, Layers = layerList, LayersPattern = pattern,
            };
            long baseParameters = model.ParameterCount();   // before any adapter is injected: the trainable-% denominator
            int layerCount = Math.Max(model.Config.EncoderLayers, model.Config.DecoderLayers);
            if (layerList?.FirstOrDefault(i => i >= layerCount, -1) is int missing and >= 0)
                throw new ArgumentException($"--layers: layer {missing} does not exist; the model has layers 0 to {layerCount - 1} ({model.Config.EncoderLayers} encoder, {model.Config.DecoderLayers} decoder).");
            if (peftRecipe != null)
            {
                var (peftResult, peft) = Workflows.FineTunePeft(model, tokenizer, data, o);
                peft.Save("default", outDir);
                TrainingSummary.Write(r.GetValue(json), "finetune", o.Method, data.Name, dev.Id, outDir, o.Steps, baseParameters, peftResult);
                return 0;
            }
            var (result, lora) = Workflows.FineTune(model, tokenizer, data, o, r.GetValue(baseDir)!);
            if (lora != null) AdapterFiles.Save(lora, "default", outDir);
            else if (!checkpointing) Checkpoint.Save(outDir, model, tokenizer); // a checkpointing run already saved its last step
            TrainingSummary.Write(r.GetValue(json), "finetune", o.Method, data.Name, dev.Id, outDir, o.Steps, baseParameters, result, o.LoraPlusRatio, o.RiemannianReg);
            if (Nanolora.Autograd.Profiler.Enabled) Console.Error.WriteLine(Nanolora.Autograd.Profiler.Report());
            return 0;
        }));
        return cmd;
    }

    /// <summary>The model and tokenizer of the run checkpointed in <paramref name="outDir"/> (its newest complete checkpoint).</summary>
    static (Seq2SeqTransformer, ISeq2SeqTokenizer) ResumePoint(string outDir, Nanolora.Tensors.Device device, float? dropout)
    {
        var point = TrainingCheckpoint.FindLatest(outDir);
        foreach (var skipped in point.Skipped) Console.Error.WriteLine($"warning: not resuming from {skipped}");
        if (point.Skipped.Count > 0) Console.Error.WriteLine($"warning: resuming from the last complete checkpoint, step {point.Step} ({point.Directory}).");
        return Checkpoint.Load(point.Directory, device, dropout);
    }

    /// <summary>--layers' comma-separated layer indices, each at least 0.</summary>
    static List<int> ParseLayers(string text)
    {
        var parts = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (parts.Length == 0) throw new ArgumentException($"--layers: expected comma-separated layer indices such as 0,2, got '{text}'.");
        return parts.Select(p => int.TryParse(p, out int i) && i >= 0 ? i
            : throw new ArgumentException($"--layers: '{p}' is not a layer index; expected integers from 0, comma-separated (e.g. 0,2).")).Distinct().ToList();
    }

    static Option<int> Steps(int byDefault) => new Option<int>("--steps") { Description = "optimizer steps (one batch each)", DefaultValueFactory = _ => byDefault }.Range(1, 100_000_000);
    static Option<int> BatchSize() => new Option<int>("--batch-size") { Description = "examples per step", DefaultValueFactory = _ => 32 }.Range(1, 65_536);
    static Option<float> LearningRate(float byDefault) => new Option<float>("--lr") { Description = "peak AdamW learning rate (after warm-up; cosine decay to the end)", DefaultValueFactory = _ => byDefault }.Positive(10f);
    static Option<ulong> Seed() => new("--seed") { Description = "seed of the data order, initialization and dropout", DefaultValueFactory = _ => 1UL };
    static Option<string> Preset() => new Option<string>("--preset") { Description = "model size preset (`nanolora params --preset NAME` shows its shape)", DefaultValueFactory = _ => "tiny" }
        .Choices(TransformerConfig.PresetNames);
    static Option<int> Vocab(string description) => new Option<int>("--vocab") { Description = description, DefaultValueFactory = _ => 8000 }.Range(5, 1_000_000);
    static Option<int?> Warmup() => new Option<int?>("--warmup") { Description = "linear warm-up, in steps (default: a tenth of --steps)" }.Range(0, 100_000_000);
    static Option<int?> TrainExamples() => new Option<int?>("--train-examples") { Description = "train on only the first N training examples (quick trials)" }.Range(1);
    static Option<int> CheckpointEvery(int byDefault, string description) =>
        new Option<int>("--checkpoint-every") { Description = description + " (0: never)", DefaultValueFactory = _ => byDefault }.Range(0);
    static Option<bool> ForceResume() => new("--force-resume") { Description = "resume even if lr, warm-up, steps, batch size, seed or data differ from the checkpointed run's" };
    static Option<float> MaxLossRatio() => new Option<float>("--max-loss-ratio")
        { Description = "stop when a loss exceeds this many times the mean of the previous 20 (0: off)", DefaultValueFactory = _ => 20f }.OffOrAboveOne();
    static Option<bool> Overwrite() => new("--overwrite") { Description = "replace what --out already holds" };

    /// <summary>The <c>train</c> command: trains a freshly initialized model on a task (resumable).</summary>
    public static Command Train(Option<string?> device)
    {
        var preset = Preset();
        var task = SharedOptions.Task();
        var vocab = Vocab("subword vocabulary size in tokens, built from the task's training split (GPT-2 ids kept by frequency)");
        var tokenizerFile = new Option<string?>("--tokenizer") { Description = "use this tokenizer.json instead of building one" };
        var steps = Steps(3000);
        var batch = BatchSize();
        var lr = LearningRate(2e-3f);
        var warmup = Warmup();
        var seed = Seed();
        var checkpointEvery = CheckpointEvery(500, "save a resumable checkpoint to --out every N steps (and validate)");
        var resume = new Option<bool>("--resume") { Description = "continue the run checkpointed in --out (same schedule and data order)" };
        var forceResume = ForceResume();
        var maxLossRatio = MaxLossRatio();
        var trainExamples = TrainExamples();
        var output = new Option<string>("--out") { Description = "run folder: checkpoints/step-N/ and a copy of the latest at the top", Required = true };
        var json = JsonOutput.Option(TrainingSummary.Schema);
        var cmd = new Command("train", "Train a freshly initialized model on a task (no base, no pretraining): all weights, resumable.")
            { preset, task, vocab, tokenizerFile, steps, batch, lr, warmup, seed, checkpointEvery, resume, forceResume, maxLossRatio, trainExamples, output, json };
        cmd.SetAction(r => Program.Guard(() =>
        {
            var dev = Workflows.ResolveDevice(r.GetValue(device));
            var outDir = r.GetValue(output)!;
            var data = TaskData.Load(r.GetValue(task)!);
            Seq2SeqTransformer model;
            ISeq2SeqTokenizer tokenizer;
            if (r.GetValue(resume)) (model, tokenizer) = ResumePoint(outDir, dev, null);
            else
            {
                if (TrainingCheckpoint.HoldsRun(outDir))
                    throw new ArgumentException($"'{outDir}' already holds a training run; continue it with --resume or choose another --out.");
                RunFolders.RequireWritable(outDir);
                tokenizer = r.GetValue(tokenizerFile) is string path ? Seq2SeqTokenizers.Load(path)
                    : SubwordTokenizer.Build(data.Train.SelectMany(e => new[] { e.Source, e.Target }), r.GetValue(vocab), minCount: 2);
                model = new Seq2SeqTransformer(TransformerConfig.Preset(r.GetValue(preset)!, tokenizer.VocabSize) with { Seed = r.GetValue(seed) }, dev);
            }
            using var _ = model;
            var o = new FineTuneOptions
            {
                Task = data.Name, Method = "full", Steps = r.GetValue(steps), BatchSize = r.GetValue(batch), FullLearningRate = r.GetValue(lr),
                WarmupSteps = r.GetValue(warmup), Seed = r.GetValue(seed), CheckpointDirectory = outDir, TrainExamples = r.GetValue(trainExamples),
                CheckpointEvery = r.GetValue(checkpointEvery), Resume = r.GetValue(resume), ForceResume = r.GetValue(forceResume), MaxLossRatio = r.GetValue(maxLossRatio),
            };
            var (result, _) = Workflows.FineTune(model, tokenizer, data, o, "(none)", title: $"training {r.GetValue(preset)} from scratch ({data.Name})");
            Plots.TrainingCurve(result.Losses, result.ValidationLosses, $"Training {model.Config.DModel}-wide {model.Config.EncoderLayers}+{model.Config.DecoderLayers} from scratch ({data.Name})",
                Path.Combine(outDir, "loss.png"));
            TrainingSummary.Write(r.GetValue(json), "train", "full", data.Name, dev.Id, outDir, o.Steps, model.ParameterCount(), result);
            return 0;
        }));
        return cmd;
    }
}
