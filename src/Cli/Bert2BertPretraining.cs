using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>Options of the BERT2BERT base's decoder training (see <see cref="Bert2BertPretraining"/>).</summary>
public sealed record Bert2BertPretrainOptions
{
    /// <summary>Decoder layers (self-attention and feed-forward from MiniLM layers; cross-attention new).</summary>
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
}

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
/// Freezing the encoder keeps MiniLM's reading of the text and lets the shipped base store only the decoder.
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

    /// <summary>Parameters the base's training changes: the decoder side and the logits bias.</summary>
    public static bool IsDecoderSide(string name) =>
        name.StartsWith("decoder.", StringComparison.Ordinal) || name.StartsWith("decoder_", StringComparison.Ordinal) || name == "logits_bias";

    /// <summary>Builds BERT2BERT from MiniLM, trains only its decoder side (<see cref="IsDecoderSide"/>) on the <see cref="Mixture"/>, and checkpoints into <paramref name="runDirectory"/>.</summary>
    public static (Seq2SeqTransformer Model, ISeq2SeqTokenizer Tokenizer, TrainResult Result) Run(Bert2BertPretrainOptions o, Device device, string runDirectory)
    {
        var (model, tokenizer) = Bert2Bert.FromMiniLm(o.DecoderLayers, o.Seed, device);
        try
        {
            model.SetTrainable(false);
            var trainable = model.NamedParameters().Where(p => IsDecoderSide(p.Name)).Select(p => p.Parameter).ToList();
            foreach (var p in trainable) p.Trainable = true;
            var examples = Mixture(o);
            var (maxSource, maxTarget) = Lengths.For("debian");
            var loader = new BatchLoader(examples, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
            var manpages = TaskData.Load("manpages");
            var validation = new BatchLoader(manpages.Validation, tokenizer, maxSource, maxTarget, o.BatchSize, o.Seed);
            var options = new TrainOptions
            {
                Steps = o.Steps, LearningRate = o.LearningRate, WarmupSteps = Math.Min(200, o.Steps / 10),
                CheckpointDirectory = runDirectory, CheckpointEvery = o.CheckpointEvery, Resume = o.Resume, ForceResume = o.ForceResume,
                StopAfterStep = o.StopAfterStep, ValidateEvery = o.CheckpointEvery, ValidationBatches = 4,
            };
            var result = ConsoleProgress.Train($"BERT2BERT decoder on all-MiniLM-L6-v2 ({examples.Count:N0} examples)", o.Steps,
                p => new Trainer(model, tokenizer).Train(trainable, loader, validation, options, p));
            return (model, tokenizer, result);
        }
        catch { model.Dispose(); throw; }
    }
}
