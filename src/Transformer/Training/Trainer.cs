using System.Diagnostics;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>Settings of <see cref="Trainer"/>; <see cref="Validate"/> checks their ranges.</summary>
public sealed record TrainOptions
{
    /// <summary>Optimizer steps of the whole schedule.</summary>
    public int Steps { get; init; } = 1000;
    /// <summary>Peak learning rate (reached after the warm-up).</summary>
    public float LearningRate { get; init; } = 1e-3f;
    /// <summary>Steps of linear warm-up from 0.</summary>
    public int WarmupSteps { get; init; } = 100;
    /// <summary>After the warm-up, decay the learning rate to 0 along a cosine (false: linearly).</summary>
    public bool CosineDecay { get; init; } = true;
    /// <summary>AdamW's decoupled weight decay.</summary>
    public float WeightDecay { get; init; } = 0.01f;
    /// <summary>The global gradient norm is clipped to this.</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>Label smoothing of the cross-entropy (0: none).</summary>
    public float LabelSmoothing { get; init; } = 0.1f;
    /// <summary>Steps between validation losses (0: never).</summary>
    public int ValidateEvery { get; init; } = 0;
    /// <summary>Validation batches each validation loss averages.</summary>
    public int ValidationBatches { get; init; } = 8;
    /// <summary>The run folder that receives checkpoints (null: none are written).</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Steps between resumable checkpoints (0: only at the end).</summary>
    public int CheckpointEvery { get; init; } = 0;
    /// <summary>Continue from the checkpoint's optimizer and trainer state when it has them.</summary>
    public bool Resume { get; init; }
    /// <summary>Resume even when the checkpoint's run options (<see cref="RunOptions"/>) differ from these.</summary>
    public bool ForceResume { get; init; }
    /// <summary>What the model was built from (say, the BERT a BERT2BERT base starts on), so that a resume from another is refused; null: not recorded.</summary>
    public string? StartsFrom { get; init; }
    /// <summary>End this process's run after this step (checkpointing it) while the schedule still spans <see cref="Steps"/>.</summary>
    public int? StopAfterStep { get; init; }
    /// <summary>
    /// Stop when a step's loss exceeds this many times the mean of the previous <see cref="LossWindow"/> steps (0: never):
    /// a diverging run is stopped while its losses are still finite, before a checkpoint saves the damage.
    /// </summary>
    public float MaxLossRatio { get; init; } = 20f;
    /// <summary>Steps whose mean loss <see cref="MaxLossRatio"/> compares against.</summary>
    public int LossWindow { get; init; } = 20;

    /// <summary>Refuses options no run can use, naming the option and its range.</summary>
    public void Validate()
    {
        if (Steps < 1) throw new ArgumentException($"Steps is {Steps}, expected at least 1.");
        if (!(LearningRate > 0 && float.IsFinite(LearningRate))) throw new ArgumentException($"LearningRate is {LearningRate}, expected a finite number > 0.");
        if (WarmupSteps < 0) throw new ArgumentException($"WarmupSteps is {WarmupSteps}, expected ≥ 0.");
        if (CheckpointEvery < 0) throw new ArgumentException($"CheckpointEvery is {CheckpointEvery}, expected ≥ 0 (0: only at the end).");
        if (!(MaxLossRatio == 0 || MaxLossRatio > 1)) throw new ArgumentException($"MaxLossRatio is {MaxLossRatio}, expected 0 (off) or > 1.");
        if (LossWindow < 1) throw new ArgumentException($"LossWindow is {LossWindow}, expected at least 1.");
        if (StopAfterStep is < 1) throw new ArgumentException($"StopAfterStep is {StopAfterStep}, expected at least 1.");
    }
}

/// <summary>One step's numbers, reported to the progress display.</summary>
public sealed record StepInfo(int Step, int TotalSteps, float Loss, double StepMilliseconds, double TokensPerSecond, float LearningRate, float? ValidationLoss);

