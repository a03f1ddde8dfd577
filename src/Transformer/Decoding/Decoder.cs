using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>How <see cref="SequenceDecoder"/> generates: greedy when <paramref name="BeamSize"/> is 1, beam search above.</summary>
/// <param name="MaxLength">The most decoding steps (tokens generated) per output.</param>
/// <param name="BeamSize">Beams kept per step (1: greedy decoding).</param>
/// <param name="LengthPenalty">Beam scores are log-probability sums divided by length to this power (Hugging Face's <c>length_penalty</c>).</param>
/// <param name="UseCache">Reuse cached decoder keys and values between steps (same outputs, less work).</param>
/// <param name="NoRepeatNgramSize">
/// As Hugging Face's <c>no_repeat_ngram_size</c>: when above 0, no n-gram of this size occurs twice in an output
/// (the decoder's BOS counts as its first token). Small models otherwise loop ("library for the library for …").
/// </param>
public sealed record DecodeOptions(int MaxLength = 32, int BeamSize = 1, float LengthPenalty = 1f, bool UseCache = true, int NoRepeatNgramSize = 0);

/// <summary>
/// Greedy and beam-search decoding, batched, under NoGrad. With the KV cache each step feeds only the
/// newest token: self-attention keys/values are appended per step, cross-attention ones computed once.
/// </summary>
public static class SequenceDecoder
{
    /// <summary>Decodes each source (ids [B, S], padded) to target ids (without BOS/EOS).</summary>
    public static List<int[]> Generate(Seq2SeqTransformer model, int[] sourceIds, int batch, int sourceLength, DecodeOptions options)
    {
        bool wasTraining = model.Training;
        model.Eval();
        try
        {
            using var noGrad = Graph.NoGrad();
            return options.BeamSize <= 1
                ? Greedy(model, sourceIds, batch, sourceLength, options)
                : Beam(model, sourceIds, batch, sourceLength, options);
        }
        finally { model.Train(wasTraining); }
    }

    static List<int[]> Greedy(Seq2SeqTransformer model, int[] sourceIds, int batch, int sourceLength, DecodeOptions o)
    {
        using var outer = new GraphScope();
        var (memory, mask) = model.Encode(sourceIds, batch, sourceLength);
        using var _ = mask;
        var caches = o.UseCache ? model.NewCaches() : null;
        var outputs = Enumerable.Range(0, batch).Select(_ => new List<int>()).ToArray();
        var done = new bool[batch];
        var prefix = Enumerable.Range(0, batch).Select(_ => new List<int> { SubwordTokenizer.Bos }).ToArray();
        try
        {
            for (int step = 0; step < o.MaxLength && !done.All(d => d); step++)
            {
                using var scope = new GraphScope();
                var logits = NextLogits(model, prefix, memory, mask, caches, step);
                var next = o.NoRepeatNgramSize > 0 ? ArgMaxAllowed(logits, prefix, o.NoRepeatNgramSize) : ArgMax(logits);
                for (int b = 0; b < batch; b++)
                {
                    prefix[b].Add(next[b]);
                    if (done[b]) continue;
                    if (next[b] == SubwordTokenizer.Eos) done[b] = true; else outputs[b].Add(next[b]);
                }
            }
        }
        finally { if (caches != null) foreach (var c in caches) c.Dispose(); }
        return outputs.Select(l => l.ToArray()).ToList();
    }

    /// <summary>Logits [rows, V] for the next token of each prefix: the last token only with a cache, else the whole prefix.</summary>
    static Tensor NextLogits(Seq2SeqTransformer model, IReadOnlyList<List<int>> prefixes, Variable memory, Tensor mask, LayerCache[]? caches, int step)
    {
        int rows = prefixes.Count, v = model.Config.VocabSize;
        if (caches != null)
        {
            var last = prefixes.Select(p => p[^1]).ToArray();
            var hidden = model.Decode(last, rows, 1, memory, mask, caches, positionOffset: step);
            return F.Reshape(model.Logits(hidden), rows, v).Data;
        }
        int t = step + 1;
        var all = prefixes.SelectMany(p => p).ToArray();
        var full = model.Decode(all, rows, t, memory, mask);
        var lastHidden = F.Slice(full, 1, t - 1, 1);
        return F.Reshape(model.Logits(lastHidden), rows, v).Data;
    }

