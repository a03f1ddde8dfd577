using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Lora;

/// <summary>
/// DoRA (Liu et al. 2024, PEFT's <c>use_dora</c>): the adapted weight is split into a learned magnitude m [out] and a
/// direction, W' = m ⊙ (W + s·B·A) / ‖W + s·B·A‖ with the norm taken per output row. Like PEFT, W' is never formed:
/// y = x·Wᵀ + b + (g − 1)⊙(h·Wᵀ) + g⊙s·(h·Aᵀ·Bᵀ), g = m / ‖W + s·B·A‖ [out], h = dropout(x) while training with dropout
/// and x otherwise (then the first terms fold into g⊙(x·Wᵀ)). The bias is not scaled. The norm is a constant to
/// backward (paper §4.3, PEFT's <c>weight_norm.detach()</c>): gradients reach m, A, B and x, none flows through the norm.
/// Shapes: x [..., in], W [out, in], A [R, in], B [out, R], m and the norm [out].
/// </summary>
public static class DoraLinear
{
    /// <summary>‖W + s·B·A‖ per output row, [out]: a fresh tensor on W's device (what m starts at, and what forward divides by).</summary>
    public static Tensor WeightNorm(Tensor w, Tensor a, Tensor b, float s)
    {
        using var combined = w.Clone(MemoryCategory.Activation);
        Ops.MatmulInto(combined, b, a, false, false, s, 1f);
        return RowNorms(combined);
    }

    /// <summary>The L2 norm of each row of <paramref name="m"/> [rows, columns] → [rows].</summary>
    public static Tensor RowNorms(Tensor m)
    {
        using var squares = Ops.Mul(m, m);
        using var sums = Ops.SumLastAxis(squares);
        return Ops.Sqrt(sums);
    }

    /// <summary>
    /// The DoRA layer as one graph node (h null: no dropout, h is x). <paramref name="weightNorm"/> [out] is taken over:
    /// it is kept for backward and disposed with the node. Saved for backward besides it: h·Aᵀ [N, R], g [out] and
    /// diag(g)·B [out, R], so DoRA costs the same activations as LoRA. Backward (norm n constant, u = h·Wᵀ + s·h·Aᵀ·Bᵀ):
    /// dlow = s·dy·diag(g)·B; dx = dy·diag(g)·W + dlow·A (h = x) or dy·W, with dh = dy·diag(g − 1)·W + dlow·A;
    /// dB = s·diag(g)·dyᵀ·low; dA = dlowᵀ·h; dm = Σₙ(dy ⊙ u) / n, summed as rowsum(W ⊙ dyᵀ·h) + s·rowsum(B ⊙ dyᵀ·low)
    /// so that u [N, out] is never stored.
    /// </summary>
    public static Variable Forward(Variable x, Variable? h, Variable w, Variable? b, Variable a, Variable bMatrix, Variable magnitude, float s, Tensor weightNorm)
    {
        int inF = w.Dim(1), outF = w.Dim(0), rank = a.Dim(0);
        if (x.Dim(-1) != inF) throw new ArgumentException($"DoRA linear: input's last axis is {x.Dim(-1)} but the weight {w.Data.ShapeString} expects {inF}.");
        if (magnitude.Data.Rank != 1 || magnitude.Dim(0) != outF) throw new ArgumentException($"DoRA linear: lora_magnitude_vector has shape {magnitude.Data.ShapeString}, expected [{outF}].");
        if (weightNorm.Rank != 1 || weightNorm.Dim(0) != outF) throw new ArgumentException($"DoRA linear: the weight norm has shape {weightNorm.ShapeString}, expected [{outF}].");
        var outShape = x.Data.ShapeArray();
        outShape[^1] = outF;
        var y = Tensor.Empty(outShape, x.Device);
        var g = Ops.Div(magnitude.Data, weightNorm);                        // [out]
        Tensor low, bScaled;
        using (var gColumn = g.Reshape(outF, 1))
        using (var x2 = x.Data.Reshape(-1, inF))
        using (var h2 = (h ?? x).Data.Reshape(-1, inF))
        using (var y2 = y.Reshape(-1, outF))
        {
            float beta = b != null ? 1f : 0f;
            if (b != null) Ops.BroadcastRowsInto(y2, b.Data);
            low = Ops.Matmul(h2, a.Data, false, true);                      // [N, R]
            bScaled = Ops.Mul(bMatrix.Data, gColumn);                       // diag(g)·B [out, R]
            if (h == null)
            {
                // y = x·(diag(g)·W)ᵀ + s·low·(diag(g)·B)ᵀ in one GEMM.
                using var scaledW = Ops.Mul(w.Data, gColumn);
                Ops.MatmulSumInto(y2, x2, scaledW, true, low, bScaled, true, s, beta);
            }
            else
            {
                Ops.MatmulInto(y2, x2, w.Data, false, true, 1f, beta);
                using var gMinusOne = Ops.AddScalar(gColumn, -1f);
                using var shiftedW = Ops.Mul(w.Data, gMinusOne);            // diag(g − 1)·W
                Ops.MatmulSumInto(y2, h2, shiftedW, true, low, bScaled, true, s, 1f);   // + s·low·(diag(g)·B)ᵀ
            }
        }
        var inputs = new List<Variable> { x, w, a, bMatrix, magnitude };
        if (h != null) inputs.Add(h);
        if (b != null) inputs.Add(b);
        return Graph.Record("dora_linear", y, inputs.ToArray(), dy =>
        {
            using var dy2 = dy.Reshape(-1, outF);
            using var x2 = x.Data.Reshape(-1, inF);
            using var h2 = (h ?? x).Data.Reshape(-1, inF);
            using var gColumn = g.Reshape(outF, 1);
            using var dlow = Tensor.Empty([dy2.Dim(0), rank], dy.Device);
            Ops.MatmulInto(dlow, dy2, bScaled, false, false, s, 0f);       // [N, R]
            if (x.RequiresGrad)
            {
                var dx = Tensor.Empty(x.Shape, x.Device);
                using (var dx2 = dx.Reshape(-1, inF))
                {
                    if (h == null)
                    {
                        using var scaledW = Ops.Mul(w.Data, gColumn);
                        Ops.MatmulSumInto(dx2, dy2, scaledW, false, dlow, a.Data, false);
                    }
                    else Ops.MatmulInto(dx2, dy2, w.Data);
                }
                Graph.Accumulate(x, dx);
            }
            if (h != null && h.RequiresGrad)
            {
                var dh = Tensor.Empty(h.Shape, h.Device);
                using (var dh2 = dh.Reshape(-1, inF))
                using (var gMinusOne = Ops.AddScalar(gColumn, -1f))
                using (var shiftedW = Ops.Mul(w.Data, gMinusOne))
                {
                    Ops.MatmulSumInto(dh2, dy2, shiftedW, false, dlow, a.Data, false);
                }
                Graph.Accumulate(h, dh);
            }
            if (w.RequiresGrad)
            {
                // W appears as diag(g)·W (h = x) or W + diag(g − 1)·W against h; the norm stays constant here too.
                using var factor = h == null ? g.Reshape(outF) : Ops.AddScalar(g, -1f);
                using var dyScaled = Ops.Mul(dy2, factor);
                var dW = Ops.Matmul(dyScaled, h2, true, false);
                if (h != null) Ops.MatmulInto(dW, dy2, x2, true, false, 1f, 1f);
                Graph.Accumulate(w, dW);
            }
            if (b != null && b.RequiresGrad) Graph.Accumulate(b, Ops.SumTo(dy2, b.Shape));
            using var dyLow = bMatrix.RequiresGrad || magnitude.RequiresGrad ? Ops.Matmul(dy2, low, true, false) : null;   // [out, R]
            if (bMatrix.RequiresGrad)
            {
                var dB = Ops.Mul(dyLow!, gColumn);
                Ops.ScaleInPlace(dB, s);
                Graph.Accumulate(bMatrix, dB);
            }
            if (a.RequiresGrad) Graph.Accumulate(a, Ops.Matmul(dlow, h2, true, false));
            if (magnitude.RequiresGrad)
            {
                using var dyH = Ops.Matmul(dy2, h2, true, false);           // [out, in]
                using var wTerms = Ops.Mul(w.Data, dyH);
                var dg = Ops.SumLastAxis(wTerms);                           // Σₙ dy ⊙ (h·Wᵀ)
                using (var bTerms = Ops.Mul(bMatrix.Data, dyLow!))
                using (var lowPart = Ops.SumLastAxis(bTerms))
                    Ops.AddInPlace(dg, lowPart, s);                         // + s·Σₙ dy ⊙ (low·Bᵀ)
                using (dg) Graph.Accumulate(magnitude, Ops.Div(dg, weightNorm));
            }
        }, low, bScaled, g, weightNorm);
    }