/// <summary>
/// What a training run reports: each step's loss, the validation losses, the mean step time in milliseconds (of the steps
/// after the first, which compiles kernels and fills the pool; <see cref="MedianStepMilliseconds"/> is their median),
/// device memory, the trainable parameter count and the optimizer state's size in bytes.
/// </summary>
public sealed record TrainResult(List<float> Losses, List<ValidationPoint> ValidationLosses, double MeanStepMilliseconds, LedgerSnapshot Memory, long TrainableParameters, long OptimizerStateBytes)
{
    /// <summary>
    /// The median step time, what the experiment reports: a pause or a burst of other work on a shared machine moves a
    /// mean (a stopped process's whole wait lands in one step) but barely moves a median.
    /// </summary>
    public double MedianStepMilliseconds { get; init; } = MeanStepMilliseconds;

    /// <summary>Each timed step's milliseconds (the first step not among them), in order.</summary>
    public IReadOnlyList<double> StepMilliseconds { get; init; } = [];

    /// <summary>A result whose mean and median come from the timed steps (none: both 0).</summary>
    public static TrainResult FromSteps(List<float> losses, List<ValidationPoint> validationLosses, List<double> stepMilliseconds, LedgerSnapshot memory,
        long trainableParameters, long optimizerStateBytes) =>
        new(losses, validationLosses, stepMilliseconds.Count > 0 ? stepMilliseconds.Average() : 0, memory, trainableParameters, optimizerStateBytes)
        { MedianStepMilliseconds = stepMilliseconds.Count > 0 ? Stats.Median(stepMilliseconds) : 0, StepMilliseconds = stepMilliseconds };
}

/// <summary>
/// Teacher-forced training with AdamW, warm-up + cosine decay, clipping, periodic validation and checkpoints that are
/// one unit each (<see cref="TrainingCheckpoint"/>). A resume restores weights, optimizer, data position and dropout
/// seeds, so it continues the very run it stopped. Each step runs in a <see cref="GraphScope"/>, so activations return
/// to the pool every step.
/// </summary>
public sealed class Trainer(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer)
{
    /// <summary>Steps between releases of the pool's idle size classes (kept for at least this long, so a step never re-allocates what the last one freed).</summary>
    internal const int TrimIdleEvery = 50;

    /// <summary>Trains <paramref name="trainable"/> for <see cref="TrainOptions.Steps"/> steps (or until <see cref="TrainOptions.StopAfterStep"/>), resuming from the latest checkpoint when asked.</summary>
    /// <param name="trainable">The parameters to update (all of them, or the adapter's).</param>
    /// <param name="train">The training batches.</param>
    /// <param name="validation">The validation batches (null: no validation).</param>
    /// <param name="o">The run's settings.</param>
    /// <param name="progress">Receives each step's numbers.</param>
    public TrainResult Train(IReadOnlyList<Parameter> trainable, BatchLoader train, BatchLoader? validation, TrainOptions o, IProgress<StepInfo>? progress = null) =>
        Train([new ParameterGroup("all", trainable)], train, validation, o, progress);

