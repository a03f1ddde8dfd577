using System.Numerics.Tensors;

namespace Nanolora.Transformer;

/// <summary>Recall@1, recall@10 and mean reciprocal rank of each query's own target among all candidates.</summary>
public sealed record RetrievalScores(double RecallAt1, double RecallAt10, double Mrr, int Queries, int Candidates);

/// <summary>
/// Description → synopsis as retrieval: every source is a query, the distinct targets of the same examples are the
/// candidate pool, ranked by cosine similarity of the encoder's sentence embeddings. Candidates are distinct as the
/// encoder sees them (the same word-piece ids: sibling packages can share a synopsis, and texts that differ only in
/// case or accents tokenize alike); a tie with another candidate counts against the target.
/// </summary>
public static class Retrieval
{
    /// <summary>Embeds every source and every distinct target, ranks the targets for each source by cosine similarity, and scores the rank of its own target.</summary>
    /// <param name="model">The encoder whose sentence embeddings are compared.</param>
    /// <param name="tokenizer">Its WordPiece tokenizer.</param>
    /// <param name="pairs">Sources (the queries) and their targets (the candidates).</param>
    /// <param name="maxSourceTokens">Sources are cut to this many word pieces ([CLS] and [SEP] included).</param>
    /// <param name="batchSize">Texts embedded together.</param>
    /// <param name="progress">Receives the number of texts embedded so far.</param>
    public static RetrievalScores Evaluate(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<Example> pairs,
        int maxSourceTokens, int batchSize = 32, IProgress<int>? progress = null)
    {
        var index = new Dictionary<string, int>(StringComparer.Ordinal);   // word-piece ids → candidate
        var candidates = new List<string>();
        var gold = new int[pairs.Count];
        for (int i = 0; i < pairs.Count; i++)
        {
            var key = string.Join(',', tokenizer.Encode(pairs[i].Target));
            if (!index.TryGetValue(key, out gold[i])) { gold[i] = index[key] = candidates.Count; candidates.Add(pairs[i].Target); }
        }
        var queries = SentenceEmbedder.Embed(model, tokenizer, pairs.Select(p => p.Source).ToList(), batchSize, progress, maxSourceTokens);
        var pool = SentenceEmbedder.Embed(model, tokenizer, candidates, batchSize);
        return Score(queries, pool, gold);
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
            for (int c = 0; c < pool.Length; c++) if (c != gold[q] && scores[c] >= goldScore) rank++;   // a tie counts against the target
            hits1 += rank == 1 ? 1 : 0;
            hits10 += rank <= 10 ? 1 : 0;
            reciprocal += 1.0 / rank;
        }
        int n = Math.Max(1, queries.Length);
        return new RetrievalScores((double)hits1 / n, (double)hits10 / n, reciprocal / n, queries.Length, pool.Length);
    }
}
