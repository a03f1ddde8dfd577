using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>
    /// Multi-head scaled dot-product attention as one node (<see cref="Ops.ScaledDotProductAttention"/>, the CPU backend's): q [B, T, C]
    /// attends over k, v [B, S, C] in <paramref name="heads"/> heads and returns the merged heads [B, T, C]. Backward
    /// reads q, k, v and the probabilities the forward saved ([B·H, T, S], as the composed chain keeps them); the dropout
    /// mask is drawn again from the seed. With gradients off nothing is saved.
    /// </summary>
    /// <param name="q">Queries [B, T, C] (a projection's output, heads side by side).</param>
    /// <param name="k">Keys [B, S, C].</param>
    /// <param name="v">Values [B, S, C].</param>
    /// <param name="heads">Number of heads H (C = H·D).</param>
    /// <param name="causal">Query i sees keys up to i + S − T.</param>
    /// <param name="keyMask">[B, S] additive key mask (0 keep, ≤ −1e9 drop), or null.</param>
    /// <param name="dropout">Dropout on the probabilities (0: none).</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="inputsUnread">
    /// The caller's promise that nothing but this op reads q's, k's and v's values (attention's own projections, as
    /// <see cref="Softmax"/>'s inputUnread): backward then writes their gradients over them instead of into three new
    /// tensors, which held a layer's backward at its memory peak. Taken only when no rule recorded so far reads them and
    /// they share no storage (<see cref="Variable.UnreadByBackward"/>).
    /// </param>
    /// <param name="remakeProbabilities">
    /// Keep no probabilities: backward makes each head's again from q and k (the same values bit for bit, one more q·kᵀ and
    /// softmax), and reads q and k whichever gradients it makes. Default: inside an activation checkpoint's recompute
    /// (<see cref="ActivationCheckpoint.IsRecompute"/>), where the [B·H, T, S] probabilities sat through the backward of
    /// the rest of the layer, at the checkpointed step's memory peak, when they take more bytes than the q or k that
    /// backward would otherwise not read (a frozen key projection's q, a frozen query projection's k).
    /// </param>
    public static Variable ScaledDotProductAttention(Variable q, Variable k, Variable v, int heads, bool causal, Tensor? keyMask, float dropout = 0f, ulong seed = 0,
        bool inputsUnread = false, bool? remakeProbabilities = null)
    {
        bool grad = Graph.IsEnabled && (q.RequiresGrad || k.RequiresGrad || v.RequiresGrad);
        // By default only where it saves memory: remade probabilities need q and k kept, which backward may not read otherwise.
        long probsBytes = q.Data.Rank == 3 && k.Data.Rank == 3 ? (long)q.Dim(0) * heads * q.Dim(1) * k.Dim(1) * sizeof(float) : 0;   // the op refuses other ranks
        long extraBytes = (k.RequiresGrad ? 0 : q.Data.Length * sizeof(float)) + (q.RequiresGrad ? 0 : k.Data.Length * sizeof(float));
        bool remake = grad && (remakeProbabilities ?? (ActivationCheckpoint.IsRecompute && probsBytes > extraBytes));
        // Backward reads q only for dk, k only for dq, v for either: the first layer's q, with keys from frozen weights
        // over frozen embeddings, can go as soon as the forward has used it. Probabilities made again read both.
        bool readQ = k.RequiresGrad || remake, readK = q.RequiresGrad || remake, readV = q.RequiresGrad || k.RequiresGrad;
        var wanted = (q.RequiresGrad ? AttentionInputs.Q : 0) | (k.RequiresGrad ? AttentionInputs.K : 0) | (v.RequiresGrad ? AttentionInputs.V : 0);
        // An input backward reads stays alive until then, so its gradient can be written over it.
        bool distinct = !ReferenceEquals(q, k) && !ReferenceEquals(q, v) && !ReferenceEquals(k, v);
        var overwrite = !inputsUnread || !distinct ? AttentionInputs.None
            : (readQ && q.RequiresGrad && q.UnreadByBackward ? AttentionInputs.Q : 0)
            | (readK && k.RequiresGrad && k.UnreadByBackward ? AttentionInputs.K : 0)
            | (readV && v.RequiresGrad && v.UnreadByBackward ? AttentionInputs.V : 0);
        var probs = grad && !remake ? Tensor.Empty(Ops.ScaledDotProductAttentionProbsShape(q.Data, k.Data, v.Data, heads, keyMask, dropout), q.Device) : null;
        Tensor y;
        try { y = Ops.ScaledDotProductAttention(q.Data, k.Data, v.Data, heads, causal, keyMask, dropout, seed, probs); }
        catch { probs?.Dispose(); throw; }
        // Made again in backward from the key mask as it is now: a copy of it, which the caller may change or free meanwhile.
        var maskKept = remake ? keyMask?.Clone() : null;
        Tensor[] saved = probs != null ? [probs] : maskKept != null ? [maskKept] : [];
        return Graph.Record("scaled_dot_product_attention", y, [q, k, v], Reads.Inputs(readQ, readK, readV), dy =>
        {
            // A view made since the forward would see its values change: then a new tensor for that gradient after all.
            var inPlace = overwrite;
            if (q.Data.IsDisposed || q.Data.SharesStorage) inPlace &= ~AttentionInputs.Q;
            if (k.Data.IsDisposed || k.Data.SharesStorage) inPlace &= ~AttentionInputs.K;
            if (v.Data.IsDisposed || v.Data.SharesStorage) inPlace &= ~AttentionInputs.V;
            var (dq, dk, dv) = remake
                ? Ops.ScaledDotProductAttentionBackward(dy, q.Data, k.Data, readV ? v.Data : null, heads, causal, maskKept, dropout, seed, wanted, inPlace)
                : Ops.ScaledDotProductAttentionBackward(dy, readQ ? q.Data : null, readK ? k.Data : null, readV ? v.Data : null, probs!, heads,
                    dropout, seed, wanted, inPlace);
            if (dq != null) Graph.Accumulate(q, dq);
            if (dk != null) Graph.Accumulate(k, dk);
            if (dv != null) Graph.Accumulate(v, dv);
        }, saved);
    }
}
