namespace Nanolora.Transformer;

/// <summary>ROUGE of the predictions against the references, with both texts (in example order).</summary>
public sealed record EvalResult(RougeResult Rouge, IReadOnlyList<string> Predictions, IReadOnlyList<string> References);

/// <summary>Decodes a set of examples in batches and scores them with ROUGE against the targets.</summary>
public static class Evaluator
{
    /// <summary>Decodes each example's source with <paramref name="options"/> and scores the outputs with ROUGE (unstemmed) against the targets.</summary>
    /// <param name="model">The model to decode with.</param>
    /// <param name="tokenizer">Encodes the sources and decodes the outputs.</param>
    /// <param name="examples">The pairs: sources to decode, targets to score against.</param>
    /// <param name="maxSourceTokens">Sources are cut to this many ids (Eos included).</param>
    /// <param name="options">Greedy or beam decoding and its limits.</param>
    /// <param name="batchSize">Examples decoded together.</param>
    /// <param name="progress">Receives the number of examples decoded so far.</param>
    public static EvalResult Evaluate(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, IReadOnlyList<Example> examples,
        int maxSourceTokens, DecodeOptions options, int batchSize = 32, IProgress<int>? progress = null)
    {
        var predictions = new List<string>(examples.Count);
        for (int start = 0; start < examples.Count; start += batchSize)
        {
            var chunk = examples.Skip(start).Take(batchSize).ToList();
            // Sources end with EOS, as in training (Seq2SeqDataset): without it the encoder sees inputs it was never trained on.
            var encoded = chunk.Select(e => tokenizer.EncodeSource(e.Source, maxSourceTokens)).ToList();
            int s = Math.Max(1, encoded.Max(x => x.Length));
            var ids = new int[chunk.Count * s];
            for (int b = 0; b < chunk.Count; b++) Array.Copy(encoded[b], 0, ids, b * s, encoded[b].Length);
            var outputs = SequenceDecoder.Generate(model, ids, chunk.Count, s, options);
            predictions.AddRange(outputs.Select(o => tokenizer.Decode(o)));
            progress?.Report(predictions.Count);
        }
        var references = examples.Select(e => e.Target).ToList();
        return new EvalResult(Rouge.Average(predictions, references), predictions, references);
    }

    /// <summary>The lead-k baseline: the first k words of the source as the summary.</summary>
    public static EvalResult LeadBaseline(IReadOnlyList<Example> examples, int words = 8)
    {
        var predictions = examples.Select(e => string.Join(' ', e.Source.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Take(words))).ToList();
        var references = examples.Select(e => e.Target).ToList();
        return new EvalResult(Rouge.Average(predictions, references), predictions, references);
    }
}
