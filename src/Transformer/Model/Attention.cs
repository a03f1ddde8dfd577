using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Keys and values kept across decoding steps for one attention module: self-attention appends the new
/// step's K/V; cross-attention computes them once per source. Tensors are [B, H, S, D].
/// </summary>
public sealed class AttentionCache : IDisposable
{
    /// <summary>Cached keys [B, H, S, D] (null until the first step).</summary>
    public Tensor? Keys { get; internal set; }
    /// <summary>Cached values [B, H, S, D] (null until the first step).</summary>
    public Tensor? Values { get; internal set; }
    /// <summary>Number of cached positions S (0 when empty).</summary>
    public int Length => Keys?.Dim(2) ?? 0;

    internal void Set(Tensor keys, Tensor values)
    {
        Keys?.Dispose(); Values?.Dispose();
        Keys = keys; Values = values;
    }

    /// <summary>Frees the cached tensors and empties the cache.</summary>
    public void Dispose() { Keys?.Dispose(); Values?.Dispose(); Keys = Values = null; }
}

/// <summary>
/// Where an attention module keeps its four projections (dotted paths below it). The seq2seq model uses
/// q_proj/k_proj/v_proj/o_proj; Hugging Face's BERT nests them as self.query … output.dense.
/// </summary>
public sealed record AttentionNames(string Query, string Key, string Value, string Output)
{
    /// <summary>The seq2seq model's names: q_proj, k_proj, v_proj, o_proj.</summary>
    public static readonly AttentionNames Seq2Seq = new("q_proj", "k_proj", "v_proj", "o_proj");
    /// <summary>Hugging Face BertAttention's names: self.query, self.key, self.value, output.dense.</summary>
    public static readonly AttentionNames Bert = new("self.query", "self.key", "self.value", "output.dense");
}

/// <summary>
/// Multi-head attention with separate q/k/v/o projections (children named as <see cref="AttentionNames"/> says,
/// so PEFT methods can wrap them by name). Legend: B batch, T queries, S keys, C width, H heads, D = C/H.
/// </summary>
public sealed class MultiHeadAttention : Module
{
    readonly AttentionNames _names;
    readonly float _probsDropout;
    readonly SeedSequence _seeds;
    /// <summary>Number of heads H.</summary>
    public int Heads { get; }
    /// <summary>Model width C (H heads of D = C/H).</summary>
    public int Width { get; }
    int HeadWidth => Width / Heads;

    /// <summary>
    /// Prefix-tuning hook: extra projected keys and values [B, P, C] prepended to this module's keys and
    /// values (visible to every query). Null: none.
    /// </summary>
    public Func<int, (Variable Keys, Variable Values)>? ExtraKeyValues { get; set; }

    /// <summary>Creates the query, key, value and output projections (each [C, C], C = <paramref name="width"/>).</summary>
    /// <param name="width">Model width C; must be a multiple of <paramref name="heads"/>.</param>
    /// <param name="heads">Number of attention heads (each C / heads wide).</param>
    /// <param name="seeds">Initializes the projections' weights and seeds the dropout.</param>
    /// <param name="device">Where the parameters live.</param>
    /// <param name="names">The child module names (default: this library's; BERT checkpoints use Hugging Face's).</param>
    /// <param name="probsDropout">Dropout on the attention probabilities in training (BERT's attention_probs_dropout_prob; 0: none).</param>
    public MultiHeadAttention(int width, int heads, SeedSequence seeds, Device device, AttentionNames? names = null, float probsDropout = 0f)
    {
        _probsDropout = probsDropout;
        _seeds = seeds;
        if (width % heads != 0) throw new ArgumentException($"Model width {width} is not divisible by {heads} heads.");
        Width = width;
        Heads = heads;
        _names = names ?? AttentionNames.Seq2Seq;
        foreach (var name in new[] { _names.Query, _names.Key, _names.Value, _names.Output })
            RegisterModuleAt(name, new Linear(width, width, true, seeds, device));
    }

    /// <summary>
    /// A projection's output [B, L, C] → [B, H, L, D], a copy; the projection's output is freed then unless a rule reads
    /// it (a plain or LoRA linear reads its input, not its output), so training keeps one of the two until backward.
    /// </summary>
    /// <param name="projection">The projection's output.</param>
    /// <param name="ours">Whether this module made it (a projection it ran), so may free it; a hook's values stay the hook's.</param>
    Variable SplitHeads(Variable projection, bool ours = true)
    {
        var view = F.Reshape(projection, projection.Dim(0), projection.Dim(1), Heads, HeadWidth);
        var heads = F.Permute(view, 0, 2, 1, 3);
        view.ReleaseIfUnread();
        if (ours) projection.ReleaseIfUnread();
        return heads;
    }

