using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

public class RetrievalTests(MiniLmFixture mini) : IClassFixture<MiniLmFixture>
{
    static float[] Unit(params float[] v)
    {
        float n = MathF.Sqrt(v.Sum(x => x * x));
        return v.Select(x => x / n).ToArray();
    }

    [Fact]
    public void Ranks_recall_and_mrr_by_hand()
    {
        // 12 candidates on the unit circle at angles 0, 0.1, … 1.1, plus a 13th equal to candidate 3 (a tie).
        static float[] At(float angle) => Unit(MathF.Cos(angle), MathF.Sin(angle));
        var pool = Enumerable.Range(0, 12).Select(i => At(i * 0.1f)).Append(At(0.3f)).ToArray();
        var queries = new[] { At(0f), At(0.23f), At(1.07f), At(0.3f) };
        // Gold 0 from angle 0: rank 1. From 0.23: candidates 1-4 and the copy of 3 are closer: rank 6.
        // From 1.07: candidates 1-11 and the copy are closer: rank 13. Gold 3 from 0.3: its exact copy ties, counted against: rank 2.
        var s = Retrieval.Score(queries, pool, [0, 0, 0, 3]);
        Assert.Equal(1 / 4.0, s.RecallAt1, 12);
        Assert.Equal(3 / 4.0, s.RecallAt10, 12);
        Assert.Equal((1 + 1 / 6.0 + 1 / 13.0 + 1 / 2.0) / 4, s.Mrr, 12);
        Assert.Equal((4, 13), (s.Queries, s.Candidates));
    }

    [Fact]
    public void Contrastive_training_lowers_the_loss_and_never_touches_frozen_weights()
    {
        // MiniLM's embeddings and first layer with real weights, 8 real pairs, one batch repeated.
        var config = mini.Model.Config with { Layers = 1, HiddenDropout = 0, AttentionDropout = 0 };
        var weights = mini.Model.NamedParameters()
            .Where(p => !p.Name.StartsWith("encoder.layer.") || p.Name.StartsWith("encoder.layer.0."))
            .ToDictionary(p => p.Name, p => (p.Parameter.Data.ShapeArray(), (Func<float[]>)p.Parameter.Data.ToArray));
        using var model = new BertModel(config, Device.Get("cpu"));
        StateDictLoader.Load(model, weights, "MiniLM layer 0");
        var pairs = JsonlDataset.Load(DataPaths.Find("debian-descriptions.jsonl.gz"), "train", 8);
        foreach (var (name, p) in model.NamedParameters()) p.Trainable = name.StartsWith("encoder.");
        var frozen = ((Parameter)model.NamedParameters().First(p => p.Name == "embeddings.word_embeddings.weight").Parameter).Data.ToArray();
        var result = ContrastiveTrainer.Train(model, mini.Tokenizer, pairs, model.TrainableParameters().ToList(),
            new ContrastiveOptions { Steps = 6, BatchSize = 8, LearningRate = 1e-4f, WarmupFraction = 0, MaxSourceTokens = 48 });
        Assert.Equal(6, result.Losses.Count);
        Assert.True(result.Losses[^1] < result.Losses[0], $"loss went {string.Join(" → ", result.Losses)}");
        Assert.Equal(frozen, model.NamedParameters().First(p => p.Name == "embeddings.word_embeddings.weight").Parameter.Data.ToArray());
        Assert.Equal(model.TrainableParameters().Sum(p => p.Count), result.TrainableParameters);
    }
}
