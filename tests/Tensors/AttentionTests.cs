using Nanolora.Autograd;
using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

/// <summary>
/// The CPU backend's fused multi-head attention (<see cref="Ops.ScaledDotProductAttention"/>): values, saved probabilities and all three
/// gradients against a double-precision reference written from the formulas, at shapes off every tile edge, with both
/// tiles; gradients by finite differences; and the op against the composed chain it replaces in the model.
/// </summary>
public class AttentionTests
{
    /// <summary>One case: B, T, S, H, D, and which masks and dropout it turns on.</summary>
    public sealed record Case(int B, int T, int S, int H, int D, bool Causal, bool KeyMask, float Dropout)
    {
        public int C => H * D;
        public override string ToString() => $"B{B} T{T} S{S} H{H} D{D}{(Causal ? " causal" : "")}{(KeyMask ? " mask" : "")}{(Dropout > 0 ? $" p{Dropout}" : "")}";
    }

    public static readonly Case[] Cases =
    [
        new(2, 5, 7, 3, 5, false, false, 0f),
        new(2, 7, 7, 2, 3, true, false, 0f),
        new(5, 9, 13, 2, 4, false, true, 0f),      // batch rows enough for a task each on two workers (fewer: a head each)
        new(2, 17, 33, 2, 19, true, true, 0.25f),   // rows past one tile of 8 (and of 6), keys past 32, D past 16
        new(1, 4, 9, 1, 40, false, false, 0.5f),    // one head wider than a tile of columns
        new(2, 3, 70, 3, 8, true, false, 0f),      // causal with more keys than queries (a decoding step's alignment)
        new(2, 13, 21, 2, 32, true, true, 0.1f),    // MiniLM's head width: whole column tiles, rows off the tiles
        new(2, 16, 16, 2, 64, false, false, 0f),    // the small preset's head width, every tile whole
    ];

    public static IEnumerable<object[]> CaseIndices() => Enumerable.Range(0, Cases.Length).Select(i => new object[] { i });

    /// <summary>[B, S] with key 1 of batch row 0 dropped, a graded bias on the rest, and batch row 1 (if any) dropping all keys but the last.</summary>
    static float[] KeyMask(int b, int s)
    {
        var m = new float[b * s];
        for (int j = 0; j < s; j++) m[j] = j == 1 ? -1e9f : -0.1f * j;
        for (int r = 1; r < b; r++)
            for (int j = 0; j < s; j++) m[r * s + j] = j == s - 1 ? 0.5f : -1e10f;
        return m;
    }

    /// <summary>The op's dropout mask over [B·H, T, S]: 0 or 1/(1 − p) per element, as Ops.Dropout draws it.</summary>
    static float[] DropMask(Case c, ulong seed)
    {
        int n = c.B * c.H * c.T * c.S;
        if (c.Dropout == 0) return Enumerable.Repeat(1f, n).ToArray();
        using var ones = Tensor.FromArray(Enumerable.Repeat(1f, n).ToArray(), [n]);
        using var mask = Ops.Dropout(ones, c.Dropout, seed);
        return mask.ToArray();
    }

