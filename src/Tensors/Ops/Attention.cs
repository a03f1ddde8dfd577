using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>Which of attention's inputs (q, k, v) a call concerns: gradients wanted, inputs written over.</summary>
[Flags]
public enum AttentionInputs
{
    /// <summary>None of them.</summary>
    None = 0,
    /// <summary>The queries.</summary>
    Q = 1,
    /// <summary>The keys.</summary>
    K = 2,
    /// <summary>The values.</summary>
    V = 4,
    /// <summary>All three.</summary>
    All = Q | K | V,
}

public static partial class Ops
{
    /// <summary>
    /// Scaled dot-product attention over heads in one pass on the CPU backend: for each batch row b and head h (columns
    /// h·D … h·D+D−1 of the projections), o = dropout(softmax(q·kᵀ/√D + masks))·v. q [B, T, C], k and v [B, S, C], C = H·D;
    /// returns o [B, T, C] with the heads merged, as the split / matmul / softmax / matmul / merge chain computes it (to
    /// fp32 rounding: the products sum in another order), without the [B, H, L, D] copies that chain makes. The ILGPU
    /// backends keep that chain (its kernels are tuned there); this op is the CPU's.
    /// </summary>
    /// <param name="q">Queries [B, T, C].</param>
    /// <param name="k">Keys [B, S, C].</param>
    /// <param name="v">Values [B, S, C].</param>
    /// <param name="heads">H; C must be a multiple of it.</param>
    /// <param name="causal">Query i keeps the keys up to i + S − T (aligned to the end of the keys), as <see cref="Softmax"/> does.</param>
    /// <param name="keyMask">[B, S], added to batch b's scores; values ≤ <see cref="KeyMaskDropThreshold"/> drop the key.</param>
    /// <param name="dropout">Dropout rate on the probabilities (0: none); the mask is <see cref="Dropout(Tensor, float, ulong)"/>'s
    /// over a [B·H, T, S] tensor with this seed, so the values equal those of the chain with dropout on its probabilities.</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="probs">When not null (training): receives the probabilities before dropout [B·H, T, S], which
    /// <see cref="ScaledDotProductAttentionBackward(Tensor, Tensor?, Tensor?, Tensor?, Tensor, int, float, ulong, AttentionInputs, AttentionInputs)"/> reads; null computes none beyond each head's own rows.</param>
    public static Tensor ScaledDotProductAttention(Tensor q, Tensor k, Tensor v, int heads, bool causal, Tensor? keyMask, float dropout, ulong seed, Tensor? probs = null) =>
        Vector512.IsHardwareAccelerated
            ? ScaledDotProductAttention<Avx512Tile>(q, k, v, heads, causal, keyMask, dropout, seed, probs)
            : ScaledDotProductAttention<Avx2Tile>(q, k, v, heads, causal, keyMask, dropout, seed, probs);

    /// <summary><see cref="ScaledDotProductAttention"/> with a chosen tile (tests run both on AVX-512 machines).</summary>
    internal static Tensor ScaledDotProductAttention<TK>(Tensor q, Tensor k, Tensor v, int heads, bool causal, Tensor? keyMask, float dropout, ulong seed, Tensor? probs)
        where TK : struct, IStridedTile
    {
        const string op = nameof(ScaledDotProductAttention);
        var g = Geometry(op, q, k, v, heads, causal, keyMask, dropout, seed);
        if (probs != null && (probs.Device != q.Device || !probs.Shape.SequenceEqual(new[] { q.Dim(0) * heads, g.T, g.S })))
            throw new ArgumentException($"{op}: probs must be [{q.Dim(0) * heads}, {g.T}, {g.S}] on {q.Device.Id}, got {probs.ShapeString} on {probs.Device.Id}.");
        var o = Tensor.Empty(q.Shape, q.Device);
        if (o.Length == 0) return o;
        if (g.S == 0) { o.Span.Clear(); return o; }
        var (qs, ks, vs, os, ps) = (q.HostArray, k.HostArray, v.HostArray, o.HostArray, probs?.HostArray);
        ForEachHead(q.Dim(0), heads, (h0, h1) =>
        {
            unsafe
            {
                fixed (float* pq = qs, pk = ks, pv = vs, po = os, pp = ps)
                    for (int bh = h0; bh < h1; bh++) AttentionCpu.Forward<TK>(g, bh, pq, pk, pv, po, pp);
            }
        });
        return o;
    }

