using Nanolora.Tensors;

namespace Nanolora.Autograd;

/// <summary>
/// A set of parameters that share a learning-rate multiplier, like a torch.optim param group whose lr is
/// <see cref="LearningRateScale"/> × the base rate. The schedule sets the base rate; every group follows it in
/// proportion (LoRA+ puts the B matrices in a group of scale 16, say, and the A matrices in one of scale 1).
/// </summary>
/// <param name="Name">What the group holds, for errors and reports (e.g. "lora_B").</param>
/// <param name="Parameters">The group's parameters.</param>
/// <param name="LearningRateScale">This group's rate ÷ the base rate: finite and &gt; 0.</param>
public sealed record ParameterGroup(string Name, IReadOnlyList<Parameter> Parameters, float LearningRateScale = 1f);

/// <summary>
/// Rewrites some gradients just before an optimizer uses them (after clipping), as a preconditioner does: Riemannian
/// preconditioned LoRA multiplies each adapter's gradients by an r × r matrix, say, and the optimizer then runs unchanged.
/// </summary>
public interface IGradientPreconditioner
{
    /// <summary>The parameters whose gradients it rewrites (an optimizer refuses one that reaches past its own parameters).</summary>
    IEnumerable<Parameter> Parameters { get; }
    /// <summary>Rewrites the gradients in place.</summary>
    void Precondition();
}

/// <summary>
/// Base of the optimizers. It is handed only trainable parameters (frozen ones are refused), and keeps
/// its state lazily, per parameter, under the ledger's "optimizer state" category.
/// </summary>
public abstract class Optimizer : IDisposable
{
    /// <summary>The parameters being optimized, in the order given (state entries are numbered by it).</summary>
    protected readonly IReadOnlyList<Parameter> Params;
    readonly Dictionary<Parameter, Tensor[]> _state = new(ReferenceEqualityComparer.Instance);
    readonly Dictionary<Parameter, float> _scale = new(ReferenceEqualityComparer.Instance);
    /// <summary>The base rate the next <see cref="Step"/> uses; a parameter's own rate is this × its group's scale (<see cref="LearningRateOf"/>).</summary>
    public float LearningRate { get; set; }
    /// <summary>Number of Step() calls so far (bias correction uses it; resumes restore it).</summary>
    public int StepCount { get; protected set; }
    /// <summary>The parameter groups, in the order given (one group of scale 1 when built from a plain list).</summary>
    public IReadOnlyList<ParameterGroup> Groups { get; }
    /// <summary>Applied to the gradients at the start of every <see cref="Step"/> (after clipping), when set.</summary>
    public IGradientPreconditioner? Preconditioner
    {
        get => _preconditioner;
        set
        {
            // A parameter outside this optimizer would never be updated or zeroed, and its gradient preconditioned again each step.
            if (value?.Parameters.FirstOrDefault(p => !_scale.ContainsKey(p)) is Parameter stray)
                throw new ArgumentException($"The preconditioner rewrites the gradient of '{stray.Name}', which this optimizer does not update; give both the same parameters.");
            _preconditioner = value;
        }
    }
    IGradientPreconditioner? _preconditioner;

    /// <summary>Refuses frozen parameters and an empty list.</summary>
    protected Optimizer(IEnumerable<Parameter> parameters, float lr) : this([new ParameterGroup("all", parameters.ToList())], lr) { }

    /// <summary>Refuses frozen parameters, a parameter in two groups, a scale that is not finite and &gt; 0, and no parameters at all.</summary>
    protected Optimizer(IEnumerable<ParameterGroup> groups, float lr)
    {
        Groups = groups.ToList();
        var all = new List<Parameter>();
        foreach (var g in Groups)
        {
            if (!(g.LearningRateScale > 0 && float.IsFinite(g.LearningRateScale)))
                throw new ArgumentException($"Parameter group '{g.Name}': learning-rate scale is {g.LearningRateScale}, expected a finite number > 0.");
            foreach (var p in g.Parameters)
            {
                if (!p.Trainable) throw new ArgumentException($"Parameter '{p.Name}' is frozen; give the optimizer only trainable parameters.");
                if (!_scale.TryAdd(p, g.LearningRateScale))
                    throw new ArgumentException($"Parameter '{p.Name}' is in two parameter groups (the second is '{g.Name}'); each parameter belongs to one group.");
                all.Add(p);
            }
        }
        Params = all;
        if (Params.Count == 0) throw new ArgumentException("The optimizer was given no parameters.");
        LearningRate = lr;
    }

    /// <summary>The rate <paramref name="p"/> is updated with: <see cref="LearningRate"/> × its group's scale.</summary>
    public float LearningRateOf(Parameter p) => LearningRate * _scale[p];