    /// <summary>Forward and backward in double from the formulas, head by head.</summary>
    static (double[] O, double[] P, double[] Dq, double[] Dk, double[] Dv) Expected(Case c, float[] q, float[] k, float[] v, float[]? keyMask, float[] drop, float[] dOut)
    {
        int C = c.C;
        var (o, p) = (new double[c.B * c.T * C], new double[c.B * c.H * c.T * c.S]);
        var (dq, dk, dv) = (new double[q.Length], new double[k.Length], new double[v.Length]);
        double alpha = 1 / Math.Sqrt(c.D);
        for (int b = 0; b < c.B; b++)
            for (int h = 0; h < c.H; h++)
            {
                int bh = b * c.H + h;
                double Q(int i, int d) => q[(b * c.T + i) * C + h * c.D + d];
                double K(int j, int d) => k[(b * c.S + j) * C + h * c.D + d];
                double V(int j, int d) => v[(b * c.S + j) * C + h * c.D + d];
                double DO(int i, int d) => dOut[(b * c.T + i) * C + h * c.D + d];
                for (int i = 0; i < c.T; i++)
                {
                    var logit = new double[c.S];
                    for (int j = 0; j < c.S; j++)
                    {
                        double s = 0;
                        for (int d = 0; d < c.D; d++) s += Q(i, d) * K(j, d);
                        s *= alpha;
                        if (c.Causal && j > i + c.S - c.T) s = double.NegativeInfinity;
                        if (keyMask != null) s = keyMask[b * c.S + j] <= -1e9f ? double.NegativeInfinity : s + keyMask[b * c.S + j];
                        logit[j] = s;
                    }
                    double max = logit.Max();
                    var pr = new double[c.S];
                    if (!double.IsNegativeInfinity(max))
                    {
                        double sum = logit.Sum(x => Math.Exp(x - max));
                        for (int j = 0; j < c.S; j++) pr[j] = Math.Exp(logit[j] - max) / sum;
                    }
                    int row = (bh * c.T + i) * c.S;
                    for (int j = 0; j < c.S; j++) p[row + j] = pr[j];
                    for (int d = 0; d < c.D; d++)
                    {
                        double acc = 0;
                        for (int j = 0; j < c.S; j++) acc += pr[j] * drop[row + j] * V(j, d);
                        o[(b * c.T + i) * C + h * c.D + d] = acc;
                    }
                    // dP_j = (dO_i · V_j)·mask; dS_j = P_j (dP_j − Σ dP P); scores = alpha·Q·Kᵀ.
                    var dp = new double[c.S];
                    for (int j = 0; j < c.S; j++)
                    {
                        double acc = 0;
                        for (int d = 0; d < c.D; d++) acc += DO(i, d) * V(j, d);
                        dp[j] = acc * drop[row + j];
                    }
                    double dot = 0;
                    for (int j = 0; j < c.S; j++) dot += dp[j] * pr[j];
                    for (int j = 0; j < c.S; j++)
                    {
                        double ds = pr[j] * (dp[j] - dot) * alpha;
                        for (int d = 0; d < c.D; d++)
                        {
                            dq[(b * c.T + i) * C + h * c.D + d] += ds * K(j, d);
                            dk[(b * c.S + j) * C + h * c.D + d] += ds * Q(i, d);
                            dv[(b * c.S + j) * C + h * c.D + d] += pr[j] * drop[row + j] * DO(i, d);
                        }
                    }
                }
            }
        return (o, p, dq, dk, dv);
    }

    [Theory, MemberData(nameof(CaseIndices))]
    public void BothTilesMatchTheDoubleReference(int index)
    {
        var c = Cases[index];
        const ulong seed = 41;
        var (q, k, v, dOut) = (Random(c.B * c.T * c.C, 1, -2f, 2f), Random(c.B * c.S * c.C, 2, -2f, 2f), Random(c.B * c.S * c.C, 3), Random(c.B * c.T * c.C, 4));
        var mask = c.KeyMask ? KeyMask(c.B, c.S) : null;
        var expected = Expected(c, q, k, v, mask, DropMask(c, seed), dOut);
        using var qt = Tensor.FromArray(q, [c.B, c.T, c.C]);
        using var kt = Tensor.FromArray(k, [c.B, c.S, c.C]);
        using var vt = Tensor.FromArray(v, [c.B, c.S, c.C]);
        using var dt = Tensor.FromArray(dOut, [c.B, c.T, c.C]);
        using var mt = mask != null ? Tensor.FromArray(mask, [c.B, c.S]) : null;
        foreach (var tile in new[] { "avx512", "avx2" })
        {
            if (tile == "avx512" && !System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated) continue;
            using var probs = Tensor.Empty([c.B * c.H, c.T, c.S]);
            using var o = tile == "avx512"
                ? Ops.ScaledDotProductAttention<Avx512Tile>(qt, kt, vt, c.H, c.Causal, mt, c.Dropout, seed, probs)
                : Ops.ScaledDotProductAttention<Avx2Tile>(qt, kt, vt, c.H, c.Causal, mt, c.Dropout, seed, probs);
            Close(expected.O, o.ToArray(), 1e-5, 1e-4, $"{c} {tile}: output");
            Close(expected.P, probs.ToArray(), 1e-6, 1e-5, $"{c} {tile}: probabilities");
            var (dq, dk, dv) = tile == "avx512"
                ? Ops.ScaledDotProductAttentionBackward<Avx512Tile>(dt, qt, kt, vt, probs, null, c.H, c.Dropout, seed)
                : Ops.ScaledDotProductAttentionBackward<Avx2Tile>(dt, qt, kt, vt, probs, null, c.H, c.Dropout, seed);
            // Probabilities made again from q and k in backward (none kept): the same gradients, bit for bit.
            var remake = new Ops.Recompute(c.Causal, mt);
            var (rq, rk, rv) = tile == "avx512"
                ? Ops.ScaledDotProductAttentionBackward<Avx512Tile>(dt, qt, kt, vt, null, remake, c.H, c.Dropout, seed)
                : Ops.ScaledDotProductAttentionBackward<Avx2Tile>(dt, qt, kt, vt, null, remake, c.H, c.Dropout, seed);
            using (dq) using (dk) using (dv) using (rq) using (rk) using (rv)
            {
                Close(expected.Dq, dq!.ToArray(), 1e-5, 1e-4, $"{c} {tile}: dq");
                Close(expected.Dk, dk!.ToArray(), 1e-5, 1e-4, $"{c} {tile}: dk");
                Close(expected.Dv, dv!.ToArray(), 1e-5, 1e-4, $"{c} {tile}: dv");
                foreach (var (kept, remade, name) in new[] { (dq, rq, "dq"), (dk, rk, "dk"), (dv, rv, "dv") })
                    Assert.True(kept!.ToArray().SequenceEqual(remade!.ToArray()), $"{c} {tile}: {name} with the probabilities made again differs from {name} with them kept");
            }
        }
    }

