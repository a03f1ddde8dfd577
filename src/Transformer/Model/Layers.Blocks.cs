using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>
/// Hook on a sublayer's output, before the residual add (bottleneck adapters insert themselves here).
/// Arguments: the sublayer's name ("self_attn", "cross_attn", "ffn") and its output; returns the new output.
/// </summary>
public delegate Variable SublayerHook(string sublayer, Variable output);

/// <summary>
/// Where an encoder layer keeps its parts (dotted paths below the layer): the seq2seq model's own names, or
/// Hugging Face BertLayer's, so that checkpoints and PEFT target names carry over unchanged.
/// </summary>
public sealed record EncoderLayerNames(string Attention, AttentionNames AttentionParts, string AttentionNorm,
    string Fc1, string Fc2, string FfnNorm)
{
    /// <summary>The seq2seq model's names: self_attn, self_attn_norm, ffn.fc1, ffn.fc2, ffn_norm.</summary>
    public static readonly EncoderLayerNames Seq2Seq = new("self_attn", AttentionNames.Seq2Seq, "self_attn_norm", "ffn.fc1", "ffn.fc2", "ffn_norm");
    /// <summary>Hugging Face BertLayer's names: attention.*, intermediate.dense, output.dense, output.LayerNorm.</summary>
    public static readonly EncoderLayerNames Bert = new("attention", AttentionNames.Bert, "attention.output.LayerNorm",
        "intermediate.dense", "output.dense", "output.LayerNorm");
}

/// <summary>Shared residual wiring: pre-LN is x + f(LN(x)); post-LN is LN(x + f(x)), with dropout on f.</summary>
public abstract class ResidualBlock : Module
{
    /// <summary>Pre-LN (true) or post-LN wiring (<see cref="TransformerConfig.PreNorm"/>).</summary>
    protected readonly bool PreNorm;
    /// <summary>Dropout on each sublayer's output in training.</summary>
    protected readonly float DropoutRate;
    /// <summary>Draws the dropout seeds (the stream that also initialized the weights).</summary>
    protected readonly SeedSequence Seeds;
    readonly string _activation;
    readonly float _activationDropout;
    /// <summary>
    /// Called on each sublayer's output before the residual add (null: none). The value it is given and the value it returns
    /// are freed once added to the residual unless a backward rule reads them (<see cref="Variable.ReleaseIfUnread"/>): a
    /// hook that keeps either for later must copy it.
    /// </summary>
    public SublayerHook? SublayerOutputHook { get; set; }

    /// <summary>Takes the wiring, activation and dropout settings from <paramref name="c"/>.</summary>
    protected ResidualBlock(TransformerConfig c, SeedSequence seeds)
    {
        PreNorm = c.PreNorm; DropoutRate = c.Dropout; Seeds = seeds; _activation = c.Activation;
        _activationDropout = c.ActivationDropout ?? c.Dropout;
    }

    /// <summary>fc1 [C → DFF] and fc2 [DFF → C] at the given paths (registered in that order: init seeds follow it).</summary>
    protected void RegisterFeedForward(TransformerConfig c, string fc1, string fc2, Device device)
    {
        RegisterModuleAt(fc1, new Linear(c.DModel, c.DFF, true, Seeds, device));
        RegisterModuleAt(fc2, new Linear(c.DFF, c.DModel, true, Seeds, device));
    }

