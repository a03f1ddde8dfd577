using Nanolora.Tensors;

namespace Nanolora.DeviceRunner;

/// <summary>
/// One op check: <see cref="Run"/> builds its inputs from fixed seeds on the device it is given, runs the op and
/// returns every output as host arrays. <see cref="CheckMode"/> runs it on the cpu backend (itself held to
/// double-precision references by tests/Tensors) and on the device under test, and compares the two.
/// </summary>
public sealed record OpCheck(string Family, string Name, Func<Probe, IEnumerable<(string Label, float[] Values)>> Run,
    double Atol = 1e-5, double Rtol = 1e-4);

/// <summary>The inputs of one check run on one device; disposes what it made.</summary>
public sealed class Probe(Device device) : IDisposable
{
    readonly List<Tensor> _owned = new();
    public Device Device { get; } = device;

    public static float[] Values(int n, int seed, float lo = -1f, float hi = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * (float)rng.NextDouble();
        return a;
    }

    /// <summary>A seeded tensor of uniform values in [lo, hi): made on the host in parallel, the same on every device.</summary>
    public Tensor T(int seed, int[] shape, float lo = -1f, float hi = 1f) =>
        Own(TensorRandom.Uniform(shape, lo, hi, (ulong)seed, Device, MemoryCategory.Activation));

    public Tensor Own(Tensor t) { _owned.Add(t); return t; }

    /// <summary>Takes ownership of an op's result and reads it back.</summary>
    public float[] Read(Tensor t) => Own(t).ToArray();

    public void Dispose()
    {
        foreach (var t in _owned) t.Dispose();
        _owned.Clear();
    }
}

/// <summary>
/// Every op family of src/Tensors at odd shapes (1, 7, 33, 65, M&lt;K, several tiles, group-size edges), after
/// tests/Tensors. <c>small</c> keeps the shapes a CPU simulator runs in seconds (the xunit smoke run); the full set
/// adds wide rows, multi-tile GEMMs and multi-block reductions, which is what a GPU's group and grid logic must get right.
/// </summary>
public static class OpChecks
{
    public static IEnumerable<OpCheck> All(bool small) =>
        Matmul(small).Concat(Elementwise(small)).Concat(Reductions(small)).Concat(Rows(small))
            .Concat(Indexing(small)).Concat(Optimizers(small)).Concat(ModelChecks.All());

    static IEnumerable<OpCheck> Matmul(bool small)
    {
        var shapes = new List<(int M, int K, int N)> { (1, 1, 1), (7, 33, 5), (45, 65, 33) };
        if (!small) shapes.AddRange([(129, 257, 67), (64, 64, 64), (300, 17, 513), (5, 1024, 3)]);
        foreach (var (m, k, n) in shapes)
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                    yield return new("matmul", $"{m}x{k}x{n}{(ta ? " tA" : "")}{(tb ? " tB" : "")}", p =>
                    {
                        var a = p.T(1, ta ? [k, m] : [m, k]);
                        var b = p.T(2, tb ? [n, k] : [k, n]);
                        return [("c", p.Read(Ops.Matmul(a, b, ta, tb)))];
                    }, 1e-4, 1e-4);
        yield return new("matmul", "batched [3,7,33]x[3,33,5]", p => [("c", p.Read(Ops.Matmul(p.T(3, [3, 7, 33]), p.T(4, [3, 33, 5]))))], 1e-4, 1e-4);
        yield return new("matmul", "shared B [3,7,33]x[33,5] tB", p => [("c", p.Read(Ops.Matmul(p.T(5, [3, 7, 33]), p.T(6, [5, 33]), false, true)))], 1e-4, 1e-4);
        yield return new("matmul", "shared A [7,33]x[3,33,5]", p => [("c", p.Read(Ops.Matmul(p.T(7, [7, 33]), p.T(8, [3, 33, 5]))))], 1e-4, 1e-4);
        yield return new("matmul", "into alpha 0.5 beta 2", p =>
        {
            var c = p.T(9, [33, 7]);
            Ops.MatmulInto(c, p.T(10, [33, 45]), p.T(11, [45, 7]), alpha: 0.5f, beta: 2f);
            return [("c", c.ToArray())];
        }, 1e-4, 1e-4);
    }