    /// <summary>The CPU backend's attention: projections, prefix keys and values before the source's, one fused op, the output projection.</summary>
    Variable FusedForward(Variable query, Variable keyValueSource, bool causal, Tensor? keyMask)
    {
        var (q, k, v) = (Layer(_names.Query).Forward(query), Layer(_names.Key).Forward(keyValueSource), Layer(_names.Value).Forward(keyValueSource));
        Tensor? ownedMask = null;
        if (ExtraKeyValues != null)
        {
            // Prefix tuning: P keys and values every query sees, ahead of the source's (a key mask widened with zeros).
            var (pk, pv) = ExtraKeyValues(query.Dim(0));
            var (sourceK, sourceV) = (k, v);
            k = F.Concat([pk, sourceK], 1);
            v = F.Concat([pv, sourceV], 1);
            Variable.ReleaseAllIfUnread(sourceK, sourceV);
            if (keyMask != null)
            {
                using var zeros = Tensor.Zeros([query.Dim(0), pk.Dim(1)], keyMask.Device);
                keyMask = ownedMask = Ops.Concat([zeros, keyMask], 1);
            }
        }
        var dropping = Training && _probsDropout > 0;
        // q, k and v are this module's own: their gradients are written over them.
        var attended = F.ScaledDotProductAttention(q, k, v, Heads, causal, keyMask, dropping ? _probsDropout : 0f, dropping ? _seeds.Next() : 0, inputsUnread: true);
        ownedMask?.Dispose();
        // What backward does not read goes now: all three without gradients (a checkpoint's forward, inference), the first
        // layer's q when its keys come from frozen weights over frozen embeddings (backward reads q only for dk).
        Variable.ReleaseAllIfUnread(q, k, v);
        return Layer(_names.Output).Forward(attended);
    }

    /// <summary>
    /// query [B, T, C] attends over keyValueSource [B, S, C]. keyMask [B, S] is additive (0 keep, −1e9 drop).
    /// With a cache: for self-attention the new K/V are appended; for cross-attention they are computed once.
    /// </summary>
    public Variable Forward(Variable query, Variable keyValueSource, bool causal, Tensor? keyMask, AttentionCache? cache = null, bool isCross = false)
    {
        int b = query.Dim(0), t = query.Dim(1);
        // The CPU backend runs every head in one op on the projections as they are (no split or merged copies); with a
        // decoding cache, and on the ILGPU backends, the chain below.
        // Its buffers grow with queries × keys: past 2048 × 2048 (~53 MB a thread in backward at D 64) the chain's tensors instead.
        if (cache == null && query.Device.IsCpu && (long)query.Dim(1) * keyValueSource.Dim(1) <= 1 << 22)
            return FusedForward(query, keyValueSource, causal, keyMask);
        var q = SplitHeads(Layer(_names.Query).Forward(query));                                        // [B,H,T,D]
        Variable k, v;
        if (cache != null && isCross && cache.Keys != null)
        {
            k = Variable.Constant(cache.Keys.Reshape(cache.Keys.ShapeArray()));
            v = Variable.Constant(cache.Values!.Reshape(cache.Values.ShapeArray()));
        }
        else
        {
            k = SplitHeads(Layer(_names.Key).Forward(keyValueSource));                                 // [B,H,S,D]
            v = SplitHeads(Layer(_names.Value).Forward(keyValueSource));
            if (cache != null)
            {
                if (!isCross && cache.Keys != null)
                {
                    k = Variable.Constant(Ops.Concat([cache.Keys, k.Data], 2));
                    v = Variable.Constant(Ops.Concat([cache.Values!, v.Data], 2));
                }
                cache.Set(k.Data.Clone(MemoryCategory.Other), v.Data.Clone(MemoryCategory.Other));
            }
        }

        Tensor? ownedMask = null;
        if (ExtraKeyValues != null)
        {
            var (pk, pv) = ExtraKeyValues(b);
            int p = pk.Dim(1);
            k = F.Concat([SplitHeads(pk, ours: false), k], 2);
            v = F.Concat([SplitHeads(pv, ours: false), v], 2);
            if (keyMask != null)
            {
                using var zeros = Tensor.Zeros([b, p], keyMask.Device);
                keyMask = ownedMask = Ops.Concat([zeros, keyMask], 1);
            }
        }

        int s = k.Dim(2);
        // q·kᵀ/√D: the scale is the product's alpha, not a pass over q (exact either way when D is a power of 4).
        var (qRows, kRows) = (F.Reshape(q, b * Heads, t, HeadWidth), F.Reshape(k, b * Heads, s, HeadWidth));
        var scores = F.Matmul(qRows, kRows, false, true, 1f / MathF.Sqrt(HeadWidth));                     // [B·H,T,S]
        // Without gradients (an activation checkpoint's forward, inference) nothing reads q and k again: the layer's
        // later values need not sit beside them. With gradients the product's rule reads them and this frees nothing.
        Variable.ReleaseAllIfUnread(q, qRows, k, kRows);
        var probs = F.Softmax(F.Reshape(scores, b, Heads, t, s), causal, keyMask, inputUnread: true);   // over the scores
        ownedMask?.Dispose();
        var (probRows, vRows) = (F.Reshape(probs, b * Heads, t, s), F.Reshape(v, b * Heads, s, HeadWidth));
        // Training drops probabilities inside the product: backward draws the dropped copy again instead of keeping it.
        var context = Training && _probsDropout > 0
            ? F.DropoutMatmul(probRows, vRows, _probsDropout, _seeds.Next())
            : F.Matmul(probRows, vRows);                                                                     // [B·H,T,D]
        Variable.ReleaseAllIfUnread(scores, probs, probRows, v, vRows);
        var heads = F.Reshape(context, b, Heads, t, HeadWidth);
        var merged = F.Reshape(F.Permute(heads, 0, 2, 1, 3), b, t, Width);
        // The heads' layout is copied into merged; backward reads neither copy's source.
        heads.ReleaseIfUnread();
        context.ReleaseIfUnread();
        return Layer(_names.Output).Forward(merged);
    }
}
