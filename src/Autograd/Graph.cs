using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>Whether ops record a graph. Off inside <see cref="Graph.NoGrad"/> (inference, decoding).</summary>
public static class Graph
{
    [ThreadStatic] static int _noGradDepth;
    /// <summary>False inside a <see cref="NoGrad"/> block on this thread.</summary>
    public static bool IsEnabled => _noGradDepth == 0;

    /// <summary>using (Graph.NoGrad()) { ... }: no graph is built, nothing is saved for backward.</summary>
    public static IDisposable NoGrad() { _noGradDepth++; return new Restore(); }

    sealed class Restore : IDisposable
    {
        bool _done;
        public void Dispose() { if (!_done) { _done = true; _noGradDepth--; } }
    }

    /// <summary>Gradients on until disposed, even inside a <see cref="NoGrad"/> block (a checkpoint's recompute builds its graph).</summary>
    internal static IDisposable Enabled()
    {
        int depth = _noGradDepth;
        _noGradDepth = 0;
        return new Reenable(depth);
    }

    sealed class Reenable(int depth) : IDisposable
    {
        public void Dispose() => _noGradDepth = depth;
    }

    /// <summary>
    /// Makes the result of an op. If gradients are on and an input needs one, the result gets a node with
    /// the backward rule and the saved tensors; otherwise the saved tensors are released at once.
    /// This is also the extension point for ops defined outside this library (as torch.autograd.Function):
    /// compute the output with Tensors ops, then Record it with a rule that calls <see cref="Accumulate"/>.
    /// </summary>
    public static Variable Record(string name, Tensor output, Variable[] inputs, Action<Tensor> backward, params Tensor[] saved) =>
        Record(name, output, inputs, Reads.Everything, backward, saved);

    /// <summary>
    /// <see cref="Record(string, Tensor, Variable[], Action{Tensor}, Tensor[])"/> saying which values the rule reads: a
    /// value no rule reads can be freed before backward (<see cref="Variable.ReleaseIfUnread"/>). The rule must read
    /// nothing else of its inputs and output than their shape and device.
    /// </summary>
    public static Variable Record(string name, Tensor output, Variable[] inputs, Reads reads, Action<Tensor> backward, params Tensor[] saved)
    {
        if (Profiler.Enabled) Profiler.Forward(name);
        if (!IsEnabled) ActivationCheckpoint.Observe(inputs);   // returns at once outside a checkpointed forward
        bool needs = IsEnabled && inputs.Any(v => v.RequiresGrad);
        if (!needs)
        {
            foreach (var t in saved) t.Dispose();
            return GraphScope.Track(new Variable(output) { IsOpResult = true });
        }
        for (int i = 0; i < inputs.Length; i++)
            if (reads.Input(i)) inputs[i].ReadByBackward = true;
        return GraphScope.Track(new Variable(output, new Node(name, inputs, backward, saved, reads.Output)));
    }

    /// <summary>Adds g into v's gradient (takes ownership of g). Frozen inputs never get here.</summary>
    public static void Accumulate(Variable v, Tensor g)
    {
        if (!Adopt(v, g)) g.Dispose();
    }

    [ThreadStatic] static Tensor? t_passed;

    /// <summary>
    /// Hands the incoming gradient <paramref name="dy"/> itself to <paramref name="v"/> (a rule whose input gets dy
    /// unchanged, as an add's does), instead of a copy: it becomes v's gradient when v has none yet, else it is added
    /// in. Backward then does not free dy after the rule. At most one input may take dy; call it before others copy it.
    /// </summary>
    public static void Pass(Variable v, Tensor dy)
    {
        if (Adopt(v, dy)) t_passed = dy;
    }

    /// <summary>g becomes v's gradient when v has none (returns true), else it is added into v's (returns false; g unchanged).</summary>
    static bool Adopt(Variable v, Tensor g)
    {
        if (!v.Data.Shape.SequenceEqual(g.Shape))
            throw new InvalidOperationException($"Backward produced a gradient of shape {g.ShapeString} for a value of shape {v.Data.ShapeString}.");
        if (v.Grad != null)
        {
            Ops.AddInPlace(v.Grad, g);
            return false;
        }
        // Only leaves' (parameters') gradients count as "gradient" in the ledger; the gradients of
        // intermediate values are backward's working memory and die as it moves on.
        g.Category = v.Creator == null ? MemoryCategory.Gradient : MemoryCategory.Activation;
        v.Grad = g;
        return true;
    }

    internal static void Backward(Variable root, bool freeValues = false)
    {
        if (root.Data.Length != 1)
            throw new InvalidOperationException($"Backward() starts from a scalar; this value has shape {root.Data.ShapeString}.");
        if (!root.RequiresGrad) throw new InvalidOperationException("Backward(): the value does not depend on anything that requires a gradient.");
        var order = TopologicalOrder(root, null, null);
        Accumulate(root, Tensor.Full(root.Data.Shape, 1f, root.Device));
        RunRules(order, freeValues, keep: root);
    }

    /// <summary>
    /// Backward through a sub-graph (a checkpoint's recompute): from <paramref name="root"/> with gradient
    /// <paramref name="seed"/> (ownership taken), running the rules of the values in <paramref name="inside"/> only.
    /// Values outside get their gradients accumulated as any input does; their own rules run later, in the outer
    /// backward, so each must be one of <paramref name="outsideAllowed"/> (the checkpoint node's inputs).
    /// </summary>
    internal static void Backward(Variable root, Tensor seed, IReadOnlySet<Variable> inside, IReadOnlySet<Variable> outsideAllowed)
    {
        var order = TopologicalOrder(root, inside, outsideAllowed);
        Accumulate(root, seed);
        RunRules(order, freeValues: true);
    }