    /// <summary>Names of the state slots each parameter gets (e.g. exp_avg, exp_avg_sq).</summary>
    protected abstract string[] StateSlots { get; }

    /// <summary>The state slots of <paramref name="p"/>, created as zeros on its device the first time.</summary>
    protected Tensor[] StateOf(Parameter p)
    {
        if (_state.TryGetValue(p, out var s)) return s;
        s = StateSlots.Select(_ => Tensor.Zeros(p.Shape, p.Device, MemoryCategory.OptimizerState)).ToArray();
        _state[p] = s;
        return s;
    }

    /// <summary>Bytes of optimizer state allocated so far.</summary>
    public long StateBytes => _state.Values.Sum(ts => ts.Sum(t => t.Length * sizeof(float)));

    /// <summary>Counts a step, runs the <see cref="Preconditioner"/> if any, and updates every parameter that has a gradient.</summary>
    public void Step()
    {
        StepCount++;
        _preconditioner?.Precondition();
        foreach (var p in Params)
            if (p.Grad != null) Update(p, p.Grad);
    }

    /// <summary>Applies one update to <paramref name="p"/> in place from <paramref name="grad"/>.</summary>
    protected abstract void Update(Parameter p, Tensor grad);

    /// <summary>A training step's update: clip the gradients' global norm (when clipNorm > 0), set the rate, step, clear the gradients.</summary>
    public void ClipStepAndZero(float learningRate, double clipNorm)
    {
        if (clipNorm > 0) ClipGradNorm(Params, clipNorm);
        LearningRate = learningRate;
        Step();
        ZeroGrad();
    }

    /// <summary>Clears the gradients of the optimized parameters.</summary>
    public void ZeroGrad()
    {
        foreach (var p in Params) p.ZeroGrad();
    }

    /// <summary>
    /// The state as named arrays ("{index}.{slot}" for every parameter and slot, plus "step"), for checkpoints. A
    /// parameter that has had no gradient yet gets its (zero) slots too, so a loader can demand all of them.
    /// </summary>
    public IReadOnlyList<(string Name, int[] Shape, float[] Data)> StateDict()
    {
        var list = new List<(string, int[], float[])> { ("step", [1], [StepCount]) };
        for (int i = 0; i < Params.Count; i++)
        {
            var s = StateOf(Params[i]);
            for (int k = 0; k < s.Length; k++) list.Add(($"{i}.{StateSlots[k]}", s[k].ShapeArray(), s[k].ToArray()));
        }
        return list;
    }

    /// <summary>Restores a <see cref="StateDict"/>; every entry is checked before any is loaded, so a bad file leaves the optimizer as it was.</summary>
    /// <param name="entries">Named arrays as written by <see cref="StateDict"/>.</param>
    /// <param name="requireComplete">Refuse unless "step" and every slot of every parameter are present (a resume needs the whole state).</param>
    public void LoadStateDict(IEnumerable<(string Name, int[] Shape, float[] Data)> entries, bool requireComplete = false)
    {
        var list = entries.ToList();
        // Check everything before loading anything, so a bad file leaves the optimizer as it was.
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int? step = null;
        foreach (var (name, shape, data) in list)
        {
            if (!seen.Add(name)) throw new InvalidDataException($"Optimizer state entry '{name}' appears twice.");
            if (name == "step")
            {
                if (data.Length != 1 || !(data[0] >= 0 && data[0] <= int.MaxValue) || data[0] != MathF.Floor(data[0]))
                    throw new InvalidDataException($"Optimizer state 'step' is {(data.Length == 1 ? data[0] : $"{data.Length} numbers")}, expected one whole number ≥ 0.");
                step = (int)data[0];
                continue;
            }
            var (p, _) = Locate(name);
            if (!shape.SequenceEqual(p.Data.ShapeArray()))
                throw new InvalidDataException($"Optimizer state '{name}' has shape {ShapeMath.Format(shape)} but parameter '{p.Name}' is {p.Data.ShapeString}.");
        }
        if (requireComplete)
        {
            if (step == null) throw new InvalidDataException("Optimizer state has no 'step' entry.");
            for (int i = 0; i < Params.Count; i++)
                foreach (var slot in StateSlots)
                    if (!seen.Contains($"{i}.{slot}"))
                        throw new InvalidDataException($"Optimizer state has no '{i}.{slot}' (slot {slot} of parameter '{Params[i].Name}'); the state is incomplete.");
        }
        if (step is int n) StepCount = n;
        foreach (var (name, _, data) in list)
        {
            if (name == "step") continue;
            var (p, slot) = Locate(name);
            StateOf(p)[slot].CopyFrom(data);
        }
    }

