using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// Differentiable ops (like torch.nn.functional). Each family's forward and backward rule sit together,
/// micrograd-style: the rule receives dL/dy and accumulates into each input that requires a gradient.
/// </summary>
public static partial class F
{
    /// <summary>y = op(x) for any unary struct op; backward is dy·op'(x, y).</summary>
    public static Variable Map<TOp>(Variable x, TOp op = default) where TOp : struct, IUnaryOp
    {
        var y = Ops.Map(x.Data, op);
        return Graph.Record(typeof(TOp).Name, y, [x], dy =>
        {
            if (x.RequiresGrad) Graph.Accumulate(x, Ops.MapBackward(x.Data, y, dy, op));
        });
    }

    /// <summary>−x.</summary>
    public static Variable Neg(Variable x) => Map<NegOp>(x);
    /// <summary>eˣ elementwise.</summary>
    public static Variable Exp(Variable x) => Map<ExpOp>(x);
    /// <summary>Natural logarithm elementwise.</summary>
    public static Variable Log(Variable x) => Map<LogOp>(x);
    /// <summary>√x elementwise.</summary>
    public static Variable Sqrt(Variable x) => Map<SqrtOp>(x);
    /// <summary>tanh elementwise.</summary>
    public static Variable Tanh(Variable x) => Map<TanhOp>(x);
    /// <summary>Logistic sigmoid elementwise.</summary>
    public static Variable Sigmoid(Variable x) => Map<SigmoidOp>(x);
    /// <summary>max(x, 0) elementwise.</summary>
    public static Variable Relu(Variable x) => Map<ReluOp>(x);
    /// <summary>SiLU, x·sigmoid(x), elementwise.</summary>
    public static Variable Silu(Variable x) => Map<SiluOp>(x);
    /// <summary>GELU elementwise: the exact erf form (PyTorch's default), or the tanh approximation when <paramref name="tanhApproximation"/>.</summary>
    public static Variable Gelu(Variable x, bool tanhApproximation = false) =>
        tanhApproximation ? Map<GeluTanhOp>(x) : Map<GeluErfOp>(x);
    /// <summary>s·x.</summary>
    public static Variable Scale(Variable x, float s) => Affine(x, s, 0f);
    /// <summary>x + s.</summary>
    public static Variable AddScalar(Variable x, float s) => Affine(x, 1f, s);

    /// <summary>s·x + t, whose backward (dx = s·dy) reads no value, so a model may free x and the result after use.</summary>
    static Variable Affine(Variable x, float s, float t)
    {
        var y = Ops.Map(x.Data, new AffineOp(s, t));
        return Graph.Record(nameof(AffineOp), y, [x], Reads.Nothing, dy =>
        {
            if (x.RequiresGrad) Graph.Accumulate(x, Ops.Map(dy, new AffineOp(s, 0f)));
        });
    }
    /// <summary>xᵖ elementwise (see <see cref="PowOp"/>).</summary>
    public static Variable Pow(Variable x, float p) => Map(x, new PowOp(p));

    // ---- binary with broadcasting: the gradient of a broadcast operand is summed back to its shape ----

    /// <summary>a + b with broadcasting.</summary>
    public static Variable Add(Variable a, Variable b)
    {
        var y = Ops.Add(a.Data, b.Data);
        return Graph.Record("add", y, [a, b], Reads.Nothing, dy =>
        {
            // A residual's two inputs both get dy: one takes dy itself, so only the other needs a copy.
            bool passed = false;
            if (a.RequiresGrad)
            {
                if (a.Data.Shape.SequenceEqual(dy.Shape)) { Graph.Pass(a, dy); passed = true; }
                else Graph.Accumulate(a, Ops.SumTo(dy, a.Shape));
            }
            if (b.RequiresGrad)
            {
                if (!passed && b.Data.Shape.SequenceEqual(dy.Shape)) Graph.Pass(b, dy);
                else Graph.Accumulate(b, Ops.SumTo(dy, b.Shape));
            }
        });
    }

    /// <summary>a − b with broadcasting.</summary>
    public static Variable Sub(Variable a, Variable b)
    {
        var y = Ops.Sub(a.Data, b.Data);
        return Graph.Record("sub", y, [a, b], dy =>
        {
            if (a.RequiresGrad) Graph.Accumulate(a, Ops.SumTo(dy, a.Shape));
            if (b.RequiresGrad)
            {
                using var g = Ops.SumTo(dy, b.Shape);
                Graph.Accumulate(b, Ops.Neg(g));
            }
        });
    }

    /// <summary>a · b elementwise with broadcasting.</summary>
    public static Variable Mul(Variable a, Variable b)
    {
        var y = Ops.Mul(a.Data, b.Data);
        return Graph.Record("mul", y, [a, b], dy =>
        {
            if (a.RequiresGrad) { using var g = Ops.Mul(dy, b.Data); Graph.Accumulate(a, Ops.SumTo(g, a.Shape)); }
            if (b.RequiresGrad) { using var g = Ops.Mul(dy, a.Data); Graph.Accumulate(b, Ops.SumTo(g, b.Shape)); }
        });
    }

    /// <summary>a / b with broadcasting.</summary>
    public static Variable Div(Variable a, Variable b)
    {
        var y = Ops.Div(a.Data, b.Data);
        return Graph.Record("div", y, [a, b], dy =>
        {
            if (a.RequiresGrad) { using var g = Ops.Div(dy, b.Data); Graph.Accumulate(a, Ops.SumTo(g, a.Shape)); }
            if (b.RequiresGrad)
            {
                // d(a/b)/db = −y/b
                using var q = Ops.Div(y, b.Data);
                using var g = Ops.Mul(dy, q);
                using var s = Ops.SumTo(g, b.Shape);
                Graph.Accumulate(b, Ops.Neg(s));
            }
        });
    }