    /// <summary>Position-wise feed-forward: fc2(act(fc1(x))), with dropout after the activation.</summary>
    /// <param name="x">The input [B, T, C].</param>
    /// <param name="fc1">The first linear's child path.</param>
    /// <param name="fc2">The second linear's child path.</param>
    /// <param name="recompute">An activation checkpoint's recompute of this layer (see <see cref="OutputUnread"/>).</param>
    protected Variable FeedForward(Variable x, string fc1, string fc2, bool recompute = false)
    {
        // Only training draws a seed: validation and decoding must not shift the masks a later training step gets.
        bool dropout = Training && _activationDropout > 0;
        var plain = PlainFeedForward(fc1, fc2);
        bool frozen = plain is (Linear a, Linear b) && Frozen(a) && Frozen(b);
        if (plain is (Linear first, Linear second))
        {
            bool gelu = _activation == "gelu";
            // A frozen ReLU block's backward needs only where its hidden layer is not zero. The checkpoint's forward kept
            // that as bits, so its recompute multiplies nothing (the seed is still drawn, for the dropouts after it).
            if (frozen && !gelu && OutputUnread(recompute) && ActivationCheckpoint.TakeKept(this) is { } kept)
            {
                if (dropout) Seeds.Next();
                return F.FrozenReluFeedForwardUnread(x, first.Weight, second.Weight, kept, _activationDropout, dropout);
            }
            // Training with a graph: one node keeping only what its backward reads, never the hidden values beside their
            // gradient (and, frozen, not the hidden values at all).
            if (Graph.IsEnabled && (x.RequiresGrad || !frozen))
                return F.FeedForward(x, first.Weight, first.Bias, second.Weight, second.Bias, gelu,
                    _activationDropout, dropout ? Seeds.Next() : 0, dropout, valueUnread: OutputUnread(recompute));
        }
        var h = Layer(fc1).Forward(x);
        if (_activation == "gelu")
        {
            h = F.Gelu(h);
            if (dropout) h = F.Dropout(h, _activationDropout, Seeds.Next(), Training);
        }
        // ReLU and its dropout in one pass, written over fc1's output when no rule reads that (a linear's reads its input).
        else if (dropout) h = F.ReluDropout(h, _activationDropout, Seeds.Next(), Training, inputUnread: h.UnreadByBackward);
        else
        {
            var pre = h;
            h = F.Relu(h);
            pre.ReleaseIfUnread();
        }
        if (frozen && _activation != "gelu" && OutputUnread(true) && ActivationCheckpoint.IsForwardOfCheckpoint)
            ActivationCheckpoint.Keep(this, Ops.PackPositive(h.Data));
        // fc2's backward reads h and its weight, never its output: an unread output needs no product. A wrapped fc2 (an
        // adapter, (IA)³) may read its own values, so it runs as usual.
        return OutputUnread(recompute) && Layer(fc2) is Linear last ? F.Linear(h, last.Weight, last.Bias, valueUnread: true) : Layer(fc2).Forward(h);
    }

    /// <summary>fc1 and fc2 when both are plain linears, trainable or not (no adapter wraps either); else null.</summary>
    (Linear Fc1, Linear Fc2)? PlainFeedForward(string fc1, string fc2) =>
        Layer(fc1) is Linear a && Layer(fc2) is Linear b ? (a, b) : null;

    static bool Frozen(Linear l) => !l.Weight.RequiresGrad && l.Bias?.RequiresGrad != true;

    /// <summary>
    /// Whether a layer asked for a value-free output (an activation checkpoint's recompute) may skip its feed-forward's
    /// last product: only pre-LN (post-LN's final LayerNorm reads the sum) and with no sublayer hook reading the output.
    /// </summary>
    protected bool OutputUnread(bool recompute) => recompute && PreNorm && SublayerOutputHook == null;