    /// <summary>
    /// Runs each node's rule, newest first. With <paramref name="freeValues"/> (a recompute, whose values nobody else
    /// holds, or a training step that reads nothing but the loss afterwards) a value other than <paramref name="keep"/>
    /// is freed right after its own rule: every user of it is newer, so its rule ran already.
    /// </summary>
    static void RunRules(List<Variable> order, bool freeValues = false, Variable? keep = null)
    {
        for (int i = order.Count - 1; i >= 0; i--)
        {
            var v = order[i];
            var node = v.Creator!;
            if (v.Grad != null)
            {
                var dy = v.Grad;
                t_passed = null;
                // A checkpoint's rule is its recompute, whose ops the profiler times one by one already.
                if (Profiler.Enabled && node.Name != ActivationCheckpoint.NodeName)
                {
                    long start = System.Diagnostics.Stopwatch.GetTimestamp();
                    node.BackwardRule(dy);
                    Profiler.Backward(node.Name, System.Diagnostics.Stopwatch.GetElapsedTime(start).TotalMilliseconds);
                }
                else node.BackwardRule(dy);
                // An intermediate's gradient is dead once its rule has run (leaves keep theirs), unless the rule passed it on.
                if (!ReferenceEquals(t_passed, dy)) dy.Dispose();
                t_passed = null;
                v.Grad = null;
            }
            node.ReleaseSaved();
            if (freeValues && !ReferenceEquals(v, keep)) v.Data.Dispose();
        }
    }

    /// <summary>
    /// Nodes reachable from root, each once, in creation order (inputs before users); backward runs them newest first, as
    /// PyTorch's engine does (by sequence number). The order then depends only on the order the ops ran in, so a
    /// checkpointed layer's recompute, run in the layer's place, adds into a value several layers read (the encoder output
    /// every decoder layer attends to) in the very order the plain graph does, and the gradients stay bit for bit the same.
    /// </summary>
    /// <remarks>With <paramref name="inside"/>, values outside it are not expanded (and must be in <paramref name="outsideAllowed"/>).</remarks>
    static List<Variable> TopologicalOrder(Variable root, IReadOnlySet<Variable>? inside, IReadOnlySet<Variable>? outsideAllowed)
    {
        var order = new List<Variable>();
        var visited = new HashSet<Variable>(ReferenceEqualityComparer.Instance);
        var stack = new Stack<Variable>();   // iterative: graphs are deep
        stack.Push(root);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (v.Creator == null || !visited.Add(v)) continue;
            if (inside != null && !inside.Contains(v))
            {
                if (!outsideAllowed!.Contains(v))
                    throw new InvalidOperationException($"Activation checkpoint: the recompute read {v} from outside, which the forward did not read; the function must compute the same thing twice.");
                continue;
            }
            order.Add(v);
            foreach (var input in v.Creator.Inputs)
                if (input.Creator != null && input.RequiresGrad) stack.Push(input);
        }
        order.Sort((a, b) => a.Creator!.Sequence.CompareTo(b.Creator!.Sequence));
        return order;
    }
}

/// <summary>
/// Owns the values ops create inside it and disposes them at the end (TorchSharp's dispose scope).
/// A training step runs inside one, so activations return to the pool every step.
/// </summary>
public sealed class GraphScope : IDisposable
{
    [ThreadStatic] static GraphScope? _current;
    readonly GraphScope? _outer;
    readonly List<Variable> _owned = new();

    /// <summary>Opens a scope on this thread; ops run until <see cref="Dispose"/> belong to it.</summary>
    public GraphScope() { _outer = _current; _current = this; }

    /// <summary>The values this scope owns, oldest first (a checkpoint's recompute: exactly the values it made).</summary>
    internal IReadOnlyList<Variable> Owned => _owned;

    internal static Variable Track(Variable v)
    {
        _current?._owned.Add(v);
        return v;
    }

    /// <summary>Hands v to the enclosing scope (or to the caller if none) so it outlives this one.</summary>
    public Variable Keep(Variable v)
    {
        _owned.Remove(v);
        _outer?._owned.Add(v);
        return v;
    }

    /// <summary>Disposes every value the scope still owns, newest first, and restores the enclosing scope.</summary>
    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _owned.Clear();
        if (_current == this) _current = _outer;
    }
}

/// <summary>
/// Which values a backward rule reads: its own output and which of its inputs (by position). Ops that do not say read
/// everything (<see cref="Everything"/>), so their values are kept until backward.
/// </summary>
public readonly struct Reads
{
    readonly ulong _inputs;
    /// <summary>Whether the rule reads the node's own output (softmax, ReLU).</summary>
    public bool Output { get; }

    Reads(bool output, ulong inputs) { Output = output; _inputs = inputs; }

    /// <summary>Whether the rule reads input <paramref name="index"/>'s value.</summary>
    public bool Input(int index) => index >= 64 || (_inputs >> index & 1) != 0;

    /// <summary>The output and every input: the default, always safe.</summary>
    public static Reads Everything => new(true, ulong.MaxValue);
    /// <summary>No value, only the incoming gradient (sums, copies, views, dropout drawn again from its seed).</summary>
    public static Reads Nothing => new(false, 0);
    /// <summary>Only the node's output (softmax, ReLU-dropout).</summary>
    public static Reads OnlyOutput => new(true, 0);
    /// <summary>Every input, not the output (LoRA's linear).</summary>
    public static Reads AllInputs => new(false, ulong.MaxValue);
    /// <summary>The first inputs whose flags are true, and not the output (no array per op: this runs for every product).</summary>
    public static Reads Inputs(bool first, bool second = false, bool third = false) =>
        new(false, (first ? 1UL : 0) | (second ? 2UL : 0) | (third ? 4UL : 0));
}
