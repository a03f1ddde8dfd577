using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace Nanolora.Tensors;

/// <summary>
/// An MR×NR tile of C = alpha·A·B where A is read in place with any strides (element (r, k) at a[r·ars + k·acs]: a
/// row-major matrix, or the transpose of one) and each row of B holds NR contiguous floats at b + k·ldb. Attention's
/// per-head products are at most a few hundred wide and sit in L1/L2, so A is not packed; the caller pads A to whole
/// tiles of rows, B and C to whole tiles of columns.
/// </summary>
internal interface IStridedTile
{
    static abstract int MR { get; }
    static abstract int NR { get; }
    static abstract unsafe void Run(int kc, float* a, nint ars, nint acs, float* b, nint ldb, float* c, nint ldc, float alpha);
}

/// <summary>8×32 in 16 zmm accumulators: 2 loads of B and 8 broadcasts of A feed 16 FMAs per k step.</summary>
internal readonly struct Avx512Tile : IStridedTile
{
    public static int MR => 8;
    public static int NR => 32;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Run(int kc, float* a, nint ars, nint acs, float* b, nint ldb, float* c, nint ldc, float alpha)
    {
        float* a0 = a, a1 = a + ars, a2 = a + 2 * ars, a3 = a + 3 * ars, a4 = a + 4 * ars, a5 = a + 5 * ars, a6 = a + 6 * ars, a7 = a + 7 * ars;
        Vector512<float> x, c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default, c30 = default, c31 = default,
            c40 = default, c41 = default, c50 = default, c51 = default, c60 = default, c61 = default, c70 = default, c71 = default;
        nint o = 0;
        for (int p = 0; p < kc; p++, o += acs, b += ldb)
        {
            var b0 = Vector512.Load(b); var b1 = Vector512.Load(b + 16);
            x = Vector512.Create(a0[o]); c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a1[o]); c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a2[o]); c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[o]); c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
            x = Vector512.Create(a4[o]); c40 = Vector512.FusedMultiplyAdd(x, b0, c40); c41 = Vector512.FusedMultiplyAdd(x, b1, c41);
            x = Vector512.Create(a5[o]); c50 = Vector512.FusedMultiplyAdd(x, b0, c50); c51 = Vector512.FusedMultiplyAdd(x, b1, c51);
            x = Vector512.Create(a6[o]); c60 = Vector512.FusedMultiplyAdd(x, b0, c60); c61 = Vector512.FusedMultiplyAdd(x, b1, c61);
            x = Vector512.Create(a7[o]); c70 = Vector512.FusedMultiplyAdd(x, b0, c70); c71 = Vector512.FusedMultiplyAdd(x, b1, c71);
        }
        var s = Vector512.Create(alpha);
        (c00 * s).Store(c); (c01 * s).Store(c + 16); c += ldc;
        (c10 * s).Store(c); (c11 * s).Store(c + 16); c += ldc;
        (c20 * s).Store(c); (c21 * s).Store(c + 16); c += ldc;
        (c30 * s).Store(c); (c31 * s).Store(c + 16); c += ldc;
        (c40 * s).Store(c); (c41 * s).Store(c + 16); c += ldc;
        (c50 * s).Store(c); (c51 * s).Store(c + 16); c += ldc;
        (c60 * s).Store(c); (c61 * s).Store(c + 16); c += ldc;
        (c70 * s).Store(c); (c71 * s).Store(c + 16);
    }
}