    /// <summary>The node's three gradients by central differences of its float32 forward (causal, a key mask, dropout), with the probabilities kept or made again.</summary>
    [Theory]
    [InlineData(false)] [InlineData(true)]
    public void GradientsMatchFiniteDifferences(bool remake)
    {
        var mask = Tensor.FromArray(KeyMask(2, 6), [2, 6]);
        GradCheck.Check("cpu", x => F.ScaledDotProductAttention(x[0], x[1], x[2], 2, true, mask, 0.3f, 9UL, remakeProbabilities: remake), [[2, 4, 6], [2, 6, 6], [2, 6, 6]], eps: 1e-3);
    }

    /// <summary>
    /// A node that makes its probabilities again keeps none between forward and backward (the activations alive after the
    /// forward are lower by exactly the [B·H, T, S] probabilities less the key mask's copy) and gives the same gradients
    /// bit for bit; the key mask it read may be changed and freed before backward.
    /// </summary>
    [Fact]
    public void MadeAgainProbabilitiesAreNotKeptAndGiveTheSameGradients()
    {
        const int B = 2, T = 7, S = 9, H = 3, D = 5, C = H * D;
        (long Kept, float[][] Grads) Run(bool remake)
        {
            using var scope = new GraphScope();
            var mask = Tensor.FromArray(KeyMask(B, S), [B, S]);
            var inputs = new[] { Random(B * T * C, 21), Random(B * S * C, 22), Random(B * S * C, 23) }
                .Select((a, i) => new Variable(Tensor.FromArray(a, i == 0 ? [B, T, C] : [B, S, C]), requiresGrad: true)).ToArray();
            long before = Device.Cpu.Ledger.Live(MemoryCategory.Activation);
            var y = F.ScaledDotProductAttention(inputs[0], inputs[1], inputs[2], H, true, mask, 0.25f, 3UL, remakeProbabilities: remake);
            long kept = Device.Cpu.Ledger.Live(MemoryCategory.Activation) - before - y.Data.Length * sizeof(float);
            mask.Span.Fill(float.NaN);
            mask.Dispose();
            var w = Variable.Constant(Tensor.FromArray(Random(B * T * C, 24), [B, T, C]));
            F.Sum(F.Mul(y, w)).Backward();
            return (kept, inputs.Select(x => x.Grad!.ToArray()).ToArray());
        }
        var kept = Run(false);
        var remade = Run(true);
        Assert.Equal((long)B * H * T * S * sizeof(float), kept.Kept);
        Assert.Equal((long)B * S * sizeof(float), remade.Kept);
        for (int i = 0; i < 3; i++) Assert.True(kept.Grads[i].SequenceEqual(remade.Grads[i]), $"gradient of input {i}");
    }

