namespace Nanolora.Tensors;

/// <summary>Shape arithmetic: sizes, formatting, reshape resolution and NumPy broadcasting.</summary>
public static class ShapeMath
{
    /// <summary>Number of elements of a shape: the product of its sizes (1 for a scalar's empty shape).</summary>
    public static long Numel(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape) n *= d;
        return n;
    }

    /// <summary>A shape as text, e.g. <c>[2, 3, 4]</c>.</summary>
    public static string Format(ReadOnlySpan<int> shape) => "[" + string.Join(", ", shape.ToArray()) + "]";

    internal static int[] Validate(ReadOnlySpan<int> shape)
    {
        foreach (var d in shape)
            if (d < 0) throw new ArgumentException($"Shape {Format(shape)} has a negative dimension.");
        return shape.ToArray();
    }

    internal static int[] ResolveReshape(int[] from, int[] to)
    {
        long total = Numel(from);
        int infer = -1;
        long known = 1;
        for (int i = 0; i < to.Length; i++)
        {
            if (to[i] == -1)
            {
                if (infer >= 0) throw new ArgumentException($"Reshape {Format(from)} to {Format(to)}: only one axis may be -1.");
                infer = i;
            }
            else if (to[i] < 0) throw new ArgumentException($"Reshape to {Format(to)}: negative size.");
            else known *= to[i];
        }
        var result = (int[])to.Clone();
        if (infer >= 0)
        {
            if (known == 0 || total % known != 0) throw new ArgumentException($"Cannot reshape {Format(from)} ({total} elements) to {Format(to)}.");
            result[infer] = (int)(total / known);
        }
        if (Numel(result) != total) throw new ArgumentException($"Cannot reshape {Format(from)} ({total} elements) to {Format(to)} ({Numel(result)} elements).");
        return result;
    }

    /// <summary>The NumPy broadcast of two shapes, or an error naming both.</summary>
    public static int[] Broadcast(ReadOnlySpan<int> a, ReadOnlySpan<int> b)
    {
        int rank = Math.Max(a.Length, b.Length);
        var result = new int[rank];
        for (int i = 0; i < rank; i++)
        {
            int da = i < rank - a.Length ? 1 : a[i - (rank - a.Length)];
            int db = i < rank - b.Length ? 1 : b[i - (rank - b.Length)];
            if (da != db && da != 1 && db != 1)
                throw new ArgumentException($"Shapes {Format(a)} and {Format(b)} cannot be broadcast together (axis {i}: {da} vs {db}).");
            result[i] = da == 1 ? db : da;
        }
        return result;
    }

    /// <summary>Row-major strides of <paramref name="shape"/> aligned to the axes of <paramref name="outShape"/>, 0 where broadcast.</summary>
    internal static long[] BroadcastStrides(ReadOnlySpan<int> shape, ReadOnlySpan<int> outShape)
    {
        int rank = outShape.Length, offset = rank - shape.Length;
        var strides = new long[rank];
        long stride = 1;
        for (int i = rank - 1; i >= 0; i--)
        {
            int d = i < offset ? 1 : shape[i - offset];
            strides[i] = d == 1 ? 0 : stride;
            stride *= d;
        }
        return strides;
    }

    /// <summary>True when both shapes have the same rank and sizes.</summary>
    public static bool SameShape(ReadOnlySpan<int> a, ReadOnlySpan<int> b) => a.SequenceEqual(b);
}