    /// <summary>
    /// Folds the adapter into the base weight, W ← diag(m / n)·(W + s·B·A) with n = ‖W + s·B·A‖ (PEFT's merge), and
    /// returns n: <see cref="Unmerge"/> needs the norm of the weights before the merge, which the merged weight no longer
    /// gives. A row whose factor m / n is zero or not finite is refused before W is touched, since it could not be undone.
    /// </summary>
    public static Tensor Merge(Tensor w, Tensor a, Tensor b, Tensor magnitude, float s)
    {
        var norm = WeightNorm(w, a, b, s);
        using var g = Ops.Div(magnitude, norm);
        var factors = g.ToArray();
        for (int i = 0; i < factors.Length; i++)
            if (factors[i] == 0 || !float.IsFinite(factors[i]))
            {
                norm.Dispose();
                throw new InvalidOperationException($"DoRA merge: row {i} has magnitude/norm {factors[i]}; expected a finite non-zero factor, or the merge could not be undone.");
            }
        Ops.MatmulInto(w, b, a, false, false, s, 1f);
        using var gColumn = g.Reshape(g.Dim(0), 1);
        using var merged = Ops.Mul(w, gColumn);
        w.CopyFrom(merged);
        return norm;
    }

    /// <summary>Undoes <see cref="Merge"/>: W ← W / diag(m / n) − s·B·A, with the <paramref name="norm"/> Merge returned.</summary>
    public static void Unmerge(Tensor w, Tensor a, Tensor b, Tensor magnitude, float s, Tensor norm)
    {
        using var g = Ops.Div(magnitude, norm);
        using var gColumn = g.Reshape(g.Dim(0), 1);
        using var unscaled = Ops.Div(w, gColumn);
        w.CopyFrom(unscaled);
        Ops.MatmulInto(w, b, a, false, false, -s, 1f);
    }
}