    /// <summary>
    /// <see cref="Train(IReadOnlyList{Parameter}, BatchLoader, BatchLoader?, TrainOptions, IProgress{StepInfo}?)"/> with parameter
    /// groups: each group's rate is its <see cref="ParameterGroup.LearningRateScale"/> × the schedule's (LoRA+ trains B faster than A).
    /// </summary>
    /// <param name="groups">The parameters to update, in groups sharing a learning-rate scale.</param>
    /// <param name="train">The training batches.</param>
    /// <param name="validation">The validation batches (null: no validation).</param>
    /// <param name="o">The run's settings.</param>
    /// <param name="progress">Receives each step's numbers (the base rate as the learning rate).</param>
    /// <param name="preconditioner">Rewrites the clipped gradients before each update (null: none).</param>
    public TrainResult Train(IReadOnlyList<ParameterGroup> groups, BatchLoader train, BatchLoader? validation, TrainOptions o, IProgress<StepInfo>? progress = null,
        IGradientPreconditioner? preconditioner = null)
    {
        o.Validate();
        var trainable = groups.SelectMany(g => g.Parameters).ToList();
        if (train.BatchesPerEpoch == 0) throw new ArgumentException("The training data has no examples.");
        if (o.Resume && o.CheckpointDirectory == null) throw new ArgumentException("Resume needs the checkpoint directory of the run.");
        var schedule = o.CosineDecay ? LearningRateSchedule.WarmupCosine(o.LearningRate, o.WarmupSteps, o.Steps) : LearningRateSchedule.WarmupLinear(o.LearningRate, o.WarmupSteps, o.Steps);
        using var optimizer = new AdamW(groups, o.LearningRate, weightDecay: o.WeightDecay) { Preconditioner = preconditioner };
        var runOptions = RunOptions.Of(o, train, groups);
        var state = new TrainerState(0, 0, 0, new List<float>(), new List<ValidationPoint>());
        if (o.CheckpointDirectory != null)
        {
            if (!o.Resume && TrainingCheckpoint.HasCheckpoints(o.CheckpointDirectory))
                throw new InvalidOperationException($"'{o.CheckpointDirectory}' already holds checkpoints of a run; resume it, or remove its {TrainingCheckpoint.Folder} folder to start over.");
            TrainingCheckpoint.RemoveLeftovers(o.CheckpointDirectory);
        }
        if (o.Resume)
            state = TrainingCheckpoint.Restore(TrainingCheckpoint.FindLatest(o.CheckpointDirectory!), model, optimizer, runOptions, o.ForceResume, train.BatchesPerEpoch);
        int savedStep = o.Resume ? state.Step : -1;
        var device = model.Device;
        device.Ledger.ResetPeaks();
        model.Train();
        var stepMs = new List<double>();
        int step = state.Step, epoch = state.Epoch, batchInEpoch = 0;
        var losses = state.Losses;
        var validationLosses = state.ValidationLosses ?? new List<ValidationPoint>();
        int lastStep = Math.Min(o.Steps, o.StopAfterStep ?? o.Steps);
        while (step < lastStep)
        {
            foreach (var batch in train.Epoch(epoch))
            {
                // A resumed run skips the batches this epoch already used, so the data order is the same.
                if (epoch == state.Epoch && batchInEpoch < state.BatchInEpoch) { batchInEpoch++; continue; }
                if (step >= lastStep) break;
                batchInEpoch++;
                step++;
                var sw = Stopwatch.StartNew();
                float loss;
                using (new GraphScope())
                {
                    if (Profiler.Enabled) Profiler.Mark();
                    var lossVar = model.Loss(batch, o.LabelSmoothing);
                    loss = lossVar.Data.Item();
                    if (!float.IsFinite(loss))
                        throw new InvalidOperationException($"The loss became {loss} at step {step} (epoch {epoch}); training stopped and no checkpoint was written for it{LastCheckpoint(o, savedStep)}. Try a lower learning rate (now {optimizer.LearningRate}).");
                    CheckForSpike(loss, losses, step, o, savedStep);
                    lossVar.Backward(freeValues: true);
                }
                optimizer.ClipStepAndZero(schedule.At(step), o.ClipNorm);
                device.Synchronize();
                double ms = sw.Elapsed.TotalMilliseconds;
                if (step > 1) stepMs.Add(ms); // the first step compiles kernels and fills the pool
                losses.Add(loss);
                float? valLoss = null;
                if (validation != null && o.ValidateEvery > 0 && step % o.ValidateEvery == 0)
                {
                    valLoss = ValidationLoss(validation, o.ValidationBatches, o.LabelSmoothing);
                    validationLosses.Add(new ValidationPoint(step, valLoss.Value));
                }
                // Batch shapes vary, and each new shape can leave its own size classes cached: drop those unused for a while.
                if (step % TrimIdleEvery == 0) device.TrimIdleCache();
                int tokens = batch.BatchSize * (batch.SourceLength + batch.TargetLength);
                progress?.Report(new StepInfo(step, o.Steps, loss, ms, tokens / (ms / 1000), optimizer.LearningRate, valLoss));
                if (o.CheckpointDirectory != null && o.CheckpointEvery > 0 && step % o.CheckpointEvery == 0)
                {
                    TrainingCheckpoint.Save(o.CheckpointDirectory, model, tokenizer, optimizer, StateAt(step, epoch, batchInEpoch, losses, validationLosses, runOptions));
                    savedStep = step;
                }
            }
            if (step < lastStep) { epoch++; batchInEpoch = 0; state = state with { BatchInEpoch = 0 }; }
        }
        if (o.CheckpointDirectory != null && step != savedStep)
            TrainingCheckpoint.Save(o.CheckpointDirectory, model, tokenizer, optimizer, StateAt(step, epoch, batchInEpoch, losses, validationLosses, runOptions));
        var memory = device.Ledger.Snapshot();
        return TrainResult.FromSteps(losses, validationLosses, stepMs, memory, trainable.Sum(p => p.Count), optimizer.StateBytes);
    }