    /// <summary>
    /// The op against the chain the model runs on the ILGPU backends (split heads, q·kᵀ/√D, softmax, dropout and product,
    /// merge): the same values and gradients to fp32 rounding, and the same dropout mask.
    /// </summary>
    [Theory]
    [InlineData(false, 0f)]
    [InlineData(true, 0.2f)]
    public void EqualsTheComposedChain(bool causal, float dropout)
    {
        const int B = 3, T = 11, S = 11, H = 4, D = 8, C = H * D;
        const ulong seed = 5;
        var mask = Tensor.FromArray(KeyMask(B, S), [B, S]);
        (float[] Y, float[][] Grads) Run(bool fused)
        {
            using var scope = new GraphScope();
            var inputs = new[] { Random(B * T * C, 11), Random(B * S * C, 12), Random(B * S * C, 13) }
                .Select((a, i) => new Variable(Tensor.FromArray(a, i == 0 ? [B, T, C] : [B, S, C]), requiresGrad: true)).ToArray();
            Variable Split(Variable x) => F.Permute(F.Reshape(x, B, x.Dim(1), H, D), 0, 2, 1, 3);
            Variable y;
            if (fused) y = F.ScaledDotProductAttention(inputs[0], inputs[1], inputs[2], H, causal, mask, dropout, seed);
            else
            {
                var scores = F.Matmul(F.Reshape(Split(inputs[0]), B * H, T, D), F.Reshape(Split(inputs[1]), B * H, S, D), false, true, 1f / MathF.Sqrt(D));
                var probs = F.Reshape(F.Softmax(F.Reshape(scores, B, H, T, S), causal, mask), B * H, T, S);
                var v = F.Reshape(Split(inputs[2]), B * H, S, D);
                var context = dropout > 0 ? F.DropoutMatmul(probs, v, dropout, seed) : F.Matmul(probs, v);
                y = F.Reshape(F.Permute(F.Reshape(context, B, H, T, D), 0, 2, 1, 3), B, T, C);
            }
            var w = Variable.Constant(Tensor.FromArray(Random(B * T * C, 14), [B, T, C]));
            F.Sum(F.Mul(y, w)).Backward();
            return (y.Data.ToArray(), inputs.Select(x => x.Grad!.ToArray()).ToArray());
        }
        var chain = Run(false);
        var op = Run(true);
        Close(chain.Y, op.Y, 1e-6, 1e-5, "output");
        for (int i = 0; i < 3; i++) Close(chain.Grads[i], op.Grads[i], 1e-6, 1e-5, $"gradient of input {i}");
        Assert.Contains(op.Grads[1], g => g != 0f);
    }

    /// <summary>
    /// Backward writing the gradients over q, k and v (attention's own projections) gives them bit for bit, through the
    /// node as through the op, and allocates no activation: the layer's backward peak is three [B, L, C] tensors lower.
    /// </summary>
    [Fact]
    public void GradientsWrittenOverTheInputsAreTheSame()
    {
        const int B = 2, T = 9, S = 9, H = 2, D = 32, C = H * D;
        var device = Device.Cpu;
        (float[][] Grads, long Peak) Run(bool inputsUnread)
        {
            using var scope = new GraphScope();
            using var x = new Variable(Tensor.FromArray(Random(B * T * C, 21), [B, T, C]), requiresGrad: true);
            var weights = Enumerable.Range(0, 3).Select(i => new Variable(Tensor.FromArray(Random(C * C, 22 + i), [C, C]), requiresGrad: true)).ToArray();
            var (q, k, v) = (F.Linear(x, weights[0], null), F.Linear(x, weights[1], null), F.Linear(x, weights[2], null));
            var y = F.ScaledDotProductAttention(q, k, v, H, true, null, 0.2f, 3UL, inputsUnread);
            var loss = F.Sum(F.Mul(y, Variable.Constant(Tensor.FromArray(Random(B * T * C, 25), [B, T, C]))));
            device.Ledger.ResetPeaks();
            long before = device.Ledger.Live(MemoryCategory.Activation);
            loss.Backward();
            long peak = device.Ledger.Peak(MemoryCategory.Activation) - before;
            var grads = new[] { x.Grad!.ToArray() }.Concat(weights.Select(w => w.Grad!.ToArray())).ToArray();
            foreach (var w in weights) w.Dispose();
            return (grads, peak);
        }
        var plain = Run(false);
        var inPlace = Run(true);
        for (int i = 0; i < plain.Grads.Length; i++) Assert.Equal(plain.Grads[i], inPlace.Grads[i]);
        Assert.True(inPlace.Peak <= plain.Peak - 3L * B * T * C * sizeof(float), $"backward's activation peak {inPlace.Peak} bytes in place vs {plain.Peak}");

        using var f = new Forwarded(B, T, S, H, C, false, 0.2f, 8, 31);
        var (dq, dk, dv) = Ops.ScaledDotProductAttentionBackward(f.DOut, f.Q, f.K, f.V, f.Probs, H, 0.2f, 8);
        var (dq2, dk2, dv2) = Ops.ScaledDotProductAttentionBackward(f.DOut, f.Q, f.K, f.V, f.Probs, H, 0.2f, 8, overwrite: AttentionInputs.Q | AttentionInputs.V);
        Assert.Equal(dq!.ToArray(), f.Q.ToArray());
        Assert.Equal(dk!.ToArray(), dk2!.ToArray());
        Assert.Equal(dv!.ToArray(), f.V.ToArray());
        foreach (var t in new[] { dq, dk, dv, dq2, dk2, dv2 }) t!.Dispose();
    }

