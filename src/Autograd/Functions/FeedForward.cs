using Nanolora.Tensors;

namespace Nanolora.Autograd;

public static partial class F
{
    /// <summary>
    /// fc2(dropout(act(fc1(x)))) as one node that keeps only what its backward reads, the weights and biases frozen or
    /// trainable. After ReLU: where the hidden layer is positive, as bits (<see cref="Ops.PackPositive"/>), and the hidden
    /// values themselves only when fc2 trains (its weight gradient reads them); they are freed as soon as that is
    /// taken, before the hidden gradient is made. After GELU: fc1's output, from which a trainable fc2's backward
    /// rebuilds the hidden values (the dropout mask drawn again from the seed). The three nodes it replaces keep the
    /// hidden values (ReLU: 4 bytes per hidden element a layer, against 1 bit when fc2 is frozen) and GELU's output
    /// besides, and hold the hidden values and their gradient at once in backward. Values and gradients are bit for bit
    /// those of Linear, ReluDropout/Relu or Gelu(+Dropout), Linear: the same ops run both ways.
    /// </summary>
    /// <param name="x">The input [..., C].</param>
    /// <param name="w1">fc1's weight [H, C].</param>
    /// <param name="b1">fc1's bias [H], or null.</param>
    /// <param name="w2">fc2's weight [C, H].</param>
    /// <param name="b2">fc2's bias [C], or null.</param>
    /// <param name="gelu">GELU (exact erf form) rather than ReLU.</param>
    /// <param name="p">The activation dropout rate (used when <paramref name="dropout"/>).</param>
    /// <param name="seed">The dropout seed.</param>
    /// <param name="dropout">Whether dropout applies (training with p &gt; 0).</param>
    /// <param name="valueUnread">
    /// Nothing will read y (an activation checkpoint's recompute of a pre-LN layer): y is a view of x, not the block's value,
    /// and fc2's product is skipped.
    /// </param>
    /// <param name="rowBlocks">
    /// A frozen ReLU block makes its hidden layer (forward, when its value is read) and its hidden gradient (backward) in row
    /// blocks (<see cref="HiddenGradientRows"/>): less memory, smaller products. Default: inside an activation checkpoint's
    /// recompute (<see cref="ActivationCheckpoint.IsRecompute"/>), where its peak lies; a plain step peaks at the end of the
    /// forward, and the smaller products cost it time.
    /// </param>
    public static Variable FeedForward(Variable x, Variable w1, Variable? b1, Variable w2, Variable? b2, bool gelu, float p, ulong seed, bool dropout,
        bool valueUnread = false, bool? rowBlocks = null)
    {
        CheckFeedForward(x, w1, w2);
        int inFeatures = w1.Dim(1), hidden = w1.Dim(0);
        bool secondWeightTrains = w2.RequiresGrad;
        bool frozen = !Trains(w2, b2) && !Trains(w1, b1), blocks = rowBlocks ?? ActivationCheckpoint.IsRecompute;
        var hiddenShape = x.Data.ShapeArray();
        hiddenShape[^1] = hidden;
        var y = valueUnread ? UnreadValue(x) : Tensor.Empty(x.Data.ShapeArray(), x.Device);
        Tensor? pre = null, bits = null, kept = null, h = null;
        int rows = (int)(x.Data.Length / Math.Max(inFeatures, 1)), block = HiddenGradientRows(rows, inFeatures, hidden);
        if (blocks && frozen && !gelu && !valueUnread && Blocked(rows, block, inFeatures, hidden))
        {
            // A frozen ReLU block keeps only the bits: its hidden layer need never exist whole, forward as backward.
            try
            {
                using var x2 = x.Data.Reshape(-1, inFeatures);
                using var y2 = y.Reshape(-1, inFeatures);
                bits = ReluForwardInRowBlocks(x2, y2, w1, b1, w2, b2, p, seed, dropout, block);
            }
            catch
            {
                y.Dispose();
                throw;
            }
            return RecordFeedForward("frozen_feed_forward", y, x, w1, b1, w2, b2, bits, null, null, p, seed, dropout, true, [bits]);
        }
        try
        {
            pre = Tensor.Empty(hiddenShape, x.Device);
            using (var x2 = x.Data.Reshape(-1, inFeatures))
            using (var pre2 = pre.Reshape(-1, hidden)) LinearInto(pre2, x2, w1, b1);
            if (gelu)
            {
                h = GeluHidden(pre, p, seed, dropout);
                kept = pre;   // GELU's derivative reads its input
            }
            else
            {
                // In place: fc1's output is this node's own, read no more.
                h = dropout ? Ops.ReluDropout(pre, p, seed, output: pre) : Ops.Map(pre, new ReluOp());
                bits = Ops.PackPositive(h);
                if (!ReferenceEquals(h, pre)) pre.Dispose();
            }
            if (!valueUnread)
                using (var h2 = h.Reshape(-1, hidden))
                using (var y2 = y.Reshape(-1, inFeatures))
                    LinearInto(y2, h2, w2, b2);
        }
        catch
        {
            pre?.Dispose(); bits?.Dispose(); y.Dispose(); h?.Dispose();
            throw;
        }
        // A trainable fc2 weight's gradient reads the hidden values: ReLU's are kept, GELU's rebuilt from fc1's output (a
        // trainable bias alone reads none).
        var keptHidden = secondWeightTrains && !gelu ? h : null;
        if (keptHidden == null) h!.Dispose();
        // One of bits (ReLU) and kept (GELU) is set; the ReLU hidden values join the bits when fc2's weight trains.
        Tensor[] saved = gelu ? [kept!] : keptHidden != null ? [bits!, keptHidden] : [bits!];
        return RecordFeedForward(frozen ? (valueUnread ? "feed_forward_unread" : "frozen_feed_forward") : "feed_forward", y, x, w1, b1, w2, b2,
            bits, kept, keptHidden, p, seed, dropout, blocks, saved);
    }