    /// <summary>
    /// One bare training step in its own graph scope — loss, backward, optimizer step, zeroed gradients — with none of
    /// <see cref="Train(IReadOnlyList{ParameterGroup}, BatchLoader, BatchLoader?, TrainOptions, IProgress{StepInfo}?, IGradientPreconditioner?)"/>'s schedule, clipping or checks (benchmarks time exactly this). Returns the loss.
    /// </summary>
    public static float StepOnce(Seq2SeqTransformer model, Optimizer optimizer, Batch batch, float labelSmoothing = 0f)
    {
        float loss;
        using (new GraphScope())
        {
            var l = model.Loss(batch, labelSmoothing);
            loss = l.Data.Item();
            l.Backward(freeValues: true);
        }
        optimizer.Step();
        optimizer.ZeroGrad();
        return loss;
    }

    TrainerState StateAt(int step, int epoch, int batchInEpoch, List<float> losses, List<ValidationPoint> validation, RunOptions options) =>
        new(step, epoch, batchInEpoch, losses, validation) { RandomState = model.RandomState, Options = options };

    static string LastCheckpoint(TrainOptions o, int savedStep) =>
        o.CheckpointDirectory == null ? "" : savedStep > 0 ? $" (the checkpoint of step {savedStep} is kept)" : " (none was written yet)";

    /// <summary>Stops a run whose loss jumps far above its recent mean: divergence caught while the numbers are still finite.</summary>
    static void CheckForSpike(float loss, List<float> losses, int step, TrainOptions o, int savedStep)
    {
        if (SpikeOf(loss, losses, o.MaxLossRatio, o.LossWindow) is string spike)
            throw new InvalidOperationException($"The loss jumped to {spike} at step {step}; training stopped as diverging{LastCheckpoint(o, savedStep)}. Lower the learning rate, or raise the limit (--max-loss-ratio, 0: off).");
    }

    /// <summary>
    /// Null when <paramref name="loss"/> is at most <paramref name="maxRatio"/> × the mean of the last <paramref name="window"/>
    /// losses (or too few are known: at least min(window, 10)); else "loss, ratio × the mean m of the previous n steps".
    /// </summary>
    public static string? SpikeOf(float loss, IReadOnlyList<float> previous, float maxRatio, int window)
    {
        if (maxRatio <= 0 || previous.Count < Math.Min(window, 10)) return null;
        int n = Math.Min(window, previous.Count);
        double mean = 0;
        for (int i = previous.Count - n; i < previous.Count; i++) mean += previous[i];
        mean /= n;
        return loss > maxRatio * mean ? $"{loss:G4}, {loss / mean:F0}× the mean {mean:G4} of the previous {n} steps (limit {maxRatio}×)" : null;
    }

    /// <summary>Mean loss over the first <paramref name="batches"/> batches, without dropout or a graph.</summary>
    public float ValidationLoss(BatchLoader data, int batches, float labelSmoothing)
    {
        bool training = model.Training;
        model.Eval();
        try
        {
            using var noGrad = Graph.NoGrad();
            double sum = 0;
            int count = 0;
            foreach (var batch in data.InOrder().Take(batches))
            {
                using var scope = new GraphScope();
                sum += model.Loss(batch, labelSmoothing).Data.Item();
                count++;
            }
            return count == 0 ? float.NaN : (float)(sum / count);
        }
        finally { model.Train(training); }
    }
}
