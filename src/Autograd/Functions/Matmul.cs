using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>
    /// C = alpha·op(A)·op(B), batched. Backward (for C = alpha·A·B): dA = alpha·dC·Bᵀ, dB = alpha·Aᵀ·dC, with the
    /// transpose flags folded in so no transposed copy is ever made. A frozen operand gets no work at all. The scale
    /// rides in the products (attention's 1/√D), so it costs no pass of its own either way.
    /// </summary>
    public static Variable Matmul(Variable a, Variable b, bool transposeA = false, bool transposeB = false, float alpha = 1f)
    {
        var y = Ops.Matmul(a.Data, b.Data, transposeA, transposeB, alpha);
        return Graph.Record("matmul", y, [a, b], Reads.Inputs(b.RequiresGrad, a.RequiresGrad), dy =>
        {
            if (a.RequiresGrad)
            {
                // A·B: dA = dy·Bᵀ.  Aᵀ·B: dA = B·dyᵀ.  A·Bᵀ: dA = dy·B.  Aᵀ·Bᵀ: dA = Bᵀ·dyᵀ.
                var da = transposeA ? Ops.Matmul(b.Data, dy, transposeB, true, alpha) : Ops.Matmul(dy, b.Data, false, !transposeB, alpha);
                Graph.Accumulate(a, ReduceBatch(da, a.Data));
            }
            if (b.RequiresGrad)
            {
                // A·B: dB = Aᵀ·dy.  Aᵀ·B: dB = A·dy.  A·Bᵀ: dB = dyᵀ·A.  Aᵀ·Bᵀ: dB = dyᵀ·Aᵀ.
                var db = transposeB ? Ops.Matmul(dy, a.Data, true, transposeA, alpha) : Ops.Matmul(a.Data, dy, !transposeA, false, alpha);
                Graph.Accumulate(b, ReduceBatch(db, b.Data));
            }
        });
    }

    /// <summary>
    /// Dropout(a)·b as one node (attention's dropped probabilities times the values): the dropped copy of a is made for the
    /// product and freed, and backward draws it again from the seed for b's gradient, so a layer keeps a [B·H, T, S]
    /// tensor less until backward. Values and gradients are bit for bit those of <see cref="Dropout"/> then
    /// <see cref="Matmul"/> (the same ops run, in the same order).
    /// </summary>
    /// <param name="a">The operand dropped [..., T, S] (attention probabilities).</param>
    /// <param name="b">The other operand [..., S, D].</param>
    /// <param name="p">The dropout rate.</param>
    /// <param name="seed">The dropout seed (the mask is a hash of it and the element's index).</param>
    public static Variable DropoutMatmul(Variable a, Variable b, float p, ulong seed)
    {
        Tensor y;
        using (var dropped = Ops.Dropout(a.Data, p, seed)) y = Ops.Matmul(dropped, b.Data);
        return Graph.Record("dropout_matmul", y, [a, b], Reads.Inputs(b.RequiresGrad, a.RequiresGrad), dy =>
        {
            if (a.RequiresGrad)
            {
                // Summed over a shared a's batch first, then masked at a's own size, as Dropout's rule after Matmul's does.
                var da = ReduceBatch(Ops.Matmul(dy, b.Data, false, true), a.Data);
                Graph.Accumulate(a, Ops.DropoutBackward(da, p, seed, output: da));
            }
            if (b.RequiresGrad)
            {
                using var dropped = Ops.Dropout(a.Data, p, seed);
                Graph.Accumulate(b, ReduceBatch(Ops.Matmul(dropped, dy, true, false), b.Data));
            }
        });
    }

    /// <summary>A rank-2 operand shared across a batch gets the sum of the per-batch gradients.</summary>
    static Tensor ReduceBatch(Tensor g, Tensor operand)
    {
        if (g.Rank == operand.Rank) return g;
        using (g) using (var flat = g.Reshape(-1, operand.Dim(0), operand.Dim(1))) return Ops.SumTo(flat, operand.Shape);
    }

    /// <summary>
    /// y = x·Wᵀ + b with W [out, in] as in PyTorch; x [..., in]. Backward: dx = dy·W, dW = dyᵀ·x, db = Σ dy.
    /// With W frozen (LoRA's base weight) only dx is computed: that skip is LoRA's compute saving.
    /// </summary>
    /// <param name="x">The input [..., in].</param>
    /// <param name="weight">W [out, in].</param>
    /// <param name="bias">b [out], or null.</param>
    /// <param name="valueUnread">
    /// Record the node but leave y zero, without the product: for a value nothing will read, only back-propagate through
    /// (an activation checkpoint's recompute of a pre-LN layer's last linear; its backward reads x and W, never y).
    /// </param>
    public static Variable Linear(Variable x, Variable weight, Variable? bias, bool valueUnread = false)
    {
        int inFeatures = weight.Dim(1), outFeatures = weight.Dim(0);
        if (x.Dim(-1) != inFeatures)
            throw new ArgumentException($"Linear: input's last axis is {x.Dim(-1)} but the weight {weight.Data.ShapeString} expects {inFeatures}.");
        var outShape = x.Data.ShapeArray();
        outShape[^1] = outFeatures;
        using var x2 = x.Data.Reshape(-1, inFeatures);
        Tensor y;
        if (valueUnread) y = Tensor.Zeros(outShape, x.Device);
        else
        {
            y = Tensor.Empty(outShape, x.Device);
            using var y2 = y.Reshape(-1, outFeatures);
            if (bias != null) Ops.BroadcastRowsInto(y2, bias.Data);
            Ops.MatmulInto(y2, x2, weight.Data, false, true, 1f, bias != null ? 1f : 0f);
        }
        var inputs = bias != null ? new[] { x, weight, bias } : new[] { x, weight };
        return Graph.Record(valueUnread ? "linear_unread" : "linear", y, inputs, Reads.Inputs(weight.RequiresGrad, x.RequiresGrad), dy =>
        {
            using var dy2 = dy.Reshape(-1, outFeatures);
            if (x.RequiresGrad)
            {
                var dx = Tensor.Empty(x.Shape, x.Device);
                using (var dx2 = dx.Reshape(-1, inFeatures)) Ops.MatmulInto(dx2, dy2, weight.Data);
                Graph.Accumulate(x, dx);
            }
            if (!weight.RequiresGrad) LinearParameterGradients(weight, bias, dy2, null);
            else using (var xs = x.Data.Reshape(-1, inFeatures)) LinearParameterGradients(weight, bias, dy2, xs);
        });
    }

    /// <summary>A linear's dW += dy2ᵀ·x2 and db += Σ dy2 over rows, for those of weight and bias that train.</summary>
    /// <param name="weight">The weight [out, in].</param>
    /// <param name="bias">The bias [out], or null.</param>
    /// <param name="dy2">The output gradient [N, out].</param>
    /// <param name="x2">The input [N, in] (read only when the weight trains; its value may be gone otherwise).</param>
    internal static void LinearParameterGradients(Variable weight, Variable? bias, Tensor dy2, Tensor? x2)
    {
        if (weight.RequiresGrad)
        {
            ArgumentNullException.ThrowIfNull(x2);
            if (weight.Grad == null) Graph.Accumulate(weight, Ops.Matmul(dy2, x2, true, false));
            else Ops.MatmulInto(weight.Grad, dy2, x2, true, false, 1f, 1f); // accumulate in place: no temporary
        }
        if (bias != null && bias.RequiresGrad) Graph.Accumulate(bias, Ops.SumTo(dy2, bias.Shape));
    }
}