    static readonly (string Name, Func<Tensor, Tensor, Tensor> Op)[] Binaries =
    [
        ("add", Ops.Add), ("sub", Ops.Sub), ("mul", Ops.Mul), ("div", Ops.Div), ("maximum", Ops.Maximum),
        ("greater-equal", (a, b) => Ops.Zip<GreaterEqualOp>(a, b)),
    ];

    static (string, Func<Tensor, Tensor>, Func<Tensor, Tensor, Tensor, Tensor>, float, float) U<TOp>(string name, float lo, float hi, TOp op = default)
        where TOp : struct, IUnaryOp => (name, x => Ops.Map(x, op), (x, y, dy) => Ops.MapBackward(x, y, dy, op), lo, hi);

    // Each op's input range is where it is defined and not flat (log, sqrt, rsqrt, pow need x > 0).
    static readonly (string Name, Func<Tensor, Tensor> Forward, Func<Tensor, Tensor, Tensor, Tensor> Backward, float Lo, float Hi)[] Unaries =
    [
        U<NegOp>("neg", -3, 3), U<ExpOp>("exp", -3, 3), U<LogOp>("log", 0.1f, 4), U<SqrtOp>("sqrt", 0.1f, 4), U<RsqrtOp>("rsqrt", 0.1f, 4),
        U<TanhOp>("tanh", -3, 3), U<SigmoidOp>("sigmoid", -6, 6), U<ReluOp>("relu", -3, 3), U<SiluOp>("silu", -6, 6),
        U<GeluTanhOp>("gelu-tanh", -4, 4), U<GeluErfOp>("gelu-erf", -4, 4), U("affine", -3, 3, new AffineOp(-1.5f, 0.25f)),
        U("pow 2.5", 0.1f, 3, new PowOp(2.5f)),
    ];

    static IEnumerable<OpCheck> Elementwise(bool small)
    {
        var pairs = new List<(int[] A, int[] B)> { ([7, 33], [7, 33]), ([7, 33], [33]), ([3, 1, 5], [1, 4, 5]), ([1], [45, 65]) };
        if (!small) pairs.Add(([1025, 65], [1025, 1]));
        foreach (var (name, op) in Binaries)
            foreach (var (sa, sb) in pairs)
                yield return new("binary", $"{name} {ShapeMath.Format(sa)} {ShapeMath.Format(sb)}", p =>
                    [("y", p.Read(op(p.T(12, sa, -2, 2), p.T(13, sb, 0.5f, 1.5f))))]);
        foreach (var (g, target) in new[] { (new[] { 3, 4, 5 }, new[] { 4, 5 }), ([3, 4, 5], [3, 1, 5]), ([7, 33], [1]), ([2, 3, 4, 5], [3, 1, 1]) })
            yield return new("binary", $"sum-to {ShapeMath.Format(g)} -> {ShapeMath.Format(target)}", p => [("y", p.Read(Ops.SumTo(p.T(14, g), target)))]);
        yield return new("binary", "add-in-place, scale-in-place, broadcast-rows", p =>
        {
            var t = p.T(15, [7, 33]);
            Ops.AddInPlace(t, p.T(16, [7, 33]), 0.5f);
            Ops.ScaleInPlace(t, -3f);
            var rows = p.Own(Tensor.Empty([7, 33], p.Device));
            Ops.BroadcastRowsInto(rows, p.T(17, [33]));
            return [("axpy", t.ToArray()), ("rows", rows.ToArray())];
        });
        int n = small ? 1000 : 1 << 20;
        foreach (var (name, forward, backward, lo, hi) in Unaries)
            yield return new("unary", $"{name} [{n}]", p =>
            {
                var x = p.T(18, [n], lo, hi);
                var y = p.Own(forward(x));
                return [("y", y.ToArray()), ("dx", p.Read(backward(x, y, p.T(19, [n]))))];
            }, 2e-6, 2e-5);
        yield return new("unary", "fill, copy, reshape view", p =>
        {
            var full = p.Own(Tensor.Full([7, 33], 2.5f, p.Device));
            var x = p.T(20, [7, 33]);
            var copy = p.Own(x.Clone());
            var view = p.Own(copy.Reshape(33, 7));
            return [("full", full.ToArray()), ("copy", view.ToArray())];
        }, 0, 0);
        foreach (var shape in small ? new[] { new[] { 7, 33 } } : [[7, 33], [1025, 65]])
            yield return new("dropout", $"p 0.3 {ShapeMath.Format(shape)}", p =>
            {
                var y = p.Own(Ops.Dropout(p.T(21, shape), 0.3f, 5, out var mask));
                return [("y", y.ToArray()), ("mask", p.Read(mask))];
            }, 0, 0);
    }

