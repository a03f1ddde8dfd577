using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// A counter-based random stream (a dropout seed counter) that a checkpointed forward may draw from. The stream calls
/// <see cref="ActivationCheckpoint.OnDraw"/> before each draw, so <see cref="ActivationCheckpoint"/> can rewind it for the recompute and put
/// it back afterwards: the recompute draws the same masks, and the stream ends where it would have without checkpointing.
/// </summary>
public interface ISeedState
{
    /// <summary>The counter: the next draw depends on nothing else.</summary>
    ulong State { get; set; }
}

/// <summary>
/// Activation checkpointing (torch.utils.checkpoint, Hugging Face's <c>gradient_checkpointing</c>): runs a function
/// without keeping its intermediate values, and recomputes them during backward. Memory falls from every value inside the
/// function to its inputs and output; time rises by one more forward of the function.
/// </summary>
public static class ActivationCheckpoint
{
    /// <summary>What one checkpointed forward saw: streams it drew from (with their counters before), outside values it used.</summary>
    sealed class Recording(Recording? outer)
    {
        public readonly Recording? Outer = outer;
        public readonly List<(ISeedState Stream, ulong Before)> Streams = new();
        public readonly HashSet<Variable> Captured = new(ReferenceEqualityComparer.Instance);
        public bool NeedsGrad;
        /// <summary>Tensors the forward kept for the recompute (<see cref="Keep"/>) with their owners; owned by the checkpoint node.</summary>
        public readonly List<(object Owner, Tensor Value)> Kept = new();
        /// <summary>In a recompute: the forward's kept tensors, each handed out once, to its owner (<see cref="TakeKept"/>).</summary>
        public List<(object Owner, Tensor Value)>? Replay;
        public HashSet<int>? Taken;

        public void Note(ISeedState stream)
        {
            foreach (var (s, _) in Streams) if (ReferenceEquals(s, stream)) return;
            Streams.Add((stream, stream.State));
        }
    }

    [ThreadStatic] static Recording? _recording;
    /// <summary>The graph node's name (<see cref="Profiler"/> leaves its rule untimed: the recompute's ops are timed one by one).</summary>
    internal const string NodeName = "checkpoint";

    /// <summary>
    /// y = f(inputs, constants), keeping only the inputs, the constants and y. Backward re-runs f with gradients on, from
    /// the same random-stream counters, and back-propagates dL/dy through the recomputed graph into the inputs, any other
    /// value f read from outside, and the parameters f uses; so gradients, dropout masks and the streams' final counters
    /// are those of a plain f. Outside a graph (<see cref="Graph.NoGrad"/>: inference, decoding, the forward of an
    /// enclosing checkpoint) it is just f. f must compute the same thing twice (no state it changes, no values it keeps).
    /// </summary>
    /// <param name="f">The function: reads its inputs (and may read parameters and other values); never disposes them.</param>
    /// <param name="inputs">The values f reads (e.g. the hidden states [B, T, C]); kept by the caller's scope as usual.</param>
    /// <param name="constants">Tensors f reads (masks); the checkpoint holds a view of each until its backward, so the caller may dispose them.</param>
    public static Variable Run(Func<IReadOnlyList<Variable>, IReadOnlyList<Tensor>, Variable> f, IReadOnlyList<Variable> inputs, IReadOnlyList<Tensor>? constants = null) =>
        Run((v, t, _) => f(v, t), inputs, constants);

    /// <summary>
    /// <see cref="Run(Func{IReadOnlyList{Variable}, IReadOnlyList{Tensor}, Variable}, IReadOnlyList{Variable}, IReadOnlyList{Tensor}?)"/>
    /// telling f when it runs as the recompute (its third argument true). There f's output value is never read (backward
    /// starts from dL/dy), so f may skip computing the value of a final op whose own backward does not read it (a
    /// pre-LN layer's last linear), as long as it records the same graph.
    /// </summary>
    public static Variable Run(Func<IReadOnlyList<Variable>, IReadOnlyList<Tensor>, bool, Variable> f, IReadOnlyList<Variable> inputs, IReadOnlyList<Tensor>? constants = null)
    {
        constants ??= [];
        if (!Graph.IsEnabled) return f(inputs, constants, false);
        var recording = new Recording(_recording);
        Tensor output;
        using (var scope = new GraphScope())
        {
            _recording = recording;
            try
            {
                using (Graph.NoGrad())
                {
                    var y = f(inputs, constants, false);
                    // A view outlives the scope that disposes f's result and every intermediate value.
                    output = y.Data.Reshape(y.Data.ShapeArray());
                    // f may hand back a value from outside as it is (no op saw it): its gradient still flows.
                    if (y.RequiresGrad && !scope.Owned.Contains(y)) Observe([y]);
                }
            }
            catch
            {
                foreach (var (_, t) in recording.Kept) t.Dispose();
                throw;
            }
            finally { _recording = recording.Outer; }
        }
        if (!recording.NeedsGrad)
        {
            foreach (var (_, t) in recording.Kept) t.Dispose();
            return GraphScope.Track(new Variable(output));
        }

        // Values f read from outside belong to the node too, so the outer backward finishes their gradients only after this one.
        var nodeInputs = inputs.Concat(recording.Captured).Distinct(ReferenceEqualityComparer.Instance).Cast<Variable>().ToArray();
        var views = constants.Select(t => t.Reshape(t.ShapeArray())).ToArray();
        var saved = views.Concat(recording.Kept.Select(k => k.Value)).ToArray();
        foreach (var v in nodeInputs) v.ReadByBackward = true;   // the recompute runs f on them again
        return GraphScope.Track(new Variable(output, new Node(NodeName, nodeInputs, dy => Recompute(f, inputs, views, recording, nodeInputs, dy), saved)));
    }

