using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>A view with a new shape (no copy); the gradient is reshaped back.</summary>
    public static Variable Reshape(Variable x, params int[] shape)
    {
        var y = x.Data.Reshape(shape);
        var original = x.Data.ShapeArray();
        return Graph.Record("reshape", y, [x], Reads.Nothing, dy =>
        {
            // A view of dy, no copy: dy dies after this rule and the view keeps its storage.
            if (x.RequiresGrad) Graph.Accumulate(x, dy.Reshape(original));
        });
    }

    /// <summary>Reorders axes (a copy); backward applies the inverse permutation.</summary>
    public static Variable Permute(Variable x, params int[] axes)
    {
        var y = Ops.Permute(x.Data, axes);
        var inverse = new int[axes.Length];
        for (int i = 0; i < axes.Length; i++) inverse[axes[i]] = i;
        return Graph.Record("permute", y, [x], Reads.Nothing, dy =>
        {
            if (x.RequiresGrad) Graph.Accumulate(x, Ops.Permute(dy, inverse));
        });
    }

    /// <summary>Swaps two axes (negative counts from the end); a <see cref="Permute"/>.</summary>
    public static Variable Transpose(Variable x, int axis0, int axis1)
    {
        var axes = Enumerable.Range(0, x.Data.Rank).ToArray();
        int r = x.Data.Rank;
        axis0 = axis0 < 0 ? axis0 + r : axis0;
        axis1 = axis1 < 0 ? axis1 + r : axis1;
        (axes[axis0], axes[axis1]) = (axes[axis1], axes[axis0]);
        return Permute(x, axes);
    }

    /// <summary>x[..., start:start+length, ...] along one axis; backward writes dy into a zero tensor.</summary>
    public static Variable Slice(Variable x, int axis, int start, int length)
    {
        var y = Ops.Slice(x.Data, axis, start, length);
        return Graph.Record("slice", y, [x], Reads.Nothing, dy =>
        {
            if (!x.RequiresGrad) return;
            var g = Tensor.Zeros(x.Shape, x.Device);
            Ops.WriteSlice(g, dy, axis, start);
            Graph.Accumulate(x, g);
        });
    }

    /// <summary>Joins values along <paramref name="axis"/>; the other sizes must match. Backward slices dy back to each input.</summary>
    public static Variable Concat(IReadOnlyList<Variable> xs, int axis)
    {
        var y = Ops.Concat(xs.Select(v => v.Data).ToList(), axis);
        int ax = axis < 0 ? axis + xs[0].Data.Rank : axis;
        return Graph.Record("concat", y, xs.ToArray(), Reads.Nothing, dy =>
        {
            int offset = 0;
            foreach (var x in xs)
            {
                int len = x.Dim(ax);
                if (x.RequiresGrad) Graph.Accumulate(x, Ops.Slice(dy, ax, offset, len));
                offset += len;
            }
        });
    }

    // ---- reductions ----

    /// <summary>The sum of all elements, a scalar.</summary>
    public static Variable Sum(Variable x)
    {
        var y = Ops.Sum(x.Data);
        return Graph.Record("sum", y, [x], Reads.Nothing, dy =>
        {
            if (!x.RequiresGrad) return;
            var g = Tensor.Full(x.Shape, dy.Item(), x.Device);
            Graph.Accumulate(x, g);
        });
    }

    /// <summary>The mean of all elements, a scalar.</summary>
    public static Variable Mean(Variable x)
    {
        var y = Ops.Mean(x.Data);
        return Graph.Record("mean", y, [x], Reads.Nothing, dy =>
        {
            if (!x.RequiresGrad) return;
            Graph.Accumulate(x, Tensor.Full(x.Shape, dy.Item() / Math.Max(1, x.Data.Length), x.Device));
        });
    }

    /// <summary>Σ over the last axis: [..., N] → [...]; backward broadcasts dy over N.</summary>
    public static Variable SumLastAxis(Variable x)
    {
        var y = Ops.SumLastAxis(x.Data);
        return Graph.Record("sum_last", y, [x], Reads.Nothing, dy =>
        {
            if (!x.RequiresGrad) return;
            var shape = x.Data.ShapeArray();
            shape[^1] = 1;
            using var col = dy.Reshape(shape);
            using var zeros = Tensor.Zeros(x.Shape, x.Device);
            Graph.Accumulate(x, Ops.Add(zeros, col));
        });
    }
}