    static IEnumerable<OpCheck> Reductions(bool small)
    {
        List<int[]> shapes = [[1], [7, 33], [33, 1025]];
        if (!small) shapes.AddRange([[3, 100_003], [(1 << 20) + 3]]);
        foreach (var shape in shapes)
        {
            // Large sums carry float rounding on both sides: an absolute allowance that grows with the count.
            double atol = 1e-5 * Math.Sqrt(ShapeMath.Numel(shape));
            yield return new("reduce", $"sum, mean, max {ShapeMath.Format(shape)}", p =>
            {
                var x = p.T(22, shape);
                return [("sum", p.Read(Ops.Sum(x))), ("mean", p.Read(Ops.Mean(x))), ("max", p.Read(Ops.Max(x)))];
            }, atol);
            yield return new("reduce", $"last axis sum, mean, max, argmax {ShapeMath.Format(shape)}", p =>
            {
                var x = p.T(23, shape);
                return [("sum", p.Read(Ops.SumLastAxis(x))), ("mean", p.Read(Ops.MeanLastAxis(x))), ("max", p.Read(Ops.MaxLastAxis(x))),
                    ("argmax", Ops.ArgMaxLastAxis(x).Select(i => (float)i).ToArray())];
            }, atol);
        }
        yield return new("reduce", "sum of squares", p => [("ss", [(float)Ops.SumOfSquares([p.T(24, [7, 33]), p.T(25, [1025])])])]);
    }

    static IEnumerable<OpCheck> Rows(bool small)
    {
        List<int[]> softmaxShapes = [[2, 3, 7, 33], [1, 1, 1, 1], [2, 1, 5, 65]];
        if (!small) softmaxShapes.AddRange([[2, 4, 96, 97], [2, 1, 3, 4097]]);
        foreach (var shape in softmaxShapes)
            foreach (var (causal, masked) in new[] { (false, false), (true, false), (false, true), (true, true) })
                yield return new("softmax", $"{ShapeMath.Format(shape)}{(causal ? " causal" : "")}{(masked ? " key mask" : "")}", p =>
                {
                    int b = shape[0], s = shape[^1];
                    var mask = Probe.Values(b * s, 26, -2, 1);
                    for (int i = 0; i < mask.Length; i += 3) mask[i] = -1e9f; // dropped keys, besides additive values
                    var keyMask = masked ? p.Own(Tensor.FromArray(mask, [b, s], p.Device)) : null;
                    var y = p.Own(Ops.Softmax(p.T(27, shape, -4, 4), causal, keyMask));
                    return [("y", y.ToArray()), ("dx", p.Read(Ops.SoftmaxBackward(y, p.T(28, shape))))];
                }, 1e-6, 1e-4);
        foreach (var shape in small ? new[] { new[] { 7, 33 } } : [[7, 33], [3, 4097]])
            yield return new("softmax", $"log-softmax {ShapeMath.Format(shape)}", p =>
            {
                var y = p.Own(Ops.LogSoftmax(p.T(29, shape, -4, 4)));
                return [("y", y.ToArray()), ("dx", p.Read(Ops.LogSoftmaxBackward(y, p.T(30, shape))))];
            });
        var widths = small ? new[] { 1, 7, 33, 65 } : [1, 7, 33, 65, 384, 1025, 4097];
        foreach (int c in widths)
        {
            yield return new("layernorm", $"layernorm [7, {c}]", p =>
            {
                var (x, gamma, beta) = (p.T(31, [7, c], -2, 3), p.T(32, [c], 0.5f, 1.5f), p.T(33, [c], -0.5f, 0.5f));
                var y = p.Own(Ops.LayerNorm(x, gamma, beta, 1e-5f, out var mean, out var rstd));
                p.Own(mean); p.Own(rstd);
                var dx = p.Own(Ops.LayerNormBackward(p.T(34, [7, c]), x, gamma, mean, rstd, true, out var dGamma, out var dBeta));
                return [("y", y.ToArray()), ("mean", mean.ToArray()), ("rstd", rstd.ToArray()), ("dx", dx.ToArray()),
                    ("dgamma", p.Read(dGamma!)), ("dbeta", p.Read(dBeta!))];
            }, 1e-5, 1e-4);
            yield return new("layernorm", $"rmsnorm [7, {c}]", p =>
            {
                var (x, gamma) = (p.T(35, [7, c], -2, 3), p.T(36, [c], 0.5f, 1.5f));
                var y = p.Own(Ops.RmsNorm(x, gamma, 1e-6f, out var rstd));
                p.Own(rstd);
                var dx = p.Own(Ops.RmsNormBackward(p.T(37, [7, c]), x, gamma, rstd, true, out var dGamma));
                return [("y", y.ToArray()), ("rstd", rstd.ToArray()), ("dx", dx.ToArray()), ("dgamma", p.Read(dGamma!))];
            }, 1e-5, 1e-4);
        }
    }