    /// <summary>
    /// Each gradient alone, from only the inputs it needs (q for dk, k for dq, v for either, none for dv), equals the same
    /// gradient made with all three; a needed input missing is refused in one line.
    /// </summary>
    [Fact]
    public void EachGradientAloneReadsOnlyWhatItNeeds()
    {
        const int B = 2, T = 7, S = 11, H = 2, D = 32, C = H * D;
        using var f = new Forwarded(B, T, S, H, C, true, 0.3f, 6, 41);
        var (q, k, v, dOut, probs) = (f.Q, f.K, f.V, f.DOut, f.Probs);
        var all = Ops.ScaledDotProductAttentionBackward(dOut, q, k, v, probs, H, 0.3f, 6);
        var onlyQ = Ops.ScaledDotProductAttentionBackward(dOut, null, k, v, probs, H, 0.3f, 6, AttentionInputs.Q);
        var onlyK = Ops.ScaledDotProductAttentionBackward(dOut, q, null, v, probs, H, 0.3f, 6, AttentionInputs.K);
        var onlyV = Ops.ScaledDotProductAttentionBackward(dOut, null, null, null, probs, H, 0.3f, 6, AttentionInputs.V);
        Assert.Equal(all.Dq!.ToArray(), onlyQ.Dq!.ToArray());
        Assert.Equal(all.Dk!.ToArray(), onlyK.Dk!.ToArray());
        Assert.Equal(all.Dv!.ToArray(), onlyV.Dv!.ToArray());
        Assert.True(onlyQ.Dk == null && onlyQ.Dv == null && onlyK.Dq == null && onlyV.Dq == null);
        Assert.Contains("k is needed for the gradients asked for (Q), got null",
            Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttentionBackward(dOut, q, null, v, probs, H, 0.3f, 6, AttentionInputs.Q)).Message);
        foreach (var t in new[] { all.Dq, all.Dk, all.Dv, onlyQ.Dq, onlyK.Dk, onlyV.Dv }) t!.Dispose();
    }

    /// <summary>
    /// The node with keys and values from frozen weights over a constant (a first layer over frozen embeddings): backward
    /// does not read q, so the caller frees it after the forward, as the op chain's products let it; the gradients are
    /// those of the same graph keeping q, bit for bit.
    /// </summary>
    [Fact]
    public void QueriesAreFreedWhenNoGradientNeedsThem()
    {
        const int B = 2, T = 5, S = 6, H = 2, D = 16, C = H * D;
        (float[] Dx, float[] Dw, bool Freed) Run(bool release)
        {
            using var scope = new GraphScope();
            using var x = new Variable(Tensor.FromArray(Random(B * T * C, 51), [B, T, C]), requiresGrad: true);
            using var wq = new Variable(Tensor.FromArray(Random(C * C, 52), [C, C]), requiresGrad: true);
            var source = Variable.Constant(Tensor.FromArray(Random(B * S * C, 53), [B, S, C]));
            var (wk, wv) = (Variable.Constant(Tensor.FromArray(Random(C * C, 54), [C, C])), Variable.Constant(Tensor.FromArray(Random(C * C, 55), [C, C])));
            var q = F.Linear(x, wq, null);
            var (k, v) = (F.Linear(source, wk, null), F.Linear(source, wv, null));
            var y = F.ScaledDotProductAttention(q, k, v, H, false, null, 0f, 0, inputsUnread: release);
            bool freed = release && q.ReleaseIfUnread();
            F.Sum(F.Mul(y, Variable.Constant(Tensor.FromArray(Random(B * T * C, 56), [B, T, C])))).Backward();
            return (x.Grad!.ToArray(), wq.Grad!.ToArray(), freed);
        }
        var kept = Run(false);
        var freed = Run(true);
        Assert.True(freed.Freed, "q was still read by backward");
        Assert.Equal(kept.Dx, freed.Dx);
        Assert.Equal(kept.Dw, freed.Dw);
    }

    /// <summary>Random q [B, T, C], k and v [B, S, C] and dOut, and the probabilities of their forward (dropout and seed as given).</summary>
    sealed class Forwarded : IDisposable
    {
        public readonly Tensor Q, K, V, DOut, Probs;

        public Forwarded(int b, int t, int s, int heads, int c, bool causal, float dropout, ulong seed, int firstSeed)
        {
            Q = Tensor.FromArray(Random(b * t * c, firstSeed), [b, t, c]);
            K = Tensor.FromArray(Random(b * s * c, firstSeed + 1), [b, s, c]);
            V = Tensor.FromArray(Random(b * s * c, firstSeed + 2), [b, s, c]);
            DOut = Tensor.FromArray(Random(b * t * c, firstSeed + 3), [b, t, c]);
            Probs = Tensor.Empty([b * heads, t, s]);
            Ops.ScaledDotProductAttention(Q, K, V, heads, causal, null, dropout, seed, Probs).Dispose();
        }

        public void Dispose() { foreach (var x in new[] { Q, K, V, DOut, Probs }) x.Dispose(); }
    }

    [Fact]
    public void BadShapesAreRefusedInOneLine()
    {
        using var q = Tensor.Zeros([2, 3, 12]);
        using var k = Tensor.Zeros([2, 5, 12]);
        using var narrow = Tensor.Zeros([2, 5, 8]);
        using var mask = Tensor.Zeros([2, 4]);
        Assert.Contains("width 12 is not a positive multiple of 5 heads", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, k, k, 5, false, null, 0f, 0)).Message);
        Assert.Contains("k must be [2, S, 12]", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, narrow, narrow, 3, false, null, 0f, 0)).Message);
        Assert.Contains("keyMask must be [2, 5]", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, k, k, 3, false, mask, 0f, 0)).Message);
        Assert.Contains("heads must be positive, got 0", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, k, k, 0, false, null, 0f, 0)).Message);
        Assert.Contains("p must be in [0, 1], got -0.1", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, k, k, 3, false, null, -0.1f, 0)).Message);
        using var wide = Tensor.Zeros([2, 5, 12]);
        using var otherV = Tensor.Zeros([2, 4, 12]);
        Assert.Contains("v must be [2, 5, 12] like k, got [2, 4, 12]", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttention(q, wide, otherV, 3, false, null, 0f, 0)).Message);

        // The node checks before it allocates the probabilities: a rank-1 q is refused in the op's words.
        using var flat = new Variable(Tensor.Zeros([12]), requiresGrad: true);
        using var kv = new Variable(Tensor.Zeros([2, 5, 12]), requiresGrad: true);
        Assert.Contains("ScaledDotProductAttention: q, k and v must be [B, L, C]",
            Assert.Throws<ArgumentException>(() => F.ScaledDotProductAttention(flat, kv, kv, 3, false, null)).Message);

        // Backward checks every operand's device, dOut and the probabilities included (a host array is read from each).
        var other = Device.Get("ilgpu-cpu");
        using var dOut = Tensor.Zeros([2, 3, 12], other);
        using var probs = Tensor.Zeros([6, 3, 5], other);
        Assert.Contains("different devices", Assert.Throws<ArgumentException>(() => Ops.ScaledDotProductAttentionBackward(dOut, q, k, k, probs, 3, 0f, 0)).Message);
    }
}
