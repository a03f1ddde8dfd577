using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>Settings of <see cref="Workflows.Pretrain"/>.</summary>
/// <param name="Preset">The model size (<see cref="TransformerConfig.PresetNames"/>).</param>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="BatchSize">Examples per batch.</param>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="VocabSize">Rows of the embedding table: the most frequent subwords of the corpus kept.</param>
/// <param name="Examples">Use at most this many pretraining examples (null: all).</param>
/// <param name="Seed">Seeds initialization, data order and dropout.</param>
public sealed record PretrainOptions(string Preset = "tiny", int Steps = 3000, int BatchSize = 32, float LearningRate = 1e-3f, int VocabSize = 8000, int? Examples = null, ulong Seed = 1);

/// <summary>Settings of <see cref="Workflows.FineTune"/>.</summary>
public sealed record FineTuneOptions
{
    /// <summary>The task (<see cref="TaskData.Names"/>).</summary>
    public string Task { get; init; } = "debian";
    /// <summary>"full" (every weight), "lora" (adapters only) or a <see cref="PeftRecipes"/> name (bitfit, ia3, adapter-houlsby, …).</summary>
    public string Method { get; init; } = "lora";
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 600;
    /// <summary>Examples per batch.</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Peak learning rate (LoRA's; full fine-tuning uses <see cref="FullLearningRate"/>).</summary>
    public float LearningRate { get; init; } = LoraDefaults.LearningRate;
    /// <summary>Full fine-tuning's learning rate (null: 0.3 × <see cref="LearningRate"/>).</summary>
    public float? FullLearningRate { get; init; }
    /// <summary>LoRA's rank r.</summary>
    public int Rank { get; init; } = 8;
    /// <summary>LoRA's alpha (scaling alpha / r; null: the default).</summary>
    public float? Alpha { get; init; }
    /// <summary>Module names LoRA wraps.</summary>
    public IReadOnlyList<string> Targets { get; init; } = LoraDefaults.TargetModules;
    /// <summary>DoRA: each adapted layer also learns a magnitude vector (PEFT's use_dora).</summary>
    public bool UseDora { get; init; }
    /// <summary>How the adapters start: Kaiming A (the default), Gaussian A, or PiSSA (the principal part of each weight).</summary>
    public LoraInit Init { get; init; } = LoraInit.KaimingUniform;
    /// <summary>LoRA-GA: stable_gamma γ (the initial factors are scaled by out^¼/√γ).</summary>
    public float LoraGaStableGamma { get; init; } = 16f;
    /// <summary>LoRA-GA: how many of the run's first batches the initialising gradient is averaged over.</summary>
    public int LoraGaBatches { get; init; } = 4;
    /// <summary>LoRA: which biases also train and are saved with the adapter (PEFT's bias: none, all, lora_only).</summary>
    public LoraBias Bias { get; init; } = LoraBias.None;
    /// <summary>Seeds adapter initialization, data order and dropout.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Train on the first this many examples (null: all).</summary>
    public int? TrainExamples { get; init; }
    /// <summary>Warm-up steps (default: a tenth of the run).</summary>
    public int? WarmupSteps { get; init; }
    /// <summary>Full fine-tuning only: write a resumable checkpoint (weights, optimizer, data position) here.</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Steps between resumable checkpoints (0: only at the end).</summary>
    public int CheckpointEvery { get; init; }
    /// <summary>Continue the run saved in <see cref="CheckpointDirectory"/> (same schedule and data order).</summary>
    public bool Resume { get; init; }
    /// <summary>Resume even when the run's options differ from the checkpoint's.</summary>
    public bool ForceResume { get; init; }
    /// <summary>Stop when a loss exceeds this many times the recent mean (0: off).</summary>
    public float MaxLossRatio { get; init; } = 20f;
    /// <summary>LoRA+ (PEFT's loraplus_lr_ratio): the B matrices train at this many times the learning rate of the A matrices (null: off, plain LoRA).</summary>
    public float? LoraPlusRatio { get; init; }
    /// <summary>Riemannian preconditioned LoRA (PEFT's create_riemannian_optimizer): the damping reg of its r × r matrices (null: off).</summary>
    public float? RiemannianReg { get; init; }
    /// <summary>
    /// Recompute each layer's forward during backward instead of keeping its activations (Hugging Face's
    /// gradient_checkpointing): the same losses and gradients bit for bit, several times less activation memory, one more
    /// forward pass of time.
    /// </summary>
    public bool GradientCheckpointing { get; init; }
    /// <summary>Store the frozen base's linear weights and embeddings in bfloat16 (<see cref="FrozenWeights"/>): half their memory, rounded once.</summary>
    public bool BaseBFloat16 { get; init; }
    /// <summary>Bottleneck adapters: the width is the model width divided by this.</summary>
    public int ReductionFactor { get; init; } = PeftRecipes.DefaultReductionFactor;
    /// <summary>Selective methods: the layer indices that train (selective: whole layers; bitfit: their biases only; null: every layer).</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    /// <summary>Selective methods: the layer lists <see cref="Layers"/> count in (PEFT's layers_pattern, e.g. "decoder.layers"); empty: every stack's.</summary>
    public IReadOnlyList<string> LayersPattern { get; init; } = [];
}