    /// <summary>One residual sublayer: pre-LN x + drop(f(LN(x))) or post-LN LN(x + drop(f(x))), with <see cref="SublayerOutputHook"/> applied to f's output.</summary>
    /// <param name="x">The input [B, T, C].</param>
    /// <param name="sublayer">The sublayer's name passed to the hook ("self_attn", "cross_attn", "ffn").</param>
    /// <param name="norm">The child path of this sublayer's LayerNorm.</param>
    /// <param name="f">The sublayer.</param>
    /// <param name="outputUnread">Nothing will read the sum (see <see cref="OutputUnread"/>): it is recorded, not computed.</param>
    protected Variable Residual(Variable x, string sublayer, string norm, Func<Variable, Variable> f, bool outputUnread = false)
    {
        var ln = (ILayer)Child(norm);
        var input = PreNorm ? ln.Forward(x) : x;
        var output = f(input);
        var y = SublayerOutputHook != null ? SublayerOutputHook(sublayer, output) : output;
        // Only training draws a seed, so validating (at any interval) leaves the training masks as they were. The dropout
        // and the residual add are one pass (the same values as the two).
        var sum = Training ? F.DropoutAdd(x, y, DropoutRate, Seeds.Next(), Training, outputUnread) : F.Add(x, y);
        // The sum's backward reads no value: the sublayer's output is freed now unless a rule reads it, and so is a pre-LN
        // sublayer's normalized input (read by LoRA's linears, not by a frozen feed-forward).
        y.ReleaseIfUnread();
        output.ReleaseIfUnread();
        if (PreNorm) input.ReleaseIfUnread();
        return PreNorm ? sum : ln.Forward(sum);
    }

    /// <summary>
    /// Frees a value between two sublayers of this layer once the second has used it, unless a backward rule reads it.
    /// Post-LN, that is the first norm's output: the residual add after the next sublayer reads no value, and a frozen
    /// feed-forward does not read its input, so with LoRA on attention nothing does, and each layer kept one [B, T, C]
    /// tensor to the end of backward (an activation checkpoint's recompute too, at its memory peak). Pre-LN it is the
    /// residual stream, which the next norm reads.
    /// </summary>
    protected static void ReleaseIfDone(Variable between) => between.ReleaseIfUnread();
}

/// <summary>
/// Self-attention → feed-forward, each with a residual and a LayerNorm. Named as <see cref="EncoderLayerNames"/> says:
/// self_attn, self_attn_norm, ffn.fc1, ffn.fc2, ffn_norm (seq2seq) or BertLayer's attention.self.query … output.LayerNorm.
/// </summary>
public sealed class EncoderLayer : ResidualBlock
{
    readonly EncoderLayerNames _names;

    /// <summary>Creates the attention, feed-forward and two LayerNorms at the paths <paramref name="names"/> gives (default: <see cref="EncoderLayerNames.Seq2Seq"/>).</summary>
    public EncoderLayer(TransformerConfig c, SeedSequence seeds, Device device, EncoderLayerNames? names = null) : base(c, seeds)
    {
        _names = names ?? EncoderLayerNames.Seq2Seq;
        RegisterModuleAt(_names.Attention, new MultiHeadAttention(c.DModel, c.Heads, seeds, device, _names.AttentionParts, c.AttentionDropout));
        RegisterModuleAt(_names.AttentionNorm, new LayerNorm(c.DModel, device, c.LayerNormEps));
        RegisterFeedForward(c, _names.Fc1, _names.Fc2, device);
        RegisterModuleAt(_names.FfnNorm, new LayerNorm(c.DModel, device, c.LayerNormEps));
    }

    /// <summary>Self-attention then feed-forward over <paramref name="x"/> [B, T, C]; returns [B, T, C].</summary>
    /// <param name="x">The hidden states [B, T, C].</param>
    /// <param name="sourceMask">Masks padded key positions (null: none).</param>
    /// <param name="recompute">An activation checkpoint's recompute of this layer alone: its output's value is never read, only
    /// back-propagated through. Pass it only when this layer's output is the checkpointed function's result (a function
    /// checkpointing several layers must not: the next layer reads this one's output).</param>
    public Variable Forward(Variable x, Tensor? sourceMask, bool recompute = false)
    {
        var attn = (MultiHeadAttention)Child(_names.Attention);
        var mid = Residual(x, "self_attn", _names.AttentionNorm, h => attn.Forward(h, h, false, sourceMask));
        var y = Residual(mid, "ffn", _names.FfnNorm, h => FeedForward(h, _names.Fc1, _names.Fc2, recompute), OutputUnread(recompute));
        ReleaseIfDone(mid);
        return y;
    }
}