    static bool Trains(Variable w, Variable? b) => w.RequiresGrad || b?.RequiresGrad == true;

    /// <summary>GELU of fc1's output, then its dropout: the hidden values, made the same way forward and in backward.</summary>
    static Tensor GeluHidden(Tensor pre, float p, ulong seed, bool dropout)
    {
        var g = Ops.Map(pre, new GeluErfOp());
        if (!dropout) return g;
        using (g) return Ops.Dropout(g, p, seed);
    }

    /// <summary>
    /// <see cref="FeedForward"/> of a frozen ReLU block without any values, for an activation checkpoint's recompute of a
    /// pre-LN layer (whose output nothing reads): y is a view of x and nothing is multiplied forward; <paramref name="bits"/> are
    /// the ones the checkpoint's forward kept (they stay the caller's), <paramref name="p"/> and <paramref name="dropout"/>
    /// as the forward had them.
    /// </summary>
    public static Variable FrozenReluFeedForwardUnread(Variable x, Variable w1, Variable w2, Tensor bits, float p, bool dropout)
    {
        CheckFeedForward(x, w1, w2);
        if (Trains(w1, null) || Trains(w2, null))
            throw new ArgumentException("Frozen feed-forward recompute: fc1's and fc2's weights must be frozen (their gradients would read the hidden values).");
        return RecordFeedForward("feed_forward_unread", UnreadValue(x), x, w1, null, w2, null, bits, null, null, p, 0, dropout, rowBlocks: true, []);
    }

    /// <summary>The value of a node nothing reads: a view of its input x (the block maps [..., C] to [..., C]), no allocation.</summary>
    static Tensor UnreadValue(Variable x) => x.Data.Reshape(x.Data.ShapeArray());

    static Tensor Replace(Tensor old, Tensor next)
    {
        old.Dispose();
        return next;
    }

    static void CheckFeedForward(Variable x, Variable w1, Variable w2)
    {
        if (x.Dim(-1) != w1.Dim(1) || w2.Dim(1) != w1.Dim(0) || w2.Dim(0) != w1.Dim(1))
            throw new ArgumentException($"Feed-forward: input {x.Data.ShapeString}, fc1 {w1.Data.ShapeString}, fc2 {w2.Data.ShapeString} do not chain.");
    }

    /// <summary>y = x·Wᵀ + b as <see cref="Linear"/> computes it.</summary>
    static void LinearInto(Tensor y2, Tensor x2, Variable w, Variable? b)
    {
        if (b != null) Ops.BroadcastRowsInto(y2, b.Data);
        Ops.MatmulInto(y2, x2, w.Data, false, true, 1f, b != null ? 1f : 0f);
    }