/// <summary>The steps the commands and the experiment share: pretraining, fine-tuning (full or LoRA), evaluation.</summary>
public static class Workflows
{
    /// <summary>Builds the vocabulary and pretrains a base model with span corruption on Debian descriptions and man pages.</summary>
    public static (Seq2SeqTransformer Model, ISeq2SeqTokenizer Tokenizer, TrainResult Result) Pretrain(PretrainOptions o, Device device, string outputDirectory)
    {
        var debian = TaskData.Load("debian");
        var manpages = TaskData.Load("manpages");
        var wordnet = TaskData.Load("wordnet");
        // The vocabulary sees all training text of the three tasks (no labels from validation/test).
        var corpus = debian.Train.SelectMany(e => new[] { e.Source, e.Target })
            .Concat(wordnet.Train.SelectMany(e => new[] { e.Source, e.Target }))
            .Concat(manpages.Train.SelectMany(e => new[] { e.Source, e.Target }));
        var tokenizer = SubwordTokenizer.Build(corpus, o.VocabSize, minCount: 2);
        // Pretraining data: span corruption on Debian descriptions and man-page paragraphs, plus man page → synopsis
        // (a related but different task). The Debian synopses are never targets here.
        var texts = debian.Train.Select(e => e.Source).Concat(manpages.Train.Select(e => e.Source));
        if (o.Examples is int n) texts = texts.Take(n);
        var examples = Denoising.Build(texts, (int)o.Seed).Concat(manpages.Train).ToList();
        var config = TransformerConfig.Preset(o.Preset, tokenizer.VocabSize) with { Seed = o.Seed };
        var model = new Seq2SeqTransformer(config, device);
        var (maxSource, maxTarget) = Lengths.For("debian");
        var loader = new BatchLoader(examples, tokenizer, maxSource, maxTarget + 8, o.BatchSize, o.Seed);
        var options = new TrainOptions { Steps = o.Steps, LearningRate = o.LearningRate, WarmupSteps = Math.Min(200, o.Steps / 10), CheckpointDirectory = outputDirectory, CheckpointEvery = 500 };
        var result = ConsoleProgress.Train("pretrain", o.Steps, p => new Trainer(model, tokenizer).Train(model.Parameters().ToList(), loader, null, options, p));
        return (model, tokenizer, result);
    }

    /// <summary>The LoRA configuration of these options, naming <paramref name="baseName"/> as the base model.</summary>
    public static LoraConfig LoraConfigFor(FineTuneOptions o, string baseName) => new()
    {
        R = o.Rank,
        Alpha = o.Alpha ?? LoraDefaults.Alpha,
        TargetModules = o.Targets,
        UseDora = o.UseDora,
        Init = o.Init,
        LoraGaStableGamma = o.LoraGaStableGamma,
        Bias = o.Bias,
        BaseModelNameOrPath = baseName,
    };