    (Parameter Parameter, int Slot) Locate(string name)
    {
        var parts = name.Split('.');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int index) || index < 0 || index >= Params.Count)
            throw new InvalidDataException($"Optimizer state entry '{name}' does not name one of the {Params.Count} parameters.");
        int slot = Array.IndexOf(StateSlots, parts[1]);
        if (slot < 0) throw new InvalidDataException($"Optimizer state entry '{name}': unknown slot '{parts[1]}' (expected {string.Join(", ", StateSlots)}).");
        return (Params[index], slot);
    }

    /// <summary>Disposes the state tensors (not the parameters).</summary>
    public void Dispose()
    {
        foreach (var s in _state.Values) foreach (var t in s) t.Dispose();
        _state.Clear();
        GC.SuppressFinalize(this);
    }

    /// <summary>Scales all gradients so their global L2 norm is at most maxNorm; returns the norm before clipping.</summary>
    public static double ClipGradNorm(IEnumerable<Parameter> parameters, double maxNorm)
    {
        var grads = parameters.Where(p => p.Grad != null).Select(p => p.Grad!).ToList();
        double norm = Math.Sqrt(Ops.SumOfSquares(grads));
        if (norm > maxNorm && norm > 0)
        {
            float scale = (float)(maxNorm / (norm + 1e-6));
            foreach (var g in grads) Ops.ScaleInPlace(g, scale);
        }
        return norm;
    }
}

/// <summary>torch.optim.AdamW: decoupled weight decay, bias correction; PyTorch's defaults.</summary>
public sealed class AdamW : Optimizer
{
    /// <summary>Decay rate of the first moment (exp_avg).</summary>
    public float Beta1 { get; }
    /// <summary>Decay rate of the second moment (exp_avg_sq).</summary>
    public float Beta2 { get; }
    /// <summary>Added to √v̂ in the denominator for stability.</summary>
    public float Eps { get; }
    /// <summary>Decoupled weight decay: each step first multiplies the weights by 1 − lr·WeightDecay.</summary>
    public float WeightDecay { get; }

    /// <summary>Defaults are PyTorch's (lr 1e-3, betas 0.9/0.999, eps 1e-8, weight decay 0.01).</summary>
    public AdamW(IEnumerable<Parameter> parameters, float lr = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0.01f)
        : this([new ParameterGroup("all", parameters.ToList())], lr, beta1, beta2, eps, weightDecay) { }

    /// <summary>AdamW over parameter groups: each group's rate is its scale × the base rate <paramref name="lr"/> (decoupled decay uses that rate too, as torch's).</summary>
    public AdamW(IEnumerable<ParameterGroup> groups, float lr = 1e-3f, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0.01f)
        : base(groups, lr)
    {
        Beta1 = beta1; Beta2 = beta2; Eps = eps; WeightDecay = weightDecay;
    }

    /// <inheritdoc/>
    protected override string[] StateSlots => ["exp_avg", "exp_avg_sq"];

    /// <inheritdoc/>
    protected override void Update(Parameter p, Tensor grad)
    {
        var s = StateOf(p);
        Ops.AdamWStep(p.Data, grad, s[0], s[1], LearningRateOf(p), Beta1, Beta2, Eps, WeightDecay, StepCount);
    }
}

/// <summary>torch.optim.SGD with momentum, dampening, weight decay and Nesterov.</summary>
public sealed class Sgd : Optimizer
{
    /// <summary>Momentum factor (0: plain SGD, no state).</summary>
    public float Momentum { get; }
    /// <summary>Dampening applied to the gradient in the momentum update.</summary>
    public float Dampening { get; }
    /// <summary>L2 penalty added to the gradient (coupled, as torch.optim.SGD's weight_decay).</summary>
    public float WeightDecay { get; }
    /// <summary>Whether to use Nesterov momentum.</summary>
    public bool Nesterov { get; }
    readonly HashSet<Parameter> _started = new(ReferenceEqualityComparer.Instance);

    /// <summary>Defaults are PyTorch's: no momentum, dampening or weight decay.</summary>
    public Sgd(IEnumerable<Parameter> parameters, float lr, float momentum = 0f, float dampening = 0f, float weightDecay = 0f, bool nesterov = false)
        : base(parameters, lr)
    {
        Momentum = momentum; Dampening = dampening; WeightDecay = weightDecay; Nesterov = nesterov;
    }

    /// <inheritdoc/>
    protected override string[] StateSlots => Momentum != 0f ? ["momentum_buffer"] : [];

    /// <inheritdoc/>
    protected override void Update(Parameter p, Tensor grad)
    {
        var buffer = Momentum != 0f ? StateOf(p)[0] : null;
        bool first = _started.Add(p);
        Ops.SgdStep(p.Data, grad, buffer, LearningRateOf(p), Momentum, Dampening, WeightDecay, Nesterov, first);
    }
}