    /// <summary>
    /// The gradients of <see cref="ScaledDotProductAttention"/>'s q, k and v from dOut [B, T, C] and the probabilities it
    /// saved, with the same heads, dropout and seed (the masks are drawn again, not kept). Only the wanted ones are made,
    /// and an input is read only where a wanted gradient needs it: q for dk, k for dq, v for either (dv needs the
    /// probabilities and dOut alone), so a caller may free the others after the forward (the first layer's q when its
    /// keys come from frozen weights over frozen embeddings, as the op chain's products let it).
    /// </summary>
    /// <param name="dOut">The output's gradient [B, T, C].</param>
    /// <param name="q">The forward's queries [B, T, C]; may be null unless dk is wanted.</param>
    /// <param name="k">The forward's keys [B, S, C]; may be null unless dq is wanted.</param>
    /// <param name="v">The forward's values [B, S, C]; may be null unless dq or dk is wanted.</param>
    /// <param name="probs">The probabilities the forward saved [B·H, T, S].</param>
    /// <param name="heads">H, as in the forward.</param>
    /// <param name="dropout">The forward's dropout rate.</param>
    /// <param name="seed">The forward's dropout seed.</param>
    /// <param name="wanted">The gradients to make (the others come back null).</param>
    /// <param name="overwrite">
    /// Inputs whose gradient is written over them (each head reads its columns of an input into its own buffers before it
    /// writes there), returned as views: no allocation for those. For a caller whose inputs nothing else reads
    /// (attention's own projections); their values are gradients afterwards. Each must be given and wanted.
    /// </param>
    public static (Tensor? Dq, Tensor? Dk, Tensor? Dv) ScaledDotProductAttentionBackward(Tensor dOut, Tensor? q, Tensor? k, Tensor? v, Tensor probs, int heads,
        float dropout, ulong seed, AttentionInputs wanted = AttentionInputs.All, AttentionInputs overwrite = AttentionInputs.None) =>
        Vector512.IsHardwareAccelerated
            ? ScaledDotProductAttentionBackward<Avx512Tile>(dOut, q, k, v, probs, null, heads, dropout, seed, wanted, overwrite)
            : ScaledDotProductAttentionBackward<Avx2Tile>(dOut, q, k, v, probs, null, heads, dropout, seed, wanted, overwrite);

    /// <summary>
    /// The same gradients when the forward kept no probabilities: each head's are made again from q and k, with the forward's
    /// <paramref name="causal"/> rule and <paramref name="keyMask"/>, by the very products and softmax the forward ran, so they
    /// and the gradients equal the kept ones bit for bit. Costs one more q·kᵀ and softmax per head; saves the [B·H, T, S]
    /// probabilities between forward and backward (an activation checkpoint's recompute holds them while the rest of its
    /// layer runs backward). q and k are read whichever gradients are wanted.
    /// </summary>
    public static (Tensor? Dq, Tensor? Dk, Tensor? Dv) ScaledDotProductAttentionBackward(Tensor dOut, Tensor q, Tensor k, Tensor? v, int heads, bool causal, Tensor? keyMask,
        float dropout, ulong seed, AttentionInputs wanted = AttentionInputs.All, AttentionInputs overwrite = AttentionInputs.None) =>
        Vector512.IsHardwareAccelerated
            ? ScaledDotProductAttentionBackward<Avx512Tile>(dOut, q, k, v, null, new Recompute(causal, keyMask), heads, dropout, seed, wanted, overwrite)
            : ScaledDotProductAttentionBackward<Avx2Tile>(dOut, q, k, v, null, new Recompute(causal, keyMask), heads, dropout, seed, wanted, overwrite);

    /// <summary>How a backward without kept probabilities makes them again: the forward's causal rule and key mask.</summary>
    internal sealed record Recompute(bool Causal, Tensor? KeyMask);