    /// <summary>
    /// Fine-tunes a loaded base model in place. Full: every weight trains. LoRA: adapters are injected under
    /// <paramref name="adapterName"/> and only they train (optimizer state exists only for them). Another PEFT method
    /// (<see cref="PeftRecipes"/>) trains too, staying applied to the model; <see cref="FineTunePeft"/> also returns it.
    /// </summary>
    public static (TrainResult Result, LoraModel? Lora) FineTune(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, TaskData data, FineTuneOptions o,
        string baseName, LoraModel? existing = null, string adapterName = "default", string? title = null)
    {
        if (PeftRecipes.Find(o.Method) != null) return (FineTunePeft(model, tokenizer, data, o, title).Result, null);
        LoraModel? lora = existing;
        IReadOnlyList<ParameterGroup> trainable;
        if (o.LoraPlusRatio is float ratio)
        {
            if (o.Method != "lora") throw new ArgumentException($"LoraPlusRatio (--loraplus-ratio) needs method lora, got '{o.Method}'.");
            LoraPlus.Validate(ratio);
        }
        if (o.RiemannianReg is float reg)
        {
            if (o.Method != "lora") throw new ArgumentException($"RiemannianReg (--riemannian) needs method lora, got '{o.Method}'.");
            RiemannianPreconditioner.Validate(reg);
        }
        if (o.Method == "full")
        {
            model.SetTrainable(true);
            trainable = [new ParameterGroup("all", model.Parameters().ToList())];
        }
        else if (o.Method == "lora")
        {
            var config = LoraConfigFor(o, baseName);
            var gradients = config.Init == LoraInit.LoraGa ? LoraGaGradients(model, tokenizer, data, o, config) : null;
            try
            {
                if (lora == null) lora = LoraModel.Inject(model, config, adapterName, o.Seed, gradients);
                else { lora.AddAdapter(adapterName, config, o.Seed, gradients); lora.SetActiveAdapter(adapterName); }
            }
            finally { if (gradients != null) foreach (var g in gradients.Values) g.Dispose(); }
            trainable = o.LoraPlusRatio is float r ? LoraPlus.Groups(model, r) : [new ParameterGroup("all", model.TrainableParameters().ToList())];
        }
        else throw new ArgumentException($"Unknown method '{o.Method}'; expected full, lora or one of {string.Join(", ", PeftRecipes.Names)}.");
        title ??= o.Method == "full" ? $"full fine-tuning ({data.Name})"
            : $"LoRA{(o.LoraPlusRatio is float lp ? $"+ (B lr ×{lp:G})" : "")}{(o.RiemannianReg != null ? ", Riemannian preconditioned" : "")} r={o.Rank} ({data.Name}, adapter '{adapterName}')";
        var preconditioner = o.RiemannianReg is float damping ? new RiemannianPreconditioner(model, damping) : null;
        return (Train(model, tokenizer, data, o, trainable, title, preconditioner), lora);
    }

    /// <summary>
    /// LoRA-GA's initialising gradients: the mean over the first <see cref="FineTuneOptions.LoraGaBatches"/> batches of the
    /// run's own data order (the batches its first steps train on), with the training loss (label smoothing included).
    /// </summary>
    static Dictionary<string, Tensor> LoraGaGradients(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, TaskData data, FineTuneOptions o, LoraConfig config)
    {
        var (maxSource, maxTarget) = Lengths.For(data.Name);
        var train = o.TrainExamples is int n ? data.Train.Take(n).ToList() : data.Train;
        var batches = new BatchLoader(train, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed).Epoch(0).Take(o.LoraGaBatches).ToList();
        var smoothing = new TrainOptions().LabelSmoothing;
        bool training = model.Training;
        model.Train();
        try
        {
            Output.Terminal.Status($"LoRA-GA: estimating the targets' gradients on {batches.Count} batches of {o.BatchSize}");
            return LoraGa.EstimateGradients(model, config, batches.Count, i => model.Loss(batches[i], smoothing));
        }
        finally { model.Train(training); }
    }

