using System.Numerics.Tensors;

namespace Nanolora.Transformer;

/// <summary>Recall@1, recall@10 and mean reciprocal rank of each query's own target among all candidates.</summary>
public sealed record RetrievalScores(double RecallAt1, double RecallAt10, double Mrr, int Queries, int Candidates);

/// <summary>
/// Description → synopsis as retrieval: every source is a query, the distinct targets of the same examples are the
/// candidate pool, ranked by cosine similarity of the encoder's sentence embeddings. A candidate whose text equals
/// the query's own target counts as the target (sibling packages can share a synopsis).
/// </summary>
public static class Retrieval
{
    public static RetrievalScores Evaluate(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<Example> pairs,
        int maxSourceTokens, int batchSize = 32, IProgress<int>? progress = null)
    {
        var candidates = pairs.Select(p => p.Target).Distinct(StringComparer.Ordinal).ToList();
        var index = candidates.Select((t, i) => (t, i)).ToDictionary(x => x.t, x => x.i, StringComparer.Ordinal);
        var queries = SentenceEmbedder.Embed(model, tokenizer, pairs.Select(p => p.Source).ToList(), batchSize, progress, maxSourceTokens);
        var pool = SentenceEmbedder.Embed(model, tokenizer, candidates, batchSize);
        return Score(queries, pool, pairs.Select(p => index[p.Target]).ToArray());
    }

    /// <summary>Ranks from embeddings (rows L2-normalized, so a dot product is the cosine).</summary>
    public static RetrievalScores Score(float[][] queries, float[][] pool, int[] gold)
    {
        int hits1 = 0, hits10 = 0;
        double reciprocal = 0;
        var scores = new float[pool.Length];
        for (int q = 0; q < queries.Length; q++)
        {
            for (int c = 0; c < pool.Length; c++) scores[c] = TensorPrimitives.Dot(queries[q], pool[c]);
            float goldScore = scores[gold[q]];
            int rank = 1;
            for (int c = 0; c < pool.Length; c++) if (scores[c] > goldScore) rank++;   // ties are resolved in the target's favour
            hits1 += rank == 1 ? 1 : 0;
            hits10 += rank <= 10 ? 1 : 0;
            reciprocal += 1.0 / rank;
        }
        int n = Math.Max(1, queries.Length);
        return new RetrievalScores((double)hits1 / n, (double)hits10 / n, reciprocal / n, queries.Length, pool.Length);
    }
}
