using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>
    /// fc2(ReLU-dropout(fc1(x))) with both linears frozen (LoRA on attention only, prompt and prefix tuning, a frozen
    /// layer) as one node. Its backward needs only where the hidden layer is not zero, so the node keeps that as bits
    /// (<see cref="Ops.PackNonzero"/>, 1/32 of the float mask) instead of the hidden values and their mask, 8 bytes per
    /// hidden element each layer. Values and gradients are bit for bit those of Linear, ReluDropout (Relu when
    /// <paramref name="dropout"/> is false) and Linear: the same ops run both ways.
    /// </summary>
    /// <param name="x">The input [..., C].</param>
    /// <param name="w1">fc1's weight [H, C].</param>
    /// <param name="b1">fc1's bias [H], or null.</param>
    /// <param name="w2">fc2's weight [C, H].</param>
    /// <param name="b2">fc2's bias [C], or null.</param>
    /// <param name="p">The activation dropout rate (used when <paramref name="dropout"/>).</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="dropout">Whether dropout applies (training with p &gt; 0).</param>
    public static Variable FrozenReluFeedForward(Variable x, Variable w1, Variable? b1, Variable w2, Variable? b2, float p, ulong seed, bool dropout)
    {
        CheckFeedForward(x, w1, w2);
        int inFeatures = w1.Dim(1), hidden = w1.Dim(0);
        var hiddenShape = x.Data.ShapeArray();
        hiddenShape[^1] = hidden;
        Tensor bits, y = Tensor.Empty(x.Data.ShapeArray(), x.Device);
        using (var x2 = x.Data.Reshape(-1, inFeatures))
        using (var pre = Tensor.Empty(hiddenShape, x.Device))
        {
            using (var pre2 = pre.Reshape(-1, hidden)) LinearInto(pre2, x2, w1, b1);
            Tensor mask = null!;
            using var h = dropout ? Ops.ReluDropout(pre, p, seed, out mask) : Ops.Map(pre, new ReluOp());
            using (mask) bits = Ops.PackNonzero(h);
            using var h2 = h.Reshape(-1, hidden);
            using var y2 = y.Reshape(-1, inFeatures);
            LinearInto(y2, h2, w2, b2);
        }
        return RecordFrozenFeedForward("frozen_feed_forward", y, x, w1, w2, bits, DropoutScale(dropout, p), select: !dropout, ownsBits: true);
    }

    /// <summary>
    /// The node of <see cref="FrozenReluFeedForward"/> without its values, for an activation checkpoint's recompute of a
    /// pre-LN layer (whose output nothing reads): y is zeros, nothing is multiplied forward, and the bits are the ones the
    /// checkpoint's forward kept (they stay the caller's); <paramref name="p"/> and <paramref name="dropout"/> as the
    /// forward had them.
    /// </summary>
    public static Variable FrozenReluFeedForwardUnread(Variable x, Variable w1, Variable w2, Tensor bits, float p, bool dropout)
    {
        CheckFeedForward(x, w1, w2);
        return RecordFrozenFeedForward("feed_forward_unread", Tensor.Zeros(x.Data.ShapeArray(), x.Device), x, w1, w2, bits,
            DropoutScale(dropout, p), select: !dropout, ownsBits: false);
    }

    /// <summary>Dropout's keep scale 1/(1 − p) as the dropout op computes it (1 without dropout).</summary>
    static float DropoutScale(bool dropout, float p) => !dropout ? 1f : p == 1f ? 0f : (float)(1.0 / (1.0 - p));

    static void CheckFeedForward(Variable x, Variable w1, Variable w2)
    {
        if (x.Dim(-1) != w1.Dim(1) || w2.Dim(1) != w1.Dim(0) || w2.Dim(0) != w1.Dim(1))
            throw new ArgumentException($"Frozen feed-forward: input {x.Data.ShapeString}, fc1 {w1.Data.ShapeString}, fc2 {w2.Data.ShapeString} do not chain.");
    }

    /// <summary>y = x·Wᵀ + b as <see cref="Linear"/> computes it.</summary>
    static void LinearInto(Tensor y2, Tensor x2, Variable w, Variable? b)
    {
        if (b != null) Ops.BroadcastRowsInto(y2, b.Data);
        Ops.MatmulInto(y2, x2, w.Data, false, true, 1f, b != null ? 1f : 0f);
    }

    /// <summary>Backward, as the three nodes' rules: dh = dy·W2, dh ⊙ mask (from the bits), dx = dh·W1.</summary>
    static Variable RecordFrozenFeedForward(string name, Tensor y, Variable x, Variable w1, Variable w2, Tensor bits, float scale, bool select, bool ownsBits)
    {
        int inFeatures = w1.Dim(1), hidden = w1.Dim(0);
        return Graph.Record(name, y, [x], dy =>
        {
            if (!x.RequiresGrad) return;
            using var dy2 = dy.Reshape(-1, inFeatures);
            using var dh = Tensor.Empty([dy2.Dim(0), hidden], dy.Device);
            Ops.MatmulInto(dh, dy2, w2.Data);
            using var masked = Ops.MulByBits(dh, bits, scale, select);
            var dx = Tensor.Empty(x.Shape, x.Device);
            using (var dx2 = dx.Reshape(-1, inFeatures)) Ops.MatmulInto(dx2, masked, w1.Data);
            Graph.Accumulate(x, dx);
        }, ownsBits ? [bits] : []);
    }
}
