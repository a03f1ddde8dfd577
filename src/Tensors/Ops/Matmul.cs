namespace Nanolora.Tensors;

public static partial class Ops
{
    /// <summary>
    /// C = op(A)·op(B). <paramref name="a"/>: [..., M, K] (or [..., K, M] when <paramref name="transposeA"/>),
    /// <paramref name="b"/>: [..., K, N] (or [..., N, K] when <paramref name="transposeB"/>). Batch dimensions
    /// are equal, or one operand is rank 2 and shared across the other's batch. Returns [..., M, N].
    /// </summary>
    public static Tensor Matmul(Tensor a, Tensor b, bool transposeA = false, bool transposeB = false, float alpha = 1f)
    {
        var device = MatmulDevice("Matmul", a, b);
        var shape = PlanMatmul("Matmul", a, b, transposeA, transposeB, out var outShape);
        var c = Tensor.Empty(outShape, device);
        RunMatmul(device, shape, a, b, c, alpha, 0f);
        return c;
    }

    /// <summary>
    /// c = alpha·op(A)·op(B) + beta·c, in place, with <see cref="Matmul"/>'s shape rules; <paramref name="c"/>
    /// must already have the output shape [..., M, N] and must not share storage with a or b.
    /// With beta = 0, c's previous contents are ignored (NaN included).
    /// </summary>
    public static void MatmulInto(Tensor c, Tensor a, Tensor b, bool transposeA = false, bool transposeB = false, float alpha = 1f, float beta = 0f)
    {
        var device = MatmulDevice("MatmulInto", a, b, c);
        var shape = PlanMatmul("MatmulInto", a, b, transposeA, transposeB, out var outShape);
        if (!c.Shape.SequenceEqual(outShape))
            throw new ArgumentException($"MatmulInto: c has shape {c.ShapeString} but a {a.ShapeString} · b {b.ShapeString} gives {ShapeMath.Format(outShape)}.");
        if (ReferenceEquals(c.Storage, a.Storage) || ReferenceEquals(c.Storage, b.Storage))
            throw new ArgumentException($"MatmulInto: c {c.ShapeString} shares storage with an input; write to a separate tensor.");
        RunMatmul(device, shape, a, b, c, alpha, beta);
    }

    /// <summary>
    /// c = a1·op(b1) + scale2·a2·op(b2) + beta·c: a weight's product and a second one summed into one output, as a layer
    /// that adds a low-rank term does (LoRA: y = x·Wᵀ + s·low·Bᵀ, dx = dy·W + dlow·A). a1 [M, K1] and a2 [M, K2] are
    /// row-major, b1 may be bfloat16 (a frozen weight), b2 is float32. On the CPU both run in one packed GEMM (the K2
    /// steps follow K1 in each packed panel), so c is read and written once, not twice; elsewhere as two products.
    /// </summary>
    public static void MatmulSumInto(Tensor c, Tensor a1, Tensor b1, bool transposeB1, Tensor a2, Tensor b2, bool transposeB2, float scale2 = 1f, float beta = 0f)
    {
        var device = MatmulDevice("MatmulSumInto", a1, b1, a2, b2, c);
        foreach (var t in new[] { c, a1, b1, a2, b2 })
            if (t.Rank != 2) throw new ArgumentException($"MatmulSumInto: every operand must be rank 2 ([rows, cols]); got {t.ShapeString}.");
        var first = PlanMatmul("MatmulSumInto", a1, b1, false, transposeB1, out var outFirst);
        var second = PlanMatmul("MatmulSumInto", a2, b2, false, transposeB2, out var outSecond);
        if (!c.Shape.SequenceEqual(outFirst) || !c.Shape.SequenceEqual(outSecond))
            throw new ArgumentException($"MatmulSumInto: c has shape {c.ShapeString} but a1·b1 gives {ShapeMath.Format(outFirst)} and a2·b2 {ShapeMath.Format(outSecond)}.");
        foreach (var t in new[] { a1, b1, a2, b2 })
            if (ReferenceEquals(c.Storage, t.Storage))
                throw new ArgumentException($"MatmulSumInto: c {c.ShapeString} shares storage with an input; write to a separate tensor.");
        if (device is IlgpuDevice || b2.DType != DType.Float32 || a2.DType != DType.Float32)
        {
            RunMatmul(device, first, a1, b1, c, 1f, beta);
            RunMatmul(device, second, a2, b2, c, scale2, 1f);
            return;
        }
        if (a1.DType != DType.Float32 || c.DType != DType.Float32)
            throw new ArgumentException($"MatmulSumInto: only b1 may be bfloat16 (a frozen weight); a1 {a1.ShapeString} is {a1.DType}, c {c.ShapeString} is {c.DType}.");
        var term = new GemmTerm(second, MatmulCpu.Address(a2.HostArray), MatmulCpu.Address(b2.HostArray), scale2);
        if (b1.DType == DType.BFloat16) MatmulCpu.Run(first, a1.HostArray, b1.Host16, b1.Length, c.HostArray, 1f, beta, term);
        else MatmulCpu.Run(first, a1.HostArray, b1.HostArray, c.HostArray, 1f, beta, term);
        GC.KeepAlive(a2);
        GC.KeepAlive(b2);
    }

