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
    public static Variable ScaledDotProductAttention(Variable q, Variable k, Variable v, int heads, bool causal, Tensor? keyMask, float dropout = 0f, ulong seed = 0,
        bool inputsUnread = false)
    {
        bool overwrite = inputsUnread && q.UnreadByBackward && k.UnreadByBackward && v.UnreadByBackward
            && !ReferenceEquals(q, k) && !ReferenceEquals(q, v) && !ReferenceEquals(k, v);
        bool grad = Graph.IsEnabled && (q.RequiresGrad || k.RequiresGrad || v.RequiresGrad);
        var probs = grad ? Tensor.Empty(Ops.ScaledDotProductAttentionProbsShape(q.Data, k.Data, v.Data, heads, keyMask, dropout), q.Device) : null;
        Tensor y;
        try { y = Ops.ScaledDotProductAttention(q.Data, k.Data, v.Data, heads, causal, keyMask, dropout, seed, probs); }
        catch { probs?.Dispose(); throw; }
        var saved = probs != null ? new[] { probs } : [];
        return Graph.Record("scaled_dot_product_attention", y, [q, k, v], Reads.Inputs(true, true, true), dy =>
        {
            // A view made since the forward would see its values change: then three new tensors after all.
            bool inPlace = overwrite && !q.Data.SharesStorage && !k.Data.SharesStorage && !v.Data.SharesStorage;
            var (dq, dk, dv) = Ops.ScaledDotProductAttentionBackward(dy, q.Data, k.Data, v.Data, probs!, heads, dropout, seed, inPlace);
            if (q.RequiresGrad) Graph.Accumulate(q, dq); else dq.Dispose();
            if (k.RequiresGrad) Graph.Accumulate(k, dk); else dk.Dispose();
            if (v.RequiresGrad) Graph.Accumulate(v, dv); else dv.Dispose();
        }, saved);
    }
}
