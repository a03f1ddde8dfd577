using System.Diagnostics;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>Settings of <see cref="ContrastiveTrainer"/>: AdamW with linear warm-up and decay.</summary>
public sealed record ContrastiveOptions
{
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 100;
    /// <summary>Pairs per batch (at least 2: the other pairs are the negatives).</summary>
    public int BatchSize { get; init; } = 32;
    /// <summary>Peak learning rate.</summary>
    public float LearningRate { get; init; } = 2e-5f;
    /// <summary>Warm-up as a share of the steps (sentence-transformers' examples use 10%), then linear decay.</summary>
    public float WarmupFraction { get; init; } = 0.1f;
    /// <summary>AdamW's decoupled weight decay.</summary>
    public float WeightDecay { get; init; } = 0.01f;
    /// <summary>The global gradient norm is clipped to this.</summary>
    public float ClipNorm { get; init; } = 1f;
    /// <summary>MultipleNegativesRankingLoss' scale: cosine similarities × 20 are the logits.</summary>
    public float Scale { get; init; } = 20f;
    /// <summary>Sources are cut to this many word pieces ([CLS] and [SEP] included).</summary>
    public int MaxSourceTokens { get; init; } = 128;
    /// <summary>Targets are cut to this many word pieces ([CLS] and [SEP] included).</summary>
    public int MaxTargetTokens { get; init; } = 32;
    /// <summary>Seeds the order of the pairs in each epoch.</summary>
    public ulong Seed { get; init; } = 1;
}

/// <summary>
/// Trains a bi-encoder (one encoder for both sides) with in-batch negatives, sentence-transformers'
/// MultipleNegativesRankingLoss: for a batch of (source, target) pairs the logits are 20·cos(source_i, target_j)
/// and the loss is the cross-entropy of each source picking its own target. Pairs whose target text repeats are
/// dropped once beforehand, so no batch holds a false negative.
/// </summary>
public static class ContrastiveTrainer
{
    /// <summary>Trains <paramref name="trainable"/> of <paramref name="model"/> on the pairs for <see cref="ContrastiveOptions.Steps"/> steps.</summary>
    /// <param name="model">The bi-encoder, used for both sides.</param>
    /// <param name="tokenizer">Its WordPiece tokenizer.</param>
    /// <param name="pairs">(source, target) pairs; pairs repeating an earlier target text are dropped.</param>
    /// <param name="trainable">The parameters to update (all of them, or the adapter's).</param>
    /// <param name="o">The run's settings.</param>
    /// <param name="progress">Receives each step's numbers.</param>
    public static TrainResult Train(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<Example> pairs,
        IReadOnlyList<Parameter> trainable, ContrastiveOptions o, IProgress<StepInfo>? progress = null)
    {
        if (o.Steps < 1) throw new ArgumentOutOfRangeException(nameof(o), $"Steps must be at least 1, got {o.Steps}.");
        if (o.BatchSize < 2) throw new ArgumentOutOfRangeException(nameof(o), $"In-batch negatives need a batch of at least 2, got {o.BatchSize}.");
        if (trainable.Count == 0) throw new ArgumentException("Nothing to train: every parameter is frozen.");
        var data = pairs.DistinctBy(p => p.Target, StringComparer.Ordinal).ToList();
        if (data.Count < o.BatchSize) throw new ArgumentException($"{data.Count} distinct pairs are fewer than one batch of {o.BatchSize}.");
        int warmup = (int)Math.Round(o.WarmupFraction * o.Steps);
        var schedule = LearningRateSchedule.WarmupLinear(o.LearningRate, warmup, o.Steps);
        using var optimizer = new AdamW(trainable, o.LearningRate, weightDecay: o.WeightDecay);
        var device = model.Device;
        device.Ledger.ResetPeaks();
        model.Train();
        var losses = new List<float>();
        var stepMs = new List<double>();
        int step = 0, epoch = 0;
        var labels = Enumerable.Range(0, o.BatchSize).ToArray();
        while (step < o.Steps)
        {
            var order = Enumerable.Range(0, data.Count).ToArray();
            new Random(unchecked((int)o.Seed) + epoch).Shuffle(order);
            for (int start = 0; start + o.BatchSize <= order.Length && step < o.Steps; start += o.BatchSize)
            {
                step++;
                var sw = Stopwatch.StartNew();
                var chunk = order.AsSpan(start, o.BatchSize).ToArray().Select(i => data[i]).ToList();
                var sources = tokenizer.EncodeBatch(chunk.Select(p => p.Source).ToList(), o.MaxSourceTokens);
                var targets = tokenizer.EncodeBatch(chunk.Select(p => p.Target).ToList(), o.MaxTargetTokens);
                float loss;
                using (new GraphScope())
                {
                    var a = model.Embed(sources);                                                  // [B, C]
                    var b = model.Embed(targets);                                                  // [B, C]
                    var logits = F.Scale(F.Matmul(a, b, transposeB: true), o.Scale);                // [B, B]
                    var lossVar = F.CrossEntropy(logits, labels);
                    loss = lossVar.Data.Item();
                    if (!float.IsFinite(loss))
                        throw new InvalidOperationException($"The contrastive loss became {loss} at step {step}; try a lower learning rate (now {optimizer.LearningRate}).");
                    lossVar.Backward(freeValues: true);
                }
                optimizer.ClipStepAndZero(schedule.At(step), o.ClipNorm);
                device.Synchronize();
                double ms = sw.Elapsed.TotalMilliseconds;
                if (step > 1) stepMs.Add(ms);   // the first compiles kernels and fills the pool
                losses.Add(loss);
                // Padded lengths vary by batch, and each shape can leave its own size classes cached (as in Trainer).
                if (step % Trainer.TrimIdleEvery == 0) device.TrimIdleCache();
                int tokens = sources.Ids.Length + targets.Ids.Length;
                progress?.Report(new StepInfo(step, o.Steps, loss, ms, tokens / (ms / 1000), optimizer.LearningRate, null));
            }
            epoch++;
        }
        return TrainResult.FromSteps(losses, new List<ValidationPoint>(), stepMs, device.Ledger.Snapshot(), trainable.Sum(p => p.Count), optimizer.StateBytes);
    }
}
