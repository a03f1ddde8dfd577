using System.Diagnostics;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

public sealed record TrainOptions
{
    public int Steps { get; init; } = 1000;
    public float LearningRate { get; init; } = 1e-3f;
    public int WarmupSteps { get; init; } = 100;
    public bool CosineDecay { get; init; } = true;
    public float WeightDecay { get; init; } = 0.01f;
    public float ClipNorm { get; init; } = 1f;
    public float LabelSmoothing { get; init; } = 0.1f;
    public int ValidateEvery { get; init; } = 0;
    public int ValidationBatches { get; init; } = 8;
    public string? CheckpointDirectory { get; init; }
    public int CheckpointEvery { get; init; } = 0;
    /// <summary>Continue from the checkpoint's optimizer and trainer state when it has them.</summary>
    public bool Resume { get; init; }
    /// <summary>End this process's run after this step (checkpointing it) while the schedule still spans <see cref="Steps"/>.</summary>
    public int? StopAfterStep { get; init; }
}

/// <summary>One step's numbers, reported to the progress display.</summary>
public sealed record StepInfo(int Step, int TotalSteps, float Loss, double StepMilliseconds, double TokensPerSecond, float LearningRate, float? ValidationLoss);

public sealed record TrainResult(List<float> Losses, List<ValidationPoint> ValidationLosses, double MeanStepMilliseconds, LedgerSnapshot Memory, long TrainableParameters, long OptimizerStateBytes);

/// <summary>
/// Teacher-forced training with AdamW, warm-up + cosine decay, clipping, periodic validation and atomic
/// checkpoints. Each step runs in a <see cref="GraphScope"/>, so activations return to the pool every step.
/// </summary>
public sealed class Trainer(Seq2SeqTransformer model, SubwordTokenizer tokenizer)
{
    public TrainResult Train(IReadOnlyList<Parameter> trainable, BatchLoader train, BatchLoader? validation, TrainOptions o, IProgress<StepInfo>? progress = null)
    {
        var schedule = o.CosineDecay ? LearningRateSchedule.WarmupCosine(o.LearningRate, o.WarmupSteps, o.Steps) : LearningRateSchedule.WarmupLinear(o.LearningRate, o.WarmupSteps, o.Steps);
        using var optimizer = new AdamW(trainable, o.LearningRate, weightDecay: o.WeightDecay);
        var state = new TrainerState(0, 0, 0, new List<float>(), new List<ValidationPoint>());
        if (o.Resume && o.CheckpointDirectory != null)
            state = Checkpoint.LoadState(o.CheckpointDirectory, optimizer) ?? state;
        var device = model.Device;
        device.Ledger.ResetPeaks();
        model.Train();
        double totalMs = 0;
        int timedSteps = 0, step = state.Step, epoch = state.Epoch, batchInEpoch = 0;
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
                        throw new InvalidOperationException($"The loss became {loss} at step {step} (epoch {epoch}); training stopped and no checkpoint was overwritten. Try a lower learning rate (now {optimizer.LearningRate}).");
                    lossVar.Backward();
                }
                if (o.ClipNorm > 0) Optimizer.ClipGradNorm(trainable, o.ClipNorm);
                optimizer.LearningRate = schedule.At(step);
                optimizer.Step();
                optimizer.ZeroGrad();
                device.Synchronize();
                double ms = sw.Elapsed.TotalMilliseconds;
                if (step > 1) { totalMs += ms; timedSteps++; } // the first step compiles kernels and fills the pool
                losses.Add(loss);
                float? valLoss = null;
                if (validation != null && o.ValidateEvery > 0 && step % o.ValidateEvery == 0)
                {
                    valLoss = ValidationLoss(validation, o.ValidationBatches, o.LabelSmoothing);
                    validationLosses.Add(new ValidationPoint(step, valLoss.Value));
                }
                int tokens = batch.BatchSize * (batch.SourceLength + batch.TargetLength);
                progress?.Report(new StepInfo(step, o.Steps, loss, ms, tokens / (ms / 1000), optimizer.LearningRate, valLoss));
                if (o.CheckpointDirectory != null && o.CheckpointEvery > 0 && step % o.CheckpointEvery == 0)
                    Checkpoint.Save(o.CheckpointDirectory, model, tokenizer, optimizer, new TrainerState(step, epoch, batchInEpoch, losses, validationLosses));
            }
            if (step < lastStep) { epoch++; batchInEpoch = 0; state = state with { BatchInEpoch = 0 }; }
        }
        if (o.CheckpointDirectory != null)
            Checkpoint.Save(o.CheckpointDirectory, model, tokenizer, optimizer, new TrainerState(step, epoch, batchInEpoch, losses, validationLosses));
        var memory = device.Ledger.Snapshot();
        return new TrainResult(losses, validationLosses, timedSteps > 0 ? totalMs / timedSteps : 0, memory,
            trainable.Sum(p => p.Count), optimizer.StateBytes);
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