    /// <summary>
    /// Applies the PEFT method <see cref="FineTuneOptions.Method"/> names (a <see cref="PeftRecipes"/> entry) to the model as
    /// instance "default" and trains only its parameters, at <see cref="FineTuneOptions.LearningRate"/>.
    /// </summary>
    public static (TrainResult Result, IPeftMethod Method) FineTunePeft(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, TaskData data, FineTuneOptions o, string? title = null)
    {
        var recipe = PeftRecipes.Find(o.Method) ?? throw new ArgumentException($"Unknown PEFT method '{o.Method}'; expected one of {string.Join(", ", PeftRecipes.Names)}.");
        if (o.LoraPlusRatio != null) throw new ArgumentException($"LoraPlusRatio (--loraplus-ratio) needs method lora, got '{o.Method}'.");
        if (o.RiemannianReg != null) throw new ArgumentException($"RiemannianReg (--riemannian) needs method lora, got '{o.Method}'.");
        var method = recipe.Inject(model, o);
        var trainable = new ParameterGroup("all", model.TrainableParameters().ToList());
        return (Train(model, tokenizer, data, o, [trainable], title ?? $"{recipe.Name} ({data.Name})"), method);
    }

    /// <summary>The training loop every method shares: the task's batches, validation, schedule and checkpoints.</summary>
    static TrainResult Train(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, TaskData data, FineTuneOptions o, IReadOnlyList<ParameterGroup> trainable, string title,
        IGradientPreconditioner? preconditioner = null)
    {
        var (maxSource, maxTarget) = Lengths.For(data.Name);
        var train = o.TrainExamples is int n ? data.Train.Take(n).ToList() : data.Train;
        var loader = new BatchLoader(train, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
        var validation = new BatchLoader(data.Validation, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
        float lr = o.Method == "full" ? o.FullLearningRate ?? o.LearningRate * 0.3f : o.LearningRate;
        if (o.CheckpointDirectory != null && o.Method != "full")
            throw new ArgumentException($"Resumable checkpoints are written for full training only; a {o.Method} run saves its adapter at the end.");
        var options = new TrainOptions
        {
            Steps = o.Steps, LearningRate = lr, WarmupSteps = o.WarmupSteps ?? Math.Max(1, o.Steps / 10),
            ValidateEvery = Math.Max(1, o.CheckpointEvery > 0 ? o.CheckpointEvery : o.Steps / 4), ValidationBatches = 4,
            CheckpointDirectory = o.CheckpointDirectory, CheckpointEvery = o.CheckpointEvery, Resume = o.Resume,
            ForceResume = o.ForceResume, MaxLossRatio = o.MaxLossRatio,
        };
        if (o.BaseBFloat16)
        {
            long saved = FrozenWeights.ToBFloat16(model);
            Output.Terminal.Status($"frozen base in bfloat16: {FrozenWeights.CountBFloat16(model):N0} values (linear weights and embeddings), {saved / 1048576.0:F1} MiB less");
        }
        bool wasCheckpointing = model.GradientCheckpointing;
        model.GradientCheckpointing = o.GradientCheckpointing;
        try { return ConsoleProgress.Train(title, o.Steps, p => new Trainer(model, tokenizer).Train(trainable, loader, validation, options, p, preconditioner)); }
        finally { model.GradientCheckpointing = wasCheckpointing; }
    }

    /// <summary>Decodes and ROUGE-scores <paramref name="examples"/> with the task's source budget, showing progress under <paramref name="title"/>.</summary>
    public static EvalResult Evaluate(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, string task, IReadOnlyList<Example> examples, DecodeOptions decode, string title)
    {
        var (maxSource, _) = Lengths.For(task);
        return ConsoleProgress.Evaluate(title, examples.Count, p => Evaluator.Evaluate(model, tokenizer, examples, maxSource, decode, 64, p));
    }

    /// <summary>The device from --device, else NANOLORA_DEVICE, else the best available.</summary>
    public static Device ResolveDevice(string? id)
    {
        if (!string.IsNullOrWhiteSpace(id)) Device.Default = Device.Get(id);
        return Device.Default;
    }

    /// <summary>Decoding settings for a task: its target budget as the length limit, with the given beam and n-gram blocking.</summary>
    public static DecodeOptions DecodeFor(string task, int beam = 1, int noRepeatNgram = 0) =>
        new(MaxLength: Lengths.For(task).Target, BeamSize: beam, NoRepeatNgramSize: noRepeatNgram);
}