    /// <summary>B may be bfloat16 (a frozen weight): the CPU GEMM widens it while packing, a GPU widens it into a temporary first.</summary>
    static void RunMatmul(Device device, in GemmShape shape, Tensor a, Tensor b, Tensor c, float alpha, float beta)
    {
        if (a.DType != DType.Float32 || c.DType != DType.Float32)
            throw new ArgumentException($"Matmul: only the B operand may be bfloat16 (a frozen weight); a {a.ShapeString} is {a.DType}, c {c.ShapeString} is {c.DType}.");
        if (device is IlgpuDevice gpu)
        {
            if (b.DType == DType.Float32) MatmulGpu(gpu, shape, a, b, c, alpha, beta);
            else
            {
                using var wide = b.ToFloat32(MemoryCategory.Other);
                MatmulGpu(gpu, shape, a, wide, c, alpha, beta);
            }
        }
        else if (b.DType == DType.BFloat16) MatmulCpu.Run(shape, a.HostArray, b.Host16, b.Length, c.HostArray, alpha, beta);
        else MatmulCpu.Run(shape, a.HostArray, b.HostArray, c.HostArray, alpha, beta);
    }

    static Device MatmulDevice(string op, params Tensor[] tensors)
    {
        foreach (var t in tensors)
            if (t.IsDisposed) throw new ObjectDisposedException(nameof(Tensor), $"{op}: an input tensor was used after Dispose().");
        foreach (var t in tensors)
            if (t.Device != tensors[0].Device)
                throw new ArgumentException($"{op}: {tensors[0].ShapeString} is on {tensors[0].Device.Id} but {t.ShapeString} is on {t.Device.Id}; move them with To(device) first.");
        return tensors[0].Device;
    }

    /// <summary>Checks shapes and works out M, N, K, the batch and its strides, and the output shape.</summary>
    internal static GemmShape PlanMatmul(string op, Tensor a, Tensor b, bool transposeA, bool transposeB, out int[] outShape)
    {
        if (a.Rank < 2 || b.Rank < 2)
            throw new ArgumentException($"{op}: both operands need rank >= 2 ([..., rows, cols]), got a {a.ShapeString} and b {b.ShapeString}.");
        int m = transposeA ? a.Dim(-1) : a.Dim(-2), ka = transposeA ? a.Dim(-2) : a.Dim(-1);
        int kb = transposeB ? b.Dim(-1) : b.Dim(-2), n = transposeB ? b.Dim(-2) : b.Dim(-1);
        if (ka != kb)
            throw new ArgumentException($"{op}: inner dimensions differ: a {a.ShapeString}{(transposeA ? " (transposed)" : "")} has K = {ka} " +
                $"but b {b.ShapeString}{(transposeB ? " (transposed)" : "")} has K = {kb}.");
        var batchA = a.Shape[..^2];
        var batchB = b.Shape[..^2];
        ReadOnlySpan<int> batchDims;
        long strideA = (long)m * ka, strideB = (long)kb * n;
        if (batchA.SequenceEqual(batchB)) batchDims = batchA;
        else if (a.Rank == 2) { batchDims = batchB; strideA = 0; }
        else if (b.Rank == 2) { batchDims = batchA; strideB = 0; }
        else throw new ArgumentException($"{op}: batch dimensions differ: a {a.ShapeString} vs b {b.ShapeString} " +
            "(they must be equal, or one operand must be rank 2 and shared across the batch).");
        outShape = [.. batchDims, m, n];
        int batch = checked((int)ShapeMath.Numel(batchDims));
        // A batch of row-major A against one shared B is a single taller product.
        if (strideB == 0 && !transposeA && batch > 1) return new GemmShape(1, checked(batch * m), n, ka, false, transposeB, 0, 0);
        return new GemmShape(batch, m, n, ka, transposeA, transposeB, strideA, strideB);
    }
}