    static int[] ArgMax(Tensor logits) => Ops.ArgMaxLastAxis(logits);

    /// <summary>Greedy choice per row among the tokens that would not repeat an n-gram of that row's prefix.</summary>
    static int[] ArgMaxAllowed(Tensor logits, IReadOnlyList<List<int>> prefixes, int n)
    {
        var values = logits.ToArray();
        int v = values.Length / prefixes.Count;
        var next = new int[prefixes.Count];
        for (int r = 0; r < prefixes.Count; r++)
        {
            BlockRepeatedNgrams(values, r * v, prefixes[r], n);
            next[r] = HostArgMax(values, r * v, v);
        }
        return next;
    }

    static int HostArgMax(float[] values, int offset, int length)
    {
        int best = 0;
        for (int i = 1; i < length; i++) if (values[offset + i] > values[offset + best]) best = i;
        return best;
    }

    /// <summary>
    /// Sets to −∞ the score of every token that would complete an n-gram already in <paramref name="prefix"/>:
    /// those that followed an earlier occurrence of the prefix's last n−1 tokens.
    /// </summary>
    public static void BlockRepeatedNgrams(float[] scores, int offset, IReadOnlyList<int> prefix, int n)
    {
        if (n <= 0 || prefix.Count < n - 1) return;
        int tail = prefix.Count - (n - 1);
        for (int start = 0; start + n <= prefix.Count; start++)
        {
            bool same = true;
            for (int i = 0; i < n - 1 && same; i++) same = prefix[start + i] == prefix[tail + i];
            if (same) scores[offset + prefix[start + n - 1]] = float.NegativeInfinity;
        }
    }

    sealed record Hypothesis(List<int> Tokens, double Score, bool Finished);