    /// <summary>Both public backward overloads with a chosen tile: from <paramref name="probs"/>, or, when null, made again as <paramref name="recompute"/> says.</summary>
    internal static (Tensor? Dq, Tensor? Dk, Tensor? Dv) ScaledDotProductAttentionBackward<TK>(Tensor dOut, Tensor? q, Tensor? k, Tensor? v, Tensor? probs, Recompute? recompute,
        int heads, float dropout, ulong seed, AttentionInputs wanted = AttentionInputs.All, AttentionInputs overwrite = AttentionInputs.None) where TK : struct, IStridedTile
    {
        const string op = nameof(ScaledDotProductAttentionBackward);
        bool wantQ = wanted.HasFlag(AttentionInputs.Q), wantK = wanted.HasFlag(AttentionInputs.K), wantV = wanted.HasFlag(AttentionInputs.V);
        if ((probs == null) == (recompute == null)) throw new ArgumentException($"{op}: takes the kept probabilities or how to make them again, one of the two.");
        CpuOnly(op, SameDevice(op, new[] { dOut, probs, q, k, v, recompute?.KeyMask }.OfType<Tensor>().ToArray()));
        if (dOut.Rank != 3 || (probs != null && probs.Rank != 3))
            throw new ArgumentException($"{op}: dOut must be [B, T, C] and probs [B·H, T, S], got {dOut.ShapeString} and {probs?.ShapeString}.");
        if (probs == null && (k == null || k.Rank != 3)) throw new ArgumentException($"{op}: k [B, S, C] is needed to make the probabilities again, got {k?.ShapeString ?? "null"}.");
        int b = dOut.Dim(0), t = dOut.Dim(1), c = dOut.Dim(2), s = probs?.Dim(2) ?? k!.Dim(1);
        var keyMask = recompute?.KeyMask;
        if (keyMask != null && (keyMask.Rank != 2 || keyMask.Dim(0) != b || keyMask.Dim(1) != s))
            throw new ArgumentException($"{op}: keyMask must be [{b}, {s}], got {keyMask.ShapeString}.");
        var g = Geometry(op, b, t, s, c, heads, recompute?.Causal ?? false, keyMask, dropout, seed);
        if (probs != null && (probs.Dim(0) != b * heads || probs.Dim(1) != t))
            throw new ArgumentException($"{op}: probs must be [{b * heads}, {t}, {s}], got {probs.ShapeString}.");
        void Operand(string name, Tensor? x, int length, bool needed)
        {
            if (x == null) { if (needed) throw new ArgumentException($"{op}: {name} is needed for the gradients asked for ({wanted}), got null."); return; }
            if (x.Rank != 3 || x.Dim(0) != b || x.Dim(1) != length || x.Dim(2) != c)
                throw new ArgumentException($"{op}: {name} must be [{b}, {length}, {c}], got {x.ShapeString}.");
        }
        Operand("q", q, t, wantK || probs == null);
        Operand("k", k, s, wantQ || probs == null);
        Operand("v", v, s, wantQ || wantK);
        Tensor? Gradient(AttentionInputs which, Tensor? x, int length)
        {
            if (!wanted.HasFlag(which)) return null;
            if (!overwrite.HasFlag(which)) return Tensor.Empty([b, length, c], dOut.Device);
            if (x == null || x.SharesStorage || new[] { q, k, v }.Count(y => ReferenceEquals(y, x)) > 1)
                throw new ArgumentException($"{op}: overwriting {which} needs it given, in storage of its own, not a view or one tensor passed twice.");
            return x.Reshape(x.ShapeArray());
        }
        var (dq, dk, dv) = (Gradient(AttentionInputs.Q, q, t), Gradient(AttentionInputs.K, k, s), Gradient(AttentionInputs.V, v, s));
        if (t == 0 || s == 0 || b == 0)
        {
            dq?.Span.Clear(); dk?.Span.Clear(); dv?.Span.Clear();
            return (dq, dk, dv);
        }
        var (dos, qs, ks, vs, ps, dqs, dks, dvs) = (dOut.HostArray, q?.HostArray, k?.HostArray, v?.HostArray, probs?.HostArray, dq?.HostArray, dk?.HostArray, dv?.HostArray);
        ForEachHead(b, heads, (h0, h1) =>
        {
            unsafe
            {
                fixed (float* pdo = dos, pq = qs, pk = ks, pv = vs, pp = ps, pdq = dqs, pdk = dks, pdv = dvs)
                    for (int bh = h0; bh < h1; bh++) AttentionCpu.Backward<TK>(g, bh, pdo, pq, pk, pv, pp, pdq, pdk, pdv);
            }
        });
        return (dq, dk, dv);
    }

    /// <summary>
    /// The shape of the probabilities <see cref="ScaledDotProductAttention"/> saves, [B·H, T, S], after the operands are
    /// checked (so a caller allocating them is refused in the op's words, before anything is made).
    /// </summary>
    internal static int[] ScaledDotProductAttentionProbsShape(Tensor q, Tensor k, Tensor v, int heads, Tensor? keyMask, float dropout)
    {
        Geometry(nameof(ScaledDotProductAttention), q, k, v, heads, false, keyMask, dropout, 0, prepareMask: false);
        return [q.Dim(0) * heads, q.Dim(1), k.Dim(1)];
    }

