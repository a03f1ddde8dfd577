using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Sentence embeddings in batches, as sentence-transformers' encode(): texts sorted by length so a batch pads
/// little, embedded without a graph, returned in input order. Each row is mean-pooled and L2-normalized.
/// </summary>
public static class SentenceEmbedder
{
    /// <summary>One L2-normalized embedding (length C) per text, in input order.</summary>
    /// <param name="model">The encoder.</param>
    /// <param name="tokenizer">Its WordPiece tokenizer.</param>
    /// <param name="texts">The texts to embed.</param>
    /// <param name="batchSize">Texts embedded together.</param>
    /// <param name="progress">Receives the number of texts embedded so far.</param>
    /// <param name="maxLength">The most word pieces per text (null: the tokenizer's <see cref="BertWordPieceTokenizer.MaxLength"/>).</param>
    public static float[][] Embed(BertModel model, BertWordPieceTokenizer tokenizer, IReadOnlyList<string> texts, int batchSize = 32,
        IProgress<int>? progress = null, int? maxLength = null)
    {
        if (batchSize < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), $"Batch size must be at least 1, got {batchSize}.");
        bool wasTraining = model.Training;
        model.Eval();
        try
        {
            var encoded = texts.Select(t => tokenizer.Encode(t, maxLength)).ToArray();
            var order = Enumerable.Range(0, texts.Count).OrderByDescending(i => encoded[i].Length).ToArray();
            var result = new float[texts.Count][];
            int c = model.Config.HiddenSize, done = 0;
            using var noGrad = Graph.NoGrad();
            foreach (var chunk in order.Chunk(batchSize))
            {
                using var scope = new GraphScope();
                var batch = EncoderBatch.Pad(chunk.Select(i => (IReadOnlyList<int>)encoded[i]).ToList(), tokenizer.PadId);
                var rows = model.Embed(batch).Data.ToArray();
                for (int r = 0; r < chunk.Length; r++) result[chunk[r]] = rows.AsSpan(r * c, c).ToArray();
                progress?.Report(done += chunk.Length);
            }
            return result;
        }
        finally { model.Train(wasTraining); }
    }
}
