using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// A differentiable value: a tensor plus the graph node that made it (micrograd's Value, for tensors).
/// Op results are owned by the innermost <see cref="GraphScope"/> (disposed with it); without a scope
/// the caller disposes them. <see cref="Grad"/> is filled by <see cref="Backward()"/>; gradients accumulate with +=.
/// </summary>
public class Variable : IDisposable
{
    /// <summary>The value; replaced only through <see cref="SetData"/>.</summary>
    public Tensor Data { get; private set; }
    /// <summary>dL/d(this), of the same shape as <see cref="Data"/>; null until backward reaches it or after <see cref="ZeroGrad"/>.</summary>
    public Tensor? Grad { get; internal set; }
    /// <summary>Whether backward computes a gradient for this value (true for op results with a differentiable input).</summary>
    public virtual bool RequiresGrad { get; set; }
    internal Node? Creator { get; }

    /// <summary>A leaf value that takes ownership of <paramref name="data"/>; not tracked by any scope.</summary>
    public Variable(Tensor data, bool requiresGrad = false)
    {
        Data = data;
        RequiresGrad = requiresGrad;
    }

    internal Variable(Tensor data, Node creator)
    {
        Data = data;
        Creator = creator;
        RequiresGrad = true;
    }

    /// <summary>A constant (no gradient) owned by the current scope, like an op result.</summary>
    public static Variable Constant(Tensor data) => GraphScope.Track(new Variable(data));

    /// <summary>The shape of <see cref="Data"/>.</summary>
    public ReadOnlySpan<int> Shape => Data.Shape;
    /// <summary>Size of axis <paramref name="axis"/>; negative counts from the end.</summary>
    public int Dim(int axis) => Data.Dim(axis);
    /// <summary>The device holding <see cref="Data"/>.</summary>
    public Device Device => Data.Device;
    /// <summary>The shape and, for an op result, the op that made it.</summary>
    public override string ToString() => $"Variable{Data.ShapeString}{(Creator != null ? " (" + Creator.Name + ")" : "")}";

    /// <summary>Replaces the tensor (used by loading weights); the old one is disposed.</summary>
    public void SetData(Tensor data)
    {
        if (!data.Shape.SequenceEqual(Data.Shape))
            throw new ArgumentException($"SetData: expected shape {Data.ShapeString}, got {data.ShapeString}.");
        if (!ReferenceEquals(data, Data)) Data.Dispose();
        Data = data;
    }

    /// <summary>Disposes the gradient and clears it, so the next backward starts from zero.</summary>
    public void ZeroGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    /// <summary>Reverse-mode pass from a scalar: dL/dL = 1, then each node once in reverse topological order.</summary>
    public void Backward() => Graph.Backward(this);

    /// <summary>
    /// <see cref="Backward()"/> that, with <paramref name="freeValues"/>, frees every intermediate value (this one excepted)
    /// as soon as its own rule has run — PyTorch frees a graph's buffers the same way. For a training step that reads
    /// nothing but the loss afterwards: backward's memory then shrinks as it goes, which lowers the peak of a checkpointed
    /// model, whose recompute of the first layers comes last. Reading a freed intermediate value afterwards throws.
    /// </summary>
    public void Backward(bool freeValues) => Graph.Backward(this, freeValues);

    /// <summary>True once a recorded backward rule reads this value (see <see cref="Reads"/>).</summary>
    internal bool ReadByBackward { get; set; }
    /// <summary>An op's result made without a node (gradients off, or no input needing one): no backward reads it.</summary>
    internal bool IsOpResult { get; init; }

    /// <summary>
    /// Frees this op result's value now if backward will not read it: neither its own rule nor any rule recorded so far
    /// reads it (each op says what it reads, <see cref="Reads"/>). The caller promises that nothing computes from it later,
    /// as a Python caller does by dropping its last reference (PyTorch then frees such a value at once). A model calls it
    /// where a value's last consumer has run — a linear's output once split into heads, a sublayer's output once added to
    /// the residual — so a training step's forward does not hold every intermediate until backward, nor an activation
    /// checkpoint's forward (gradients off) a whole layer's. Reading the value afterwards throws. Does nothing to leaves,
    /// constants or values a rule reads.
    /// </summary>
    /// <returns>Whether the value was freed.</returns>
    public bool ReleaseIfUnread()
    {
        // A view's storage lives on in the other tensors that hold it: releasing the view only drops its reference.
        if (!UnreadHere) return false;
        Data.Dispose();
        return true;
    }

    /// <summary><see cref="ReleaseIfUnread()"/> on each value in turn (a view only drops its reference; the storage goes with the last).</summary>
    public static void ReleaseAllIfUnread(params Variable[] values)
    {
        foreach (var v in values) v.ReleaseIfUnread();
    }

    /// <summary>
    /// Whether this op result may be written over by an op whose caller knows nothing computes from it later: no backward
    /// rule recorded so far reads it (see <see cref="ReleaseIfUnread"/>), and no other tensor — a view of it, or it of
    /// another — shares its storage, so no value a rule reads changes with it.
    /// </summary>
    public bool UnreadByBackward => UnreadHere && !Data.SharesStorage;

    bool UnreadHere => !ReadByBackward && !Data.IsDisposed && (Creator != null ? !Creator.ReadsOutput : IsOpResult);

    /// <summary>The same tensor as a constant: no gradient flows through it. Shares storage (a view).</summary>
    public Variable Detach() => GraphScope.Track(new Variable(Data.Reshape(Data.ShapeArray())));

    /// <summary>Disposes the value, its gradient and the tensors its node saved for backward.</summary>
    public virtual void Dispose()
    {
        Data.Dispose();
        Grad?.Dispose();
        Grad = null;
        Creator?.ReleaseSaved();
    }
}

/// <summary>A graph node: the inputs of an op, its backward rule, and what it saved for backward.</summary>
internal sealed class Node
{
    static long _created;
    public readonly string Name;
    /// <summary>Creation order (any thread): inputs' nodes are always older than their users', so this sorts a graph topologically.</summary>
    public readonly long Sequence = Interlocked.Increment(ref _created);
    public readonly Variable[] Inputs;
    public readonly Action<Tensor> BackwardRule;
    readonly Tensor[] _saved;
    bool _released;

    /// <summary>Whether the rule reads the node's own output value (else the value may be freed before backward).</summary>
    public readonly bool ReadsOutput;

    public Node(string name, Variable[] inputs, Action<Tensor> backward, Tensor[] saved, bool readsOutput = true)
    {
        Name = name; Inputs = inputs; BackwardRule = backward; _saved = saved; ReadsOutput = readsOutput;
    }

    public void ReleaseSaved()
    {
        if (_released) return;
        _released = true;
        foreach (var t in _saved) t.Dispose();
    }
}