    /// <summary>Elementwise max with broadcasting; the gradient goes to a where a ≥ b, else to b.</summary>
    public static Variable Maximum(Variable a, Variable b)
    {
        var y = Ops.Maximum(a.Data, b.Data);
        return Graph.Record("maximum", y, [a, b], dy =>
        {
            // The gradient goes to whichever operand won (a on ties, as torch.maximum splits ties; we pick a).
            using var aWon = Ops.Zip<GreaterEqualOp>(a.Data, b.Data);
            if (a.RequiresGrad) { using var g = Ops.Mul(dy, aWon); Graph.Accumulate(a, Ops.SumTo(g, a.Shape)); }
            if (b.RequiresGrad)
            {
                using var bWon = Ops.Map(aWon, new AffineOp(-1f, 1f));
                using var g = Ops.Mul(dy, bWon);
                Graph.Accumulate(b, Ops.SumTo(g, b.Shape));
            }
        });
    }

    /// <summary>
    /// Dropout in training (p &gt; 0); identity otherwise. The mask is seeded, so runs repeat, and backward draws it again
    /// from the seed (<see cref="Ops.DropoutBackward"/>) rather than keeping it: a dropout keeps nothing of its own.
    /// </summary>
    public static Variable Dropout(Variable x, float p, ulong seed, bool training)
    {
        if (!training || p <= 0f) return Identity(x);
        var y = Ops.Dropout(x.Data, p, seed);
        return Graph.Record("dropout", y, [x], Reads.Nothing, dy =>
        {
            // The rule owns dy (its output's gradient): masked in place and handed on, no second tensor of its size.
            if (x.RequiresGrad) Graph.Pass(x, Ops.DropoutBackward(dy, p, seed, output: dy));
        });
    }

    /// <summary>
    /// Dropout(Relu(x)) as one node in training (p &gt; 0; the same values and gradients as the two, seeded alike), Relu
    /// otherwise. Backward reads both derivatives off the output (<see cref="Ops.ReluDropoutBackward"/>: 1/(1 − p) where
    /// y &gt; 0), so neither x nor a mask is kept.
    /// </summary>
    /// <param name="x">The input (fc1's output).</param>
    /// <param name="p">The dropout rate.</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="training">Whether dropout applies.</param>
    /// <param name="inputUnread">
    /// The caller's promise that nothing computes from x after this, and no backward rule reads it
    /// (<see cref="Variable.UnreadByBackward"/>): the result is written over x, whose value then holds it (the widest
    /// tensor of a feed-forward block, once instead of twice).
    /// </param>
    public static Variable ReluDropout(Variable x, float p, ulong seed, bool training, bool inputUnread = false)
    {
        if (!training || p <= 0f) return Relu(x);
        var y = inputUnread ? Ops.ReluDropout(x.Data, p, seed, output: x.Data).Reshape(x.Data.ShapeArray()) : Ops.ReluDropout(x.Data, p, seed);
        return Graph.Record("relu_dropout", y, [x], Reads.OnlyOutput, dy =>
        {
            if (x.RequiresGrad) Graph.Pass(x, Ops.ReluDropoutBackward(dy, y, p, output: dy));   // in place, as dropout's
        });
    }

    /// <summary>
    /// residual + Dropout(x) as one node in training (the same values and gradients as the two ops, seeded alike),
    /// residual + x otherwise: a residual connection's sum in one pass. Backward passes dy itself to the residual and
    /// gives x dy ⊙ mask, the mask drawn again from the seed. With <paramref name="valueUnread"/> (an activation
    /// checkpoint's recompute of a pre-LN layer's last sum, which nothing reads) the node's value is a view of the
    /// residual, not the sum: nothing is computed or allocated forward, and backward is the same.
    /// </summary>
    public static Variable DropoutAdd(Variable residual, Variable x, float p, ulong seed, bool training, bool valueUnread = false)
    {
        if (!training || p <= 0f) return Add(residual, x);
        if (valueUnread && !ShapeMath.SameShape(residual.Data.Shape, x.Data.Shape))
            throw new ArgumentException($"DropoutAdd: residual {residual.Data.ShapeString} and x {x.Data.ShapeString} differ.");
        var y = valueUnread ? residual.Data.Reshape(residual.Data.ShapeArray()) : Ops.DropoutAdd(residual.Data, x.Data, p, seed);
        return Graph.Record("dropout_add", y, [residual, x], Reads.Nothing, dy =>
        {
            var dx = x.RequiresGrad ? Ops.DropoutBackward(dy, p, seed) : null;
            if (residual.RequiresGrad) Graph.Pass(residual, dy);
            if (dx != null) Graph.Accumulate(x, dx);
        });
    }

    /// <summary>A new node with the same values (a view); lets a module return its input as a fresh value.</summary>
    public static Variable Identity(Variable x)
    {
        var y = x.Data.Reshape(x.Data.ShapeArray());
        return Graph.Record("identity", y, [x], Reads.Nothing, dy =>
        {
            if (x.RequiresGrad) Graph.Accumulate(x, dy.Reshape(dy.ShapeArray()));
        });
    }
}

/// <summary>1 where a ≥ b, else 0 (the routing mask of maximum's backward).</summary>
public readonly struct GreaterEqualOp : IBinaryOp
{
    /// <inheritdoc/>
    public float Apply(float a, float b) => a >= b ? 1f : 0f;
}