/// <summary>6×16 in 12 ymm accumulators, for machines without AVX-512.</summary>
internal readonly struct Avx2Tile : IStridedTile
{
    public static int MR => 6;
    public static int NR => 16;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static unsafe void Run(int kc, float* a, nint ars, nint acs, float* b, nint ldb, float* c, nint ldc, float alpha)
    {
        float* a0 = a, a1 = a + ars, a2 = a + 2 * ars, a3 = a + 3 * ars, a4 = a + 4 * ars, a5 = a + 5 * ars;
        Vector256<float> x, c00 = default, c01 = default, c10 = default, c11 = default, c20 = default, c21 = default,
            c30 = default, c31 = default, c40 = default, c41 = default, c50 = default, c51 = default;
        nint o = 0;
        for (int p = 0; p < kc; p++, o += acs, b += ldb)
        {
            var b0 = Vector256.Load(b); var b1 = Vector256.Load(b + 8);
            x = Vector256.Create(a0[o]); c00 = Vector256.FusedMultiplyAdd(x, b0, c00); c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a1[o]); c10 = Vector256.FusedMultiplyAdd(x, b0, c10); c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a2[o]); c20 = Vector256.FusedMultiplyAdd(x, b0, c20); c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a3[o]); c30 = Vector256.FusedMultiplyAdd(x, b0, c30); c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
            x = Vector256.Create(a4[o]); c40 = Vector256.FusedMultiplyAdd(x, b0, c40); c41 = Vector256.FusedMultiplyAdd(x, b1, c41);
            x = Vector256.Create(a5[o]); c50 = Vector256.FusedMultiplyAdd(x, b0, c50); c51 = Vector256.FusedMultiplyAdd(x, b1, c51);
        }
        var s = Vector256.Create(alpha);
        (c00 * s).Store(c); (c01 * s).Store(c + 8); c += ldc;
        (c10 * s).Store(c); (c11 * s).Store(c + 8); c += ldc;
        (c20 * s).Store(c); (c21 * s).Store(c + 8); c += ldc;
        (c30 * s).Store(c); (c31 * s).Store(c + 8); c += ldc;
        (c40 * s).Store(c); (c41 * s).Store(c + 8); c += ldc;
        (c50 * s).Store(c); (c51 * s).Store(c + 8);
    }
}

/// <summary>
/// The CPU side of <see cref="Ops.ScaledDotProductAttention"/>: one head of one batch row per task, every product, the softmax and the
/// dropout of that head in buffers of the task's thread (a 96-key head: ~200 KB, in L2), reading q, k and v where the
/// projections wrote them ([B, L, H·D], head h in columns h·D …) and writing the merged [B, T, H·D] output, so the
/// heads are never split into [B, H, L, D] copies and merged back.
/// </summary>
internal static unsafe class AttentionCpu
{
    /// <summary>One call's shapes: B·H heads of T queries over S keys, D wide; rows of q, k, v and the output are C = H·D apart.</summary>
    internal readonly record struct Geometry(int Heads, int T, int S, int D, float Alpha, bool Causal, float[]? MaskAdd, DropoutParams? Dropout)
    {
        public int C => Heads * D;
        /// <summary>Keys a query row keeps: with causal, those up to its position (aligned to the end of the keys, as a decoding step with a cache sees them).</summary>
        public int Kept(int i) => Causal ? Math.Clamp(i + S - T + 1, 0, S) : S;
    }

    [ThreadStatic] static float[]? t_scratch;

    static float* Scratch(long floats)
    {
        if (t_scratch == null || t_scratch.LongLength < floats)
            t_scratch = GC.AllocateUninitializedArray<float>(checked((int)Math.Max(floats, 1 << 16)), pinned: true);
        return (float*)Unsafe.AsPointer(ref t_scratch[0]);
    }

    static int RoundUp(int n, int m) => (n + m - 1) / m * m;

    /// <summary>
    /// Width of the [queries, keys] buffers: whole tiles of columns (they are C or B) and of rows (read transposed as A,
    /// rows past S are read as the zeros written there).
    /// </summary>
    static int KeyWidth<TK>(int s) where TK : struct, IStridedTile
    {
        int tile = TK.MR * TK.NR / Gcd(TK.MR, TK.NR), w = RoundUp(Math.Max(s, 1), tile);
        // Rows a multiple of 512 bytes apart fall into a few L1 sets (as v's rows read in place did): one more tile apart.
        return w % 128 == 0 ? w + tile : w;
    }