    static List<int[]> Beam(Seq2SeqTransformer model, int[] sourceIds, int batch, int sourceLength, DecodeOptions o)
    {
        int k = o.BeamSize, v = model.Config.VocabSize;
        using var outer = new GraphScope();
        // Every source is repeated k times so the beams of one source are rows b·k … b·k+k−1.
        var repeatedIds = new int[batch * k * sourceLength];
        for (int b = 0; b < batch; b++)
            for (int j = 0; j < k; j++)
                Array.Copy(sourceIds, b * sourceLength, repeatedIds, (b * k + j) * sourceLength, sourceLength);
        var (memory, mask) = model.Encode(repeatedIds, batch * k, sourceLength);
        using var _ = mask;
        var caches = o.UseCache ? model.NewCaches() : null;
        var beams = new List<Hypothesis>[batch];
        for (int b = 0; b < batch; b++)
        {
            // Only the first beam is live at the start, so k identical beams don't fill the beam.
            beams[b] = Enumerable.Range(0, k).Select(j => new Hypothesis([SubwordTokenizer.Bos], j == 0 ? 0 : double.NegativeInfinity, false)).ToList();
        }
        var finished = Enumerable.Range(0, batch).Select(_ => new List<Hypothesis>()).ToArray();
        try
        {
            for (int step = 0; step < o.MaxLength; step++)
            {
                using var scope = new GraphScope();
                var prefixes = beams.SelectMany(bs => bs.Select(h => h.Tokens)).ToList();
                using var logProbs = Ops.LogSoftmax(NextLogits(model, prefixes, memory, mask, caches, step));
                var lp = logProbs.ToArray();
                var origins = new int[batch * k];
                bool anyLive = false;
                for (int b = 0; b < batch; b++)
                {
                    var candidates = new List<(double Score, int Beam, int Token)>();
                    for (int j = 0; j < k; j++)
                    {
                        var h = beams[b][j];
                        if (double.IsNegativeInfinity(h.Score)) continue;
                        int row = (b * k + j) * v;
                        BlockRepeatedNgrams(lp, row, h.Tokens, o.NoRepeatNgramSize);
                        foreach (int tok in TopK(lp, row, v, k + 1))
                            if (!float.IsNegativeInfinity(lp[row + tok])) candidates.Add((h.Score + lp[row + tok], j, tok));
                    }
                    candidates.Sort((x, y) => y.Score.CompareTo(x.Score));
                    var next = new List<Hypothesis>();
                    foreach (var (score, j, tok) in candidates)
                    {
                        if (next.Count == k) break;
                        var tokens = new List<int>(beams[b][j].Tokens) { tok };
                        if (tok == SubwordTokenizer.Eos || step == o.MaxLength - 1)
                        {
                            finished[b].Add(new Hypothesis(tokens, score, true));
                            if (tok == SubwordTokenizer.Eos) continue;
                        }
                        origins[b * k + next.Count] = b * k + j;
                        next.Add(new Hypothesis(tokens, score, false));
                    }
                    while (next.Count < k) { origins[b * k + next.Count] = b * k; next.Add(new Hypothesis([.. beams[b][0].Tokens, SubwordTokenizer.Pad], double.NegativeInfinity, false)); }
                    beams[b] = next;
                    // A source is done when its best finished hypothesis beats every live beam's best possible score.
                    double bestFinished = finished[b].Count > 0 ? finished[b].Max(h => Normalize(h, o.LengthPenalty)) : double.NegativeInfinity;
                    if (next.Any(h => !double.IsNegativeInfinity(h.Score) && Normalize(h, o.LengthPenalty) > bestFinished)) anyLive = true;
                }
                if (!anyLive) break;
                if (caches != null) ReorderCaches(caches, origins);
            }
        }
        finally { if (caches != null) foreach (var c in caches) c.Dispose(); }
        return finished.Select((f, b) =>
        {
            var pool = f.Count > 0 ? f : beams[b];
            var best = pool.OrderByDescending(h => Normalize(h, o.LengthPenalty)).First();
            return best.Tokens.Skip(1).Where(t => t != SubwordTokenizer.Eos && t != SubwordTokenizer.Pad).ToArray();
        }).ToList();
    }

    static double Normalize(Hypothesis h, float penalty) => LengthNormalizedScore(h.Score, h.Tokens, penalty);

    /// <summary>
    /// Hugging Face's beam length normalization: sum of log-probs / length^penalty, where length counts the generated
    /// tokens including the closing EOS (not BOS), as its beam scorer does.
    /// </summary>
    public static double LengthNormalizedScore(double logProbability, IReadOnlyList<int> tokensWithBos, float penalty) =>
        logProbability / Math.Pow(Math.Max(1, tokensWithBos.Count - 1), penalty);

    static IEnumerable<int> TopK(float[] values, int offset, int length, int k)
    {
        var best = new List<int>(k + 1);
        for (int i = 0; i < length; i++)
        {
            float x = values[offset + i];
            if (best.Count == k && x <= values[offset + best[^1]]) continue;
            int pos = best.FindIndex(j => values[offset + j] < x);
            if (pos < 0) pos = best.Count;
            best.Insert(pos, i);
            if (best.Count > k) best.RemoveAt(k);
        }
        return best;
    }

    /// <summary>Rows of every self-attention cache follow their beam's origin (a row gather).</summary>
    static void ReorderCaches(LayerCache[] caches, int[] origins)
    {
        foreach (var c in caches)
        {
            if (c.Self.Keys == null) continue;
            c.Self.Set(GatherRows(c.Self.Keys, origins), GatherRows(c.Self.Values!, origins));
        }
    }

    static Tensor GatherRows(Tensor t, int[] rows)
    {
        var shape = t.ShapeArray();
        using var flat = t.Reshape(shape[0], -1);
        using var gathered = Ops.Embedding(flat, rows, [rows.Length]);
        using var back = gathered.Reshape(shape);
        return back.Clone(MemoryCategory.Other);
    }
}