/// <summary>Per-layer decoding state: the self-attention and cross-attention caches.</summary>
public sealed class LayerCache : IDisposable
{
    /// <summary>The self-attention cache (grows by one position a step).</summary>
    public AttentionCache Self { get; } = new();
    /// <summary>The cross-attention cache (the encoder output's keys and values, computed once).</summary>
    public AttentionCache Cross { get; } = new();
    /// <summary>Decoder prompt rows at the front of the self-attention keys (set on the first cached step; later steps' positions start after them).</summary>
    public int PromptLength { get; internal set; }
    /// <summary>Frees both caches.</summary>
    public void Dispose() { Self.Dispose(); Cross.Dispose(); }
}

/// <summary>self_attn (causal) → cross_attn over the encoder output → ffn.</summary>
public sealed class DecoderLayer : ResidualBlock
{
    /// <summary>Creates self_attn, cross_attn, ffn.fc1, ffn.fc2 and their LayerNorms.</summary>
    public DecoderLayer(TransformerConfig c, SeedSequence seeds, Device device) : base(c, seeds)
    {
        RegisterModule("self_attn", new MultiHeadAttention(c.DModel, c.Heads, seeds, device));
        RegisterModule("self_attn_norm", new LayerNorm(c.DModel, device, c.LayerNormEps));
        RegisterModule("cross_attn", new MultiHeadAttention(c.DModel, c.Heads, seeds, device));
        RegisterModule("cross_attn_norm", new LayerNorm(c.DModel, device, c.LayerNormEps));
        RegisterFeedForward(c, "ffn.fc1", "ffn.fc2", device);
        RegisterModule("ffn_norm", new LayerNorm(c.DModel, device, c.LayerNormEps));
    }

    /// <summary>Causal self-attention, cross-attention over <paramref name="memory"/>, then feed-forward; returns [B, T, C].</summary>
    /// <param name="x">The decoder hidden states [B, T, C].</param>
    /// <param name="memory">The encoder output [B, S, C].</param>
    /// <param name="sourceMask">Masks padded source positions (null: none).</param>
    /// <param name="cache">Keys and values of earlier steps when decoding incrementally (null: the whole target at once).</param>
    /// <param name="recompute">An activation checkpoint's recompute of this layer alone: its output's value is never read, only
    /// back-propagated through. Pass it only when this layer's output is the checkpointed function's result (a function
    /// checkpointing several layers must not: the next layer reads this one's output).</param>
    public Variable Forward(Variable x, Variable memory, Tensor? sourceMask, LayerCache? cache = null, bool recompute = false)
    {
        var self = (MultiHeadAttention)Child("self_attn");
        var cross = (MultiHeadAttention)Child("cross_attn");
        var afterSelf = Residual(x, "self_attn", "self_attn_norm", h => self.Forward(h, h, true, null, cache?.Self));
        var afterCross = Residual(afterSelf, "cross_attn", "cross_attn_norm", h => cross.Forward(h, memory, false, sourceMask, cache?.Cross, isCross: true));
        ReleaseIfDone(afterSelf);
        var y = Residual(afterCross, "ffn", "ffn_norm", h => FeedForward(h, "ffn.fc1", "ffn.fc2", recompute), OutputUnread(recompute));
        ReleaseIfDone(afterCross);
        return y;
    }
}

/// <summary>A list of layers named 0, 1, 2… (so paths read encoder.layers.3.self_attn.q_proj).</summary>
public sealed class LayerList<T> : Module where T : Module
{
    /// <summary>Number of layers.</summary>
    public int Count { get; }
    /// <summary>Registers the layers as children "0", "1", … in order.</summary>
    public LayerList(IEnumerable<T> layers)
    {
        int i = 0;
        foreach (var l in layers) RegisterModule((i++).ToString(), l);
        Count = i;
    }
    /// <summary>The layer at index <paramref name="i"/>.</summary>
    public T this[int i] => (T)Child(i.ToString());
}