    /// <summary>An upper bound of the floats a thread's buffers take for a head of t queries, s keys, d wide (backward's, the larger).</summary>
    internal static long ScratchFloats(int t, int s, int d)
    {
        long w = RoundUp(Math.Max(s, 1), 48) + 48, dw = RoundUp(Math.Max(d, 1), 32), rows = Math.Max(s, t);
        return d * w + 3L * t * w + 3 * rows * dw + 8 * (Math.Max(rows, d) + 32) + (long)t * s;
    }

    static int Gcd(int a, int b) => b == 0 ? a : Gcd(b, a % b);

    /// <summary>Floats <see cref="Product{TK}"/> needs in its tmp: a padded tile of A rows and a tile of C.</summary>
    static long TileScratch<TK>(int k) where TK : struct, IStridedTile => (long)TK.MR * Math.Max(k, 1) + TK.MR * TK.NR;

    /// <summary>
    /// C[m, n] = alpha·A·B with C rows ldc apart (a head's columns of a [B, L, H·D] tensor, or a buffer): whole tiles are
    /// written in place; the last rows (m mod MR) and columns (n mod NR) go through a tile in <paramref name="tmp"/> and
    /// only their m × n part is copied out, so C is never written outside it. Rows of A past m are read only when
    /// <paramref name="aPadded"/> (a buffer with zeros there); otherwise the last rows are gathered into tmp first. Each
    /// row of B must hold whole tiles of columns (n rounded up to NR).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Product<TK>(int m, int n, int k, float* a, nint ars, nint acs, bool aPadded, float* b, nint ldb, float* c, nint ldc, float alpha, float* tmp)
        where TK : struct, IStridedTile
    {
        int mr = TK.MR, nr = TK.NR, fullM = m - m % mr, fullN = n - n % nr;
        float* tileC = tmp + (nint)mr * k;
        for (int i = 0; i < m; i += mr)
        {
            int rows = Math.Min(mr, m - i);
            float* ai = a + i * ars;
            nint rs = ars, cs = acs;
            if (rows < mr && !aPadded)
            {
                // Gather the last rows (zeros below them) into a row-major tile of A.
                for (int r = 0; r < mr; r++)
                    for (int p = 0; p < k; p++) tmp[r * k + p] = r < rows ? ai[r * ars + p * acs] : 0f;
                ai = tmp; rs = k; cs = 1;
            }
            for (int j = 0; j < n; j += nr)
            {
                if (i < fullM && j < fullN) { TK.Run(k, ai, rs, cs, b + j, ldb, c + i * ldc + j, ldc, alpha); continue; }
                TK.Run(k, ai, rs, cs, b + j, ldb, tileC, nr, alpha);
                int cols = Math.Min(nr, n - j);
                for (int r = 0; r < rows; r++)
                    new ReadOnlySpan<float>(tileC + r * nr, cols).CopyTo(new Span<float>(c + (i + r) * ldc + j, cols));
            }
        }
    }

    /// <summary>
    /// A head's rows of a [B, L, H·D] tensor copied into <paramref name="buffer"/> as B operand rows ([rows, D rounded up
    /// to whole column tiles], zeros past D); returns the buffer's row stride. Read in place, rows 4·H·D bytes apart (1 KB
    /// at the small preset) fall into a few cache sets and evict each other from L1 between the product's row tiles:
    /// the product over values read in place ran ~3× slower than its FMA count allows.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static int Operand<TK>(float* head, nint stride, int rows, int d, float* buffer) where TK : struct, IStridedTile
    {
        int width = RoundUp(d, TK.NR);
        for (int r = 0; r < rows; r++) CopyRow(head + r * stride, buffer + (nint)r * width, d, width);
        return width;
    }