    static IEnumerable<OpCheck> Indexing(bool small)
    {
        foreach (var (rows, vocab) in small ? new[] { (7, 33) } : [(7, 33), (13, 8000)])
            foreach (float smoothing in new[] { 0f, 0.1f })
                yield return new("cross-entropy", $"[{rows}, {vocab}] smoothing {smoothing}", p =>
                {
                    var targets = Enumerable.Range(0, rows).Select(i => i % 4 == 3 ? -100 : (i * 7919) % vocab).ToArray();
                    var loss = p.Own(Ops.CrossEntropy(p.T(38, [rows, vocab], -5, 5), targets, -100, smoothing, out var logProbs));
                    p.Own(logProbs);
                    return [("loss", loss.ToArray()), ("log-probs", logProbs.ToArray()),
                        ("dlogits", p.Read(Ops.CrossEntropyBackward(logProbs, targets, -100, smoothing, 0.5f)))];
                });
        yield return new("embedding", "[33, 7] ids [3, 5] with repeats", p =>
        {
            int[] ids = [0, 5, 5, 32, 1, 7, 7, 7, 2, 31, 0, 0, 16, 9, 5];
            var y = p.Own(Ops.Embedding(p.T(39, [33, 7]), ids, [3, 5]));
            return [("y", y.ToArray()), ("dweight", p.Read(Ops.EmbeddingBackward(p.T(40, [3, 5, 7]), ids, 33)))];
        });
        yield return new("layout", "permute, transpose, slice, write-slice, concat", p =>
        {
            var x = p.T(41, [2, 3, 4, 5]);
            var dest = p.Own(Tensor.Zeros([2, 3, 4, 5], p.Device));
            Ops.WriteSlice(dest, p.T(42, [2, 3, 2, 5]), 2, 1);
            return [("permute", p.Read(Ops.Permute(x, 0, 2, 1, 3))), ("permute2", p.Read(Ops.Permute(x, 3, 1, 0, 2))),
                ("transpose", p.Read(Ops.Transpose(x, 1, 3))), ("slice", p.Read(Ops.Slice(x, 2, 1, 2))), ("write-slice", dest.ToArray()),
                ("concat", p.Read(Ops.Concat([x, p.T(43, [2, 3, 1, 5])], 2)))];
        }, 0, 0);
    }

    static IEnumerable<OpCheck> Optimizers(bool small)
    {
        int n = small ? 1031 : (1 << 20) + 7;
        yield return new("optimizer", $"adamw 3 steps [{n}]", p =>
        {
            var (w, m, v) = (p.T(44, [n]), p.Own(Tensor.Zeros([n], p.Device)), p.Own(Tensor.Zeros([n], p.Device)));
            for (int step = 1; step <= 3; step++) Ops.AdamWStep(w, p.T(45 + step, [n]), m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step);
            return [("p", w.ToArray()), ("m", m.ToArray()), ("v", v.ToArray())];
        }, 1e-6, 1e-5);
        yield return new("optimizer", $"sgd nesterov 3 steps [{n}]", p =>
        {
            var (w, buf) = (p.T(50, [n]), p.Own(Tensor.Zeros([n], p.Device)));
            for (int step = 1; step <= 3; step++) Ops.SgdStep(w, p.T(50 + step, [n]), buf, 0.1f, 0.9f, 0f, 0.01f, true, step == 1);
            return [("p", w.ToArray()), ("buf", buf.ToArray())];
        }, 1e-6, 1e-5);
    }
}