    /// <summary>
    /// Runs run(first, end) over the B·H heads on the GEMM's workers: one batch row's heads per task when there are
    /// batch rows enough for every worker twice (its heads read the same rows of q, k and v, which the first brings into
    /// the core's cache), single heads otherwise (a batch of one still uses every core).
    /// </summary>
    static void ForEachHead(int batch, int heads, Action<int, int> run)
    {
        if (batch >= 2 * Environment.ProcessorCount) GemmWorkers.For(batch, b => run(b * heads, (b + 1) * heads));
        else GemmWorkers.For(batch * heads, bh => run(bh, bh + 1));
    }

    /// <summary>
    /// Checks the operands (one line naming the op, the operand, the expected and the actual shape) and builds the geometry;
    /// <paramref name="prepareMask"/> false checks the key mask's shape only (a check before the op, which prepares it itself).
    /// </summary>
    static AttentionCpu.Geometry Geometry(string op, Tensor q, Tensor k, Tensor v, int heads, bool causal, Tensor? keyMask, float dropout, ulong seed,
        bool prepareMask = true)
    {
        var device = keyMask is null ? SameDevice(op, q, k, v) : SameDevice(op, q, k, v, keyMask);
        CpuOnly(op, device);
        if (q.Rank != 3 || k.Rank != 3 || v.Rank != 3)
            throw new ArgumentException($"{op}: q, k and v must be [B, L, C], got {q.ShapeString}, {k.ShapeString}, {v.ShapeString}.");
        int b = q.Dim(0), t = q.Dim(1), c = q.Dim(2), s = k.Dim(1);
        if (k.Dim(0) != b || k.Dim(2) != c) throw new ArgumentException($"{op}: k must be [{b}, S, {c}], got {k.ShapeString}.");
        if (!v.Shape.SequenceEqual(k.Shape)) throw new ArgumentException($"{op}: v must be {k.ShapeString} like k, got {v.ShapeString}.");
        if (keyMask != null && (keyMask.Rank != 2 || keyMask.Dim(0) != b || keyMask.Dim(1) != s))
            throw new ArgumentException($"{op}: keyMask must be [{b}, {s}], got {keyMask.ShapeString}.");
        return Geometry(op, b, t, s, c, heads, causal, prepareMask ? keyMask : null, dropout, seed);
    }

    static void CpuOnly(string op, Device device)
    {
        if (!device.IsCpu) throw new ArgumentException($"{op}: runs on the cpu backend only, got tensors on {device.Id}; compose it from Matmul and Softmax there.");
    }

    /// <summary>The geometry of B batch rows of T queries over S keys, C wide in H heads, on the CPU.</summary>
    static AttentionCpu.Geometry Geometry(string op, int b, int t, int s, int c, int heads, bool causal, Tensor? keyMask, float dropout, ulong seed)
    {
        if (heads <= 0) throw new ArgumentException($"{op}: heads must be positive, got {heads}.");
        if (c == 0 || c % heads != 0) throw new ArgumentException($"{op}: width {c} is not a positive multiple of {heads} heads.");
        long scores = (long)b * heads * t * s;
        if (AttentionCpu.ScratchFloats(t, s, c / heads) > int.MaxValue)
            throw new ArgumentException($"{op}: {t} queries × {s} keys need more working memory per thread than one array holds; split the sequence.");
        if (dropout != 0f && scores > int.MaxValue)
            throw new ArgumentException($"{op}: {scores} attention probabilities exceed the 2^31-1 a dropout mask can index.");
        float[]? maskAdd = null;
        if (keyMask != null)
        {
            // Dropped keys become −∞ once here, so each row's loop is a plain add (as Softmax does).
            maskAdd = keyMask.ToArray();
            for (int i = 0; i < maskAdd.Length; i++) if (maskAdd[i] <= KeyMaskDropThreshold) maskAdd[i] = float.NegativeInfinity;
        }
        // Params refuses a rate outside [0, 1] (NaN too), as Dropout does.
        DropoutParams? drop = dropout != 0f ? Params(op, (int)scores, dropout, seed, false) : null;
        int d = c / heads;
        return new AttentionCpu.Geometry(heads, t, s, d, 1f / MathF.Sqrt(d), causal, maskAdd, drop);
    }
}