    /// <summary>dst[0..n) = src[0..n), zeros in dst[n..width): vector loads and stores (a memmove call per short row cost more than the row).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static void CopyRow(float* src, float* dst, int n, int width)
    {
        int i = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; i <= n - 16; i += 16) Vector512.Store(Vector512.Load(src + i), dst + i);
        else
            for (; i <= n - 8; i += 8) Vector256.Store(Vector256.Load(src + i), dst + i);
        for (; i < n; i++) dst[i] = src[i];
        for (; i < width; i++) dst[i] = 0f;
    }

    /// <summary>
    /// Dropout of n probabilities whose mask indices start at <paramref name="at"/>: dst = p ⊙ mask, and, when
    /// <paramref name="grad"/> is given, grad ⊙= mask in the same pass (backward: the dropped gradient back to P's).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Drop(float* p, float* dst, float* grad, int n, int at, in DropoutParams drop)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
            for (; j <= n - 16; j += 16)
            {
                var m = Ops.Mask16(drop, at + j);
                Vector512.Store(Vector512.Load(p + j) * m, dst + j);
                if (grad != null) Vector512.Store(Vector512.Load(grad + j) * m, grad + j);
            }
        else if (Vector256.IsHardwareAccelerated)
            for (; j <= n - 8; j += 8)
            {
                var m = Ops.Mask8(drop, at + j);
                Vector256.Store(Vector256.Load(p + j) * m, dst + j);
                if (grad != null) Vector256.Store(Vector256.Load(grad + j) * m, grad + j);
            }
        for (; j < n; j++)
        {
            float m = drop.MaskAt(at + j);
            dst[j] = p[j] * m;
            if (grad != null) grad[j] *= m;
        }
    }

    /// <summary>The scores' gradient from the probabilities' in one pass: ds = alpha·p ⊙ (dp − dot), dot = Σ dp ⊙ p.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void ScoreGradient(float* p, float* dp, float* ds, int n, float dot, float alpha)
    {
        int j = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var (vd, va) = (Vector512.Create(dot), Vector512.Create(alpha));
            for (; j <= n - 16; j += 16) Vector512.Store(va * (Vector512.Load(p + j) * (Vector512.Load(dp + j) - vd)), ds + j);
        }
        else
        {
            var (vd, va) = (Vector256.Create(dot), Vector256.Create(alpha));
            for (; j <= n - 8; j += 8) Vector256.Store(va * (Vector256.Load(p + j) * (Vector256.Load(dp + j) - vd)), ds + j);
        }
        for (; j < n; j++) ds[j] = alpha * (p[j] * (dp[j] - dot));
    }

    /// <summary>dst[c, r] = src[r, c] for r &lt; rows, c &lt; cols, dst rows <paramref name="width"/> apart and zero for rows ≤ r &lt; width.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Transpose(float* src, nint srcStride, int rows, int cols, float* dst, int width)
    {
        int done = 0;
        if (Avx.IsSupported)
            for (int r0 = 0; r0 < width; r0 += 8)
                done = PackTranspose.Panel8(src + r0 * srcStride, srcStride, Math.Clamp(rows - r0, 0, 8), cols, 8, width, dst + r0);
        for (int c = done; c < cols; c++)
            for (int r = 0; r < width; r++) dst[(nint)c * width + r] = r < rows ? src[r * srcStride + c] : 0f;
    }

    /// <summary>Forward of head bh: o = dropout(softmax(alpha·q·kᵀ + masks))·v; the probabilities (before dropout) to <paramref name="probs"/> when given.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Forward<TK>(in Geometry g, int bh, float* q, float* k, float* v, float* o, float* probs) where TK : struct, IStridedTile
    {
        int b = bh / g.Heads, h = bh % g.Heads, T = g.T, S = g.S, D = g.D, C = g.C;
        int w = KeyWidth<TK>(S), dw = RoundUp(D, TK.NR);
        float* kt = Scratch((long)D * w + (long)T * w + (long)S * dw + TileScratch<TK>(Math.Max(S, D)));
        float* sc = kt + (nint)D * w, vp = sc + (nint)T * w, tmp = vp + (nint)S * dw;
        nint head = h * D;
        float* qHead = q + (nint)b * T * C + head, oHead = o + (nint)b * T * C + head;
        Transpose(k + (nint)b * S * C + head, C, S, D, kt, w);
        int vStride = Operand<TK>(v + (nint)b * S * C + head, C, S, D, vp);
        Product<TK>(T, S, D, qHead, C, 1, false, kt, w, sc, w, g.Alpha, tmp);
        // The probabilities go straight to probs when kept; the product reads them there unless dropout changes them.
        float* headProbs = probs != null ? probs + (nint)bh * T * S : null;
        bool fromProbs = headProbs != null && g.Dropout == null;
        for (int i = 0; i < T; i++)
        {
            var scores = new Span<float>(sc + (nint)i * w, S);
            var p = headProbs != null ? new Span<float>(headProbs + (nint)i * S, S) : scores;
            int kept = ProbabilityRow(g, b, i, scores, p);
            if (g.Dropout is { } drop)
            {
                fixed (float* pi = p) Drop(pi, sc + (nint)i * w, null, kept, (int)(((long)bh * T + i) * S), drop);
                scores[kept..].Clear();
            }
        }
        if (fromProbs) Product<TK>(T, D, S, headProbs, S, 1, false, vp, vStride, oHead, C, 1f, tmp);
        else Product<TK>(T, D, S, sc, w, 1, false, vp, vStride, oHead, C, 1f, tmp);
    }

    /// <summary>
    /// Query row i of batch row b: its key mask added to the scores, the softmax over the keys it keeps into p (which may be
    /// the scores themselves), zeros past them; returns how many it keeps. The forward and the probabilities made again in
    /// backward both go through here, so the two are the same bit for bit.
    /// </summary>
    static int ProbabilityRow(in Geometry g, int b, int i, Span<float> scores, Span<float> p)
    {
        int S = g.S, kept = g.Kept(i);
        if (g.MaskAdd != null) TensorPrimitives.Add(scores[..kept], g.MaskAdd.AsSpan(b * S, kept), scores[..kept]);
        Ops.SoftmaxRowInto(scores[..kept], p[..kept]);
        p[kept..].Clear();
        return kept;
    }

    /// <summary>
    /// Head bh's probabilities (before dropout) into <paramref name="probs"/> [T, S] from q and k, by the same products,
    /// masks and softmax as <see cref="Forward{TK}"/>, so they equal the ones it would have kept bit for bit;
    /// <paramref name="kt"/> (D × w) and <paramref name="sc"/> (T × w) are scratch.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static void Probabilities<TK>(in Geometry g, int bh, float* q, float* k, float* probs, float* kt, float* sc, float* tmp) where TK : struct, IStridedTile
    {
        int b = bh / g.Heads, h = bh % g.Heads, T = g.T, S = g.S, D = g.D, C = g.C, w = KeyWidth<TK>(S);
        nint head = h * D;
        Transpose(k + (nint)b * S * C + head, C, S, D, kt, w);
        Product<TK>(T, S, D, q + (nint)b * T * C + head, C, 1, false, kt, w, sc, w, g.Alpha, tmp);
        for (int i = 0; i < T; i++) ProbabilityRow(g, b, i, new Span<float>(sc + (nint)i * w, S), new Span<float>(probs + (nint)i * S, S));
    }

    /// <summary>
    /// Backward of head bh from the saved probabilities P (or, when <paramref name="probs"/> is null, P made again from q
    /// and k first, <see cref="Probabilities{TK}"/>): with Pd = dropout(P), dV = Pdᵀ·dO, dP = dropout'(dO·Vᵀ),
    /// dS = alpha·P ⊙ (dP − rowsum(dP ⊙ P)), dQ = dS·K, dK = dSᵀ·Q; a null dq, dk or dv is not made, and what only it
    /// needs is not read (q for dK, k for dQ, v and dS for either). Each head writes only its own columns of the outputs.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal static void Backward<TK>(in Geometry g, int bh, float* dOut, float* q, float* k, float* v, float* probs, float* dq, float* dk, float* dv)
        where TK : struct, IStridedTile
    {
        int b = bh / g.Heads, h = bh % g.Heads, T = g.T, S = g.S, D = g.D, C = g.C;
        int w = KeyWidth<TK>(S), dw = RoundUp(D, TK.NR);
        int rows = Math.Max(S, T);
        bool scores = dq != null || dk != null;
        bool remake = probs == null;
        float* vt = Scratch((long)D * w + 3L * T * w + 3L * rows * dw + TileScratch<TK>(Math.Max(rows, D)) + (remake ? (long)T * S : 0));
        float* dpd = vt + (nint)D * w, ds = dpd + (nint)T * w, pd = ds + (nint)T * w;
        float* kp = pd + (nint)T * w, qp = kp + (nint)rows * dw, dop = qp + (nint)rows * dw, tmp = dop + (nint)rows * dw;
        nint head = h * D, queries = (nint)b * T * C + head, keys = (nint)b * S * C + head;
        float* dOHead = dOut + queries, headProbs = remake ? tmp + TileScratch<TK>(Math.Max(rows, D)) : probs + (nint)bh * T * S;
        // Before anything below: its kᵀ and scores go where vᵀ and dS are made next.
        if (remake) Probabilities<TK>(g, bh, q, k, headProbs, vt, ds, tmp);
        // Every input is copied before any output is written: an output may lie over its input (overwriteInputs).
        if (scores) Transpose(v + keys, C, S, D, vt, w);
        int kStride = dq != null ? Operand<TK>(k + keys, C, S, D, kp) : 0;
        int qStride = dk != null ? Operand<TK>(q + queries, C, T, D, qp) : 0;
        int doStride = dv != null ? Operand<TK>(dOHead, C, T, D, dop) : 0;
        if (scores) Product<TK>(T, S, D, dOHead, C, 1, false, vt, w, dpd, w, 1f, tmp);
        if (scores || (dv != null && g.Dropout != null))
            for (int i = 0; i < T; i++)
            {
                if (g.Dropout is { } drop)
                {
                    Drop(headProbs + (nint)i * S, pd + (nint)i * w, scores ? dpd + (nint)i * w : null, S, (int)(((long)bh * T + i) * S), drop);
                    new Span<float>(pd + (nint)i * w + S, w - S).Clear();
                }
                if (!scores) continue;
                var p = new ReadOnlySpan<float>(headProbs + (nint)i * S, S);
                ScoreGradient(headProbs + (nint)i * S, dpd + (nint)i * w, ds + (nint)i * w, S, TensorPrimitives.Dot(new ReadOnlySpan<float>(dpd + (nint)i * w, S), p), g.Alpha);
                new Span<float>(ds + (nint)i * w + S, w - S).Clear();
            }
        if (dq != null) Product<TK>(T, D, S, ds, w, 1, false, kp, kStride, dq + queries, C, 1f, tmp);
        // Pdᵀ and dSᵀ are read in place as A (rows 1 apart, columns w); the buffers' rows are zero past S. Without dropout
        // Pd is P itself, read from probs (rows S apart there, so the last rows are gathered).
        if (dv != null)
        {
            if (g.Dropout != null) Product<TK>(S, D, T, pd, 1, w, true, dop, doStride, dv + keys, C, 1f, tmp);
            else Product<TK>(S, D, T, headProbs, 1, S, false, dop, doStride, dv + keys, C, 1f, tmp);
        }
        if (dk != null) Product<TK>(S, D, T, ds, 1, w, true, qp, qStride, dk + keys, C, 1f, tmp);
    }
}
