using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>Softmax over the last axis with optional causal and key-padding masks.</summary>
    /// <param name="x">The logits [..., T, S].</param>
    /// <param name="causal">Drop the keys after each query's position.</param>
    /// <param name="keyMask">[B, S], added to batch b's logits (see <see cref="Ops.Softmax"/>).</param>
    /// <param name="inputUnread">
    /// The caller's promise that nothing reads x's value after this (attention's scores: their product's backward reads
    /// q and k, not the scores): the probabilities are written over x and the node's value is a view of it, so a layer
    /// keeps one [B, H, T, S] tensor for backward instead of two. x's value then holds the probabilities.
    /// </param>
    public static Variable Softmax(Variable x, bool causal = false, Tensor? keyMask = null, bool inputUnread = false)
    {
        var y = inputUnread
            ? Ops.Softmax(x.Data, causal, keyMask, output: x.Data).Reshape(x.Data.ShapeArray())
            : Ops.Softmax(x.Data, causal, keyMask);
        return Graph.Record("softmax", y, [x], Reads.OnlyOutput, dy =>
        {
            // The rule owns dy: dx is written over it and handed on, no second tensor of its size.
            if (x.RequiresGrad) Graph.Pass(x, Ops.SoftmaxBackward(y, dy, output: dy));
        });
    }

    /// <summary>log(softmax(x)) over the last axis.</summary>
    public static Variable LogSoftmax(Variable x)
    {
        var y = Ops.LogSoftmax(x.Data);
        return Graph.Record("log_softmax", y, [x], Reads.OnlyOutput, dy =>
        {
            if (x.RequiresGrad) Graph.Accumulate(x, Ops.LogSoftmaxBackward(y, dy));
        });
    }

    /// <summary>LayerNorm over the last axis; a frozen gamma/beta skips their gradient work.</summary>
    public static Variable LayerNorm(Variable x, Variable gamma, Variable? beta, float eps = 1e-5f)
    {
        var y = Ops.LayerNorm(x.Data, gamma.Data, beta?.Data, eps, out var mean, out var rstd);
        var inputs = beta != null ? new[] { x, gamma, beta } : new[] { x, gamma };
        return Graph.Record("layer_norm", y, inputs, Reads.Inputs(true, true, false), dy =>
        {
            bool paramGrads = gamma.RequiresGrad || (beta?.RequiresGrad ?? false);
            var dx = Ops.LayerNormBackward(dy, x.Data, gamma.Data, mean, rstd, paramGrads, out var dGamma, out var dBeta);
            if (x.RequiresGrad) Graph.Accumulate(x, dx); else dx.Dispose();
            if (gamma.RequiresGrad) Graph.Accumulate(gamma, dGamma!); else dGamma?.Dispose();
            if (beta != null && beta.RequiresGrad) Graph.Accumulate(beta, dBeta!); else dBeta?.Dispose();
        }, mean, rstd);
    }

    /// <summary>RMSNorm over the last axis C: x·γ/√(mean(x²) + eps); x [..., C], γ [C].</summary>
    public static Variable RmsNorm(Variable x, Variable gamma, float eps = 1e-6f)
    {
        var y = Ops.RmsNorm(x.Data, gamma.Data, eps, out var rstd);
        return Graph.Record("rms_norm", y, [x, gamma], dy =>
        {
            var dx = Ops.RmsNormBackward(dy, x.Data, gamma.Data, rstd, gamma.RequiresGrad, out var dGamma);
            if (x.RequiresGrad) Graph.Accumulate(x, dx); else dx.Dispose();
            if (gamma.RequiresGrad) Graph.Accumulate(gamma, dGamma!); else dGamma?.Dispose();
        }, rstd);
    }

    /// <summary>Rows of weight [V, C] picked by ids; backward scatter-adds into dW (repeated ids accumulate).</summary>
    public static Variable Embedding(Variable weight, int[] ids, params int[] idsShape)
    {
        var y = Ops.Embedding(weight.Data, ids, idsShape);
        int vocab = weight.Dim(0);
        return Graph.Record("embedding", y, [weight], Reads.Nothing, dy =>
        {
            if (weight.RequiresGrad) Graph.Accumulate(weight, Ops.EmbeddingBackward(dy, ids, vocab));
        });
    }

    /// <summary>
    /// Mean cross-entropy of logits [N, V] against targets, ignoring <paramref name="ignoreIndex"/>, with
    /// label smoothing; fused with log-softmax so the [N, V] probabilities are formed once.
    /// </summary>
    /// <param name="logits">The logits [N, V].</param>
    /// <param name="targets">The target class of each row.</param>
    /// <param name="ignoreIndex">Rows with this target count for nothing.</param>
    /// <param name="labelSmoothing">PyTorch's ε.</param>
    /// <param name="logitsUnread">
    /// The caller's promise that nothing reads the logits after this (<see cref="Variable.UnreadByBackward"/>, and no later
    /// op): the log-probabilities the backward keeps are written over them, one [N, V] tensor at the top of a training step
    /// instead of two. The logits' value then holds the log-probabilities.
    /// </param>
    public static Variable CrossEntropy(Variable logits, int[] targets, int ignoreIndex = -100, float labelSmoothing = 0f, bool logitsUnread = false)
    {
        var loss = Ops.CrossEntropy(logits.Data, targets, ignoreIndex, labelSmoothing, out var logProbs, logitsUnread ? logits.Data : null);
        if (logitsUnread) logProbs = logProbs.Reshape(logProbs.ShapeArray());   // the node's own reference (it disposes what it saved)
        return Graph.Record("cross_entropy", loss, [logits], Reads.Nothing, dy =>
        {
            // The log-probabilities are this rule's alone and die with it: the gradient is written over them (a view, since
            // the node disposes what it saved), not beside them — one [N, V] tensor less at the top of backward.
            if (logits.RequiresGrad)
                Graph.Accumulate(logits, Ops.CrossEntropyBackward(logProbs, targets, ignoreIndex, labelSmoothing, dy.Item(), output: logProbs)
                    .Reshape(logProbs.ShapeArray()));
        }, logProbs);
    }
}