    /// <summary>
    /// Backward as the three nodes' rules: a trainable fc2's gradients from dy and the hidden values (then freed);
    /// dh = dy·W2; after ReLU the mask from the bits (scale and multiply after dropout, select without), after GELU the
    /// dropout's drawn again from the seed and GELU's derivative at fc1's output <paramref name="pre"/>; a trainable
    /// fc1's gradients from dh and x; dx = dh·W1, written over dy.
    /// </summary>
    static Variable RecordFeedForward(string name, Tensor y, Variable x, Variable w1, Variable? b1, Variable w2, Variable? b2,
        Tensor? bits, Tensor? pre, Tensor? keptHidden, float p, ulong seed, bool dropout, bool rowBlocks, Tensor[] saved)
    {
        int inFeatures = w1.Dim(1), hidden = w1.Dim(0);
        bool firstTrains = Trains(w1, b1), secondTrains = Trains(w2, b2);
        Variable[] inputs = (b1, b2) switch
        {
            (null, null) => [x, w1, w2],
            (null, _) => [x, w1, w2, b2],
            (_, null) => [x, w1, w2, b1],
            _ => [x, w1, w2, b1, b2],
        };
        // x for fc1's weight gradient; both weights always (a weight that is itself an op result must not be freed).
        return Graph.Record(name, y, inputs, Reads.Inputs(first: w1.RequiresGrad, second: true, third: true), dy =>
        {
            using var dy2 = dy.Reshape(-1, inFeatures);
            if (w2.RequiresGrad)
            {
                // Disposed once read: the hidden gradient below takes its place rather than joining it.
                using var h = keptHidden ?? GeluHidden(pre!, p, seed, dropout);
                using var h2 = h.Reshape(-1, hidden);
                LinearParameterGradients(w2, b2, dy2, h2);
            }
            else if (secondTrains) LinearParameterGradients(w2, b2, dy2, null);
            if (!x.RequiresGrad && !firstTrains) return;
            int rows = dy2.Dim(0), block = HiddenGradientRows(rows, inFeatures, hidden);
            if (rowBlocks && pre == null && !firstTrains && Blocked(rows, block, inFeatures, hidden))
            {
                ReluBackwardInRowBlocks(dy2, w1, w2, bits!, dropout ? Ops.DropoutKeepScale(p) : 1f, !dropout, block);
                Graph.Pass(x, dy);
                return;
            }
            var dh = HiddenGradient(dy2, w2, bits, pre, p, seed, dropout);
            using (dh)
            {
                if (w1.RequiresGrad) using (var x2 = x.Data.Reshape(-1, inFeatures)) LinearParameterGradients(w1, b1, dh, x2);
                else if (firstTrains) LinearParameterGradients(w1, b1, dh, null);   // the bias alone: x is not read (may be gone)
                if (!x.RequiresGrad) return;
                // dy is read no more (the rule owns it): dx, of its shape, is written over it and handed on.
                Ops.MatmulInto(dy2, dh, w1.Data);
            }
            Graph.Pass(x, dy);
        }, saved);
    }