    /// <summary>
    /// <see cref="Run(Func{IReadOnlyList{Variable}, IReadOnlyList{Tensor}, Variable}, IReadOnlyList{Variable}, IReadOnlyList{Tensor}?)"/>
    /// for a function of values only.
    /// </summary>
    public static Variable Run(Func<IReadOnlyList<Variable>, Variable> f, params Variable[] inputs) => Run((v, _) => f(v), inputs);

    /// <summary>
    /// Random streams call this before each draw; inside a checkpointed forward (or its recompute) the stream's counter
    /// is noted the first time, so the recompute can start from it. Elsewhere it does nothing.
    /// </summary>
    public static void OnDraw(ISeedState stream)
    {
        // Every enclosing checkpoint notes it: an outer recompute must rewind the streams an inner checkpoint draws from too.
        for (var r = _recording; r != null; r = r.Outer) r.Note(stream);
    }

    /// <summary>
    /// True while a checkpointed function runs again for backward: its ops then trade time for memory where they can, as
    /// the user asked by checkpointing (a feed-forward block's hidden gradient in row blocks).
    /// </summary>
    public static bool IsRecompute => _recording is { Replay: not null };

    /// <summary>
    /// True inside a checkpointed function's forward (not its recompute), where <see cref="Keep"/> takes tensors over.
    /// </summary>
    public static bool IsForwardOfCheckpoint => _recording is { Replay: null } && !Graph.IsEnabled;

    /// <summary>
    /// Inside a checkpointed forward (<see cref="IsForwardOfCheckpoint"/>): keeps <paramref name="t"/>, a small value the
    /// recompute would otherwise rebuild at a cost (a feed-forward block's ReLU mask as bits), for <paramref name="owner"/>
    /// (the module that made it), and takes it over: the checkpoint node disposes it with its own saved values. The
    /// recompute gets it back from <see cref="TakeKept"/> with the same owner, so a checkpoint around several layers hands
    /// each its own. Returns false, keeping nothing, anywhere else (the caller still owns <paramref name="t"/>).
    /// </summary>
    public static bool Keep(object owner, Tensor t)
    {
        if (!IsForwardOfCheckpoint) return false;
        _recording!.Kept.Add((owner, t));
        return true;
    }

    /// <summary>
    /// In a recompute: the next tensor the forward kept for <paramref name="owner"/> (<see cref="Keep"/>) that was not
    /// taken yet, or null when there is none (or outside a recompute).
    /// </summary>
    public static Tensor? TakeKept(object owner)
    {
        var r = _recording;
        if (r?.Replay == null) return null;
        for (int i = 0; i < r.Replay.Count; i++)
            if (ReferenceEquals(r.Replay[i].Owner, owner) && r.Taken!.Add(i)) return r.Replay[i].Value;
        return null;
    }

    /// <summary>Called by <see cref="Graph.Record(string, Tensor, Variable[], Action{Tensor}, Tensor[])"/> with gradients off: notes whether f's ops read a value that needs a gradient.</summary>
    internal static void Observe(Variable[] inputs)
    {
        var r = _recording;
        if (r == null) return;
        foreach (var v in inputs)
        {
            if (!v.RequiresGrad) continue;
            // With gradients off, nothing f makes needs a gradient: this is a parameter (leaf) or a value from outside.
            r.NeedsGrad = true;
            if (v.Creator != null) r.Captured.Add(v);
        }
    }

    static void Recompute(Func<IReadOnlyList<Variable>, IReadOnlyList<Tensor>, bool, Variable> f, IReadOnlyList<Variable> inputs, Tensor[] constants,
        Recording forward, Variable[] nodeInputs, Tensor dy)
    {
        // Rewind the streams to where the forward found them; afterwards every stream goes back to where backward had it.
        var current = forward.Streams.Select(s => s.Stream.State).ToArray();
        foreach (var (stream, before) in forward.Streams) stream.State = before;
        var redo = new Recording(_recording) { Replay = forward.Kept, Taken = new() };
        using var scope = new GraphScope();
        Variable y;
        _recording = redo;
        // The profiler charges a forward op the time since the previous one: the recompute's first op is not charged for
        // the backward rules that ran before it.
        if (Profiler.Enabled) Profiler.Mark();
        try
        {
            using (Graph.Enabled()) y = f(inputs, constants, true);
        }
        finally
        {
            _recording = redo.Outer;
            foreach (var (stream, before) in redo.Streams) stream.State = before;
            for (int i = 0; i < current.Length; i++) forward.Streams[i].Stream.State = current[i];
        }
        if (!y.Data.Shape.SequenceEqual(dy.Shape))
            throw new InvalidOperationException($"Activation checkpoint: the recomputed output has shape {y.Data.ShapeString}, the forward's had {ShapeMath.Format(dy.Shape)}; the function must compute the same thing twice.");
        if (!y.RequiresGrad)
            throw new InvalidOperationException("Activation checkpoint: the recomputed output needs no gradient although the forward's did; the function must compute the same thing twice.");
        var inside = new HashSet<Variable>(scope.Owned, ReferenceEqualityComparer.Instance);
        var seed = dy.Reshape(dy.ShapeArray());
        if (inside.Contains(y)) Graph.Backward(y, seed, inside, new HashSet<Variable>(nodeInputs, ReferenceEqualityComparer.Instance));
        else Graph.Accumulate(y, seed);   // f returned an outside value itself
    }
}