    /// <summary>dh = dy·W2 through the activation: ReLU's mask from the bits, or dropout drawn again and GELU's derivative at fc1's output.</summary>
    static Tensor HiddenGradient(Tensor dy2, Variable w2, Tensor? bits, Tensor? pre, float p, ulong seed, bool dropout)
    {
        int hidden = w2.Dim(1);
        var dh = Tensor.Empty([dy2.Dim(0), hidden], dy2.Device);
        try
        {
            Ops.MatmulInto(dh, dy2, w2.Data);
            // In place: the hidden gradient is the widest tensor of the backward, and a second one at the peak.
            if (pre == null) return Ops.MulByBits(dh, bits!, dropout ? Ops.DropoutKeepScale(p) : 1f, select: !dropout, output: dh);
            if (dropout) Ops.DropoutBackward(dh, p, seed, output: dh);
            using var pre2 = pre.Reshape(-1, hidden);
            return Replace(dh, Ops.MapBackward(pre2, pre2, dh, new GeluErfOp()));
        }
        catch
        {
            dh.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Rows of the hidden gradient a ReLU block's backward computes at a time: all of them while that is no wider than the
    /// block's input gradient, else blocks that keep it so (a multiple of 32 rows, so a block's mask bits start on a word;
    /// at least 256: blocks of 64 rows made transformer-base 8×64×64's checkpointed LoRA step 3–15 points slower for 1 MiB,
    /// docs/PERFORMANCE.md). The widest tensor of the backward, 4× the input at d_ff = 4·d_model, is then as large as dy: an
    /// activation checkpoint's recompute of a layer peaks there.
    /// </summary>
    internal static int HiddenGradientRows(int rows, int inFeatures, int hidden)
    {
        if (hidden <= inFeatures || rows <= 256) return rows;
        long fit = (long)rows * inFeatures / hidden;
        return (int)Math.Min(rows, Math.Max(256, (fit + 31) / 32 * 32));
    }

    /// <summary>
    /// Whether a block's products are large enough for the GEMM's packed path, as the whole product's are: smaller ones
    /// (under 64 rows or 32³ multiply-adds, where the GEMM takes its unpacked path) sum in another order, and a row's
    /// value would depend on the block it fell in.
    /// </summary>
    static bool Packed(long count, int inFeatures, int hidden) => count >= 64 && count * inFeatures * hidden >= 32 * 32 * 32;

    /// <summary>Whether rows are made in blocks at all: more rows than a block, each block large enough (<see cref="Packed"/>).</summary>
    static bool Blocked(int rows, int block, int inFeatures, int hidden) =>
        block < rows && Packed(block, inFeatures, hidden) && Packed(rows, inFeatures, hidden);

    /// <summary>
    /// Blocks of <paramref name="block"/> rows (each starting on a multiple of 32 rows, as <see cref="HiddenGradientRows"/>
    /// makes them), the rows left at the end joining the last block when they would be too few on their own
    /// (<see cref="Packed"/>): 257 rows are one block of 257, not 256 and a row.
    /// </summary>
    internal static IEnumerable<(int Start, int Count)> RowBlocksOf(int rows, int block, int inFeatures, int hidden)
    {
        for (int start = 0; start < rows;)
        {
            int count = Math.Min(block, rows - start), rest = rows - start - count;
            if (rest > 0 && !Packed(rest, inFeatures, hidden)) count += rest;
            yield return (start, count);
            start += count;
        }
    }

    /// <summary>
    /// A frozen ReLU block's forward <paramref name="block"/> rows at a time: each block's hidden layer (fc1, ReLU and its
    /// dropout, drawn at the block's own indices of the whole hidden layer's mask), its bits into their words of the whole
    /// mask, and fc2 into its rows of y. Returns the bits; y, the bits and the products' rows are bit for bit the unblocked
    /// ones (each row's products run over the same depth in the same order). The widest tensor is then one block's hidden
    /// layer: [N, 4C] was a post-LN checkpoint's recompute's peak (its value is read, so it cannot skip the products).
    /// </summary>
    static Tensor ReluForwardInRowBlocks(Tensor x2, Tensor y2, Variable w1, Variable? b1, Variable w2, Variable? b2, float p, ulong seed, bool dropout, int block)
    {
        int rows = x2.Dim(0), hidden = w1.Dim(0);
        var bits = Tensor.Empty([(int)(((long)rows * hidden + 31) / 32)], x2.Device);
        try
        {
            foreach (var (start, count) in RowBlocksOf(rows, block, x2.Dim(1), hidden))
            {
                System.Diagnostics.Debug.Assert(start % 32 == 0, "a row block's mask bits must start on a 32-bit word");
                using var xBlock = Ops.Slice(x2, 0, start, count);
                var h = Tensor.Empty([count, hidden], x2.Device);
                try
                {
                    LinearInto(h, xBlock, w1, b1);
                    if (dropout) Ops.ReluDropout(h, p, seed, output: h, maskOffset: (long)start * hidden);
                    else h = Replace(h, Ops.Map(h, new ReluOp()));
                    using (var blockBits = Ops.PackPositive(h)) Ops.WriteSlice(bits, blockBits, 0, (int)((long)start * hidden / 32));
                    using var yBlock = Tensor.Empty([count, y2.Dim(1)], x2.Device);
                    LinearInto(yBlock, h, w2, b2);
                    Ops.WriteSlice(y2, yBlock, 0, start);
                }
                finally { h.Dispose(); }
            }
            return bits;
        }
        catch
        {
            bits.Dispose();
            throw;
        }
    }

    /// <summary>
    /// A ReLU block's dx = ((dy·W2) ⊙ mask)·W1, written over dy, <paramref name="block"/> rows at a time. Each row's products
    /// run over the same depth in the same order as the whole product's, so dx is bit for bit the unblocked one.
    /// </summary>
    static void ReluBackwardInRowBlocks(Tensor dy2, Variable w1, Variable w2, Tensor bits, float scale, bool select, int block)
    {
        int rows = dy2.Dim(0), hidden = w1.Dim(0);
        foreach (var (start, count) in RowBlocksOf(rows, block, dy2.Dim(1), hidden))
        {
            System.Diagnostics.Debug.Assert(start % 32 == 0, "a row block's mask bits must start on a 32-bit word");
            long firstBit = (long)start * hidden, bitCount = (long)count * hidden;
            using var dyBlock = Ops.Slice(dy2, 0, start, count);
            using var bitsBlock = Ops.Slice(bits, 0, (int)(firstBit / 32), (int)((bitCount + 31) / 32));
            using var dh = Tensor.Empty([count, hidden], dy2.Device);
            Ops.MatmulInto(dh, dyBlock, w2.Data);
            Ops.MulByBits(dh, bitsBlock, scale, select, output: dh);
            // The block's input gradient was copied out: its dx goes over those rows of dy.
            Ops.MatmulInto(dyBlock, dh, w1.Data);
            Ops.WriteSlice(dy2, dyBlock, 0, start);
        }
    }
}
