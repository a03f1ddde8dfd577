using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>One adapter's matrices: A [R, in] and B [out, R], with its scaling and dropout.</summary>
public sealed class LoraAdapter : Module
{
    /// <summary>lora_A [R, in]: projects the input down to the rank.</summary>
    public Parameter A { get; }
    /// <summary>lora_B [out, R]: projects back up; starts at zero.</summary>
    public Parameter B { get; }
    /// <summary>The rank R.</summary>
    public int Rank { get; }
    /// <summary>The factor the update B·A is multiplied by (alpha/r, or alpha/√r for rsLoRA).</summary>
    public float Scaling { get; internal set; }
    /// <summary>Dropout probability on the adapter's input while training.</summary>
    public float Dropout { get; internal set; }

    /// <summary>A fresh adapter for a Linear of <paramref name="inFeatures"/> → <paramref name="outFeatures"/>: A drawn per <paramref name="init"/> from <paramref name="seed"/>, B zero.</summary>
    public LoraAdapter(int inFeatures, int outFeatures, int rank, float scaling, float dropout, LoraInit init, ulong seed, Device device)
    {
        Rank = rank; Scaling = scaling; Dropout = dropout;
        var a = init == LoraInit.Gaussian
            ? TensorRandom.Normal([rank, inFeatures], 0f, 1f / rank, seed, device)
            : TensorRandom.KaimingUniform([rank, inFeatures], inFeatures, seed, device);
        // B = 0, so a fresh adapter leaves the model's output unchanged.
        A = RegisterParameter("lora_A", new Parameter("lora_A", a));
        B = RegisterParameter("lora_B", new Parameter("lora_B", Tensor.Zeros([outFeatures, rank], device)));
    }

    /// <summary>DoRA's lora_magnitude_vector m [out], or null for plain LoRA.</summary>
    public Parameter? Magnitude { get; private set; }

    /// <summary>Makes this a DoRA adapter with magnitude <paramref name="initial"/> [out] (taken over).</summary>
    internal void AddMagnitude(Tensor initial) =>
        Magnitude = RegisterParameter("lora_magnitude_vector", new Parameter("lora_magnitude_vector", initial));

    /// <summary>The adapter's trainable weights: A, B and, for DoRA, m.</summary>
    public IEnumerable<Parameter> Weights => Magnitude == null ? [A, B] : [A, B, Magnitude];

    /// <summary>Number of scalar weights in A, B and (DoRA) m.</summary>
    public long Count => A.Count + B.Count + (Magnitude?.Count ?? 0);
}

/// <summary>
/// loralib's layer: a frozen base Linear (W [out, in], b) plus named low-rank adapters.
/// y = x·Wᵀ + b + dropout(x)·Aᵀ·Bᵀ·scaling for the active adapter (<see cref="DoraLinear"/> for a DoRA adapter). Merging
/// folds the update into W so inference costs exactly what the base layer costs. After a PiSSA or LoRA-GA initialisation W
/// holds the residual and <see cref="Residual"/> what was taken out, which the layer adds back whenever that adapter is not applied.
/// </summary>
public sealed class LoraLinear : Module, ILayer
{
    readonly Dictionary<string, LoraAdapter> _adapters = new();
    readonly SeedSequence _dropoutSeeds;
    /// <summary>The wrapped Linear (frozen unless the config trains its bias), registered as <c>base_layer</c> like PEFT.</summary>
    public Linear BaseLayer { get; }
    /// <summary>The adapter applied in <see cref="Forward"/>, or null for none.</summary>
    public string? ActiveAdapter { get; internal set; }
    /// <summary>True inside <see cref="LoraModel"/>'s DisableAdapters block: the layer computes the base output only.</summary>
    public bool AdaptersDisabled { get; internal set; }
    /// <summary>The adapter whose product is currently folded into the base weight, if any.</summary>
    public string? MergedAdapter { get; private set; }
    /// <summary>Inside <see cref="LoraModel.MixedBatch"/>: the adapter of each sequence of the batch (null or "__base__": none).</summary>
    public IReadOnlyList<string?>? SequenceAdapters { get; internal set; }
    /// <summary>Set after a PiSSA or LoRA-GA initialisation: W is then the residual, and this holds what was taken out.</summary>
    public InitResidual? Residual { get; private set; }
    Tensor? _mergedNorm;   // DoRA: ‖W + s·B·A‖ before the merge, which unmerging divides by

    /// <summary>Wraps <paramref name="baseLayer"/> with no adapters yet; <paramref name="seed"/> seeds the adapters' dropout masks.</summary>
    public LoraLinear(Linear baseLayer, ulong seed)
    {
        BaseLayer = RegisterModule("base_layer", baseLayer);
        _dropoutSeeds = new SeedSequence(seed);
    }

    /// <summary>The adapters on this layer by name.</summary>
    public IReadOnlyDictionary<string, LoraAdapter> Adapters => _adapters;

    internal LoraAdapter AddAdapter(string name, int rank, float scaling, float dropout, LoraInit init, ulong seed, bool useDora = false,
        Tensor? gradient = null, float stableGamma = 16f)
    {
        if (_adapters.ContainsKey(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.");
        if (Residual != null) throw new InvalidOperationException($"This layer's weight is adapter '{Residual.Adapter}''s residual (its initialisation took part of it); another adapter would be trained against the wrong base.");
        bool rewrites = LoraConfig.Rewrites(init);
        if (rewrites && _adapters.Count > 0)
            throw new InvalidOperationException($"Adapter '{name}' (init {LoraConfig.InitName(init)}) would replace the weight that adapter(s) {string.Join(", ", _adapters.Keys)} on this layer were made for.");
        var adapter = new LoraAdapter(BaseLayer.InFeatures, BaseLayer.OutFeatures, rank, scaling, dropout, init, seed, BaseLayer.Weight.Device);
        try
        {
            if (init == LoraInit.Pissa) Residual = Nanolora.Lora.Pissa.Initialize(name, BaseLayer.Weight.Data, adapter);
            if (init == LoraInit.LoraGa)
                Residual = LoraGa.Initialize(name, BaseLayer.Weight.Data, gradient ?? throw new ArgumentException($"LoRA-GA adapter '{name}': no gradient for this layer."), adapter, stableGamma);
            // PEFT's DoRA init: m = ‖W + s·B·A‖ per row, so the fresh DoRA layer computes exactly the LoRA layer.
            if (useDora) adapter.AddMagnitude(DoraLinear.WeightNorm(BaseLayer.Weight.Data, adapter.A.Data, adapter.B.Data, scaling));
        }
        catch
        {
            adapter.Dispose();
            throw;
        }
        _adapters[name] = adapter;
        RegisterModule(name, adapter);
        return adapter;
    }

    internal void DeleteAdapter(string name)
    {
        if (MergedAdapter == name) throw new InvalidOperationException($"Adapter '{name}' is merged; unmerge it before deleting.");
        if (!_adapters.Remove(name, out var adapter)) throw new KeyNotFoundException($"No adapter '{name}' on this layer.");
        RemoveModule(name);
        adapter.Dispose();
        if (ActiveAdapter == name) ActiveAdapter = null;
        if (Residual?.Adapter == name) DropResidual(restore: true);
    }

    void DropResidual(bool restore)
    {
        if (restore) Residual!.Restore(BaseLayer.Weight.Data);
        Residual!.Dispose();
        Residual = null;
    }

    /// <summary>x [..., in] → [..., out]: the base output plus the active adapter's update (none when disabled, or when that adapter is merged).</summary>
    public Variable Forward(Variable x)
    {
        if (AdaptersDisabled && MergedAdapter != null)
            throw new InvalidOperationException($"Adapters are disabled but '{MergedAdapter}' is merged into the weight; unmerge it first.");
        if (SequenceAdapters != null)
        {
            if (Graph.IsEnabled) throw new InvalidOperationException("A mixed-adapter batch is for inference: run it inside Graph.NoGrad() (decoding and evaluation do).");
            return MixedBatch.Forward(this, x, BaseLayer.Forward(x), SequenceAdapters);
        }
        if (AdaptersDisabled || ActiveAdapter == null || MergedAdapter == ActiveAdapter)
        {
            // The base behaviour of a PiSSA layer is the original W = W_res + s·B0·A0, not the residual alone.
            return Residual == null || (MergedAdapter != null && MergedAdapter == ActiveAdapter && !AdaptersDisabled) ? BaseLayer.Forward(x)
                : LowRankLinear(x, null, BaseLayer.Weight, BaseLayer.Bias, Residual.InitialA, Residual.InitialB, Residual.Scaling);
        }
        var adapter = _adapters[ActiveAdapter];
        var h = adapter.Dropout > 0 && Training ? F.Dropout(x, adapter.Dropout, _dropoutSeeds.Next(), Training) : null;
        if (adapter.Magnitude != null)
            return DoraLinear.Forward(x, h, BaseLayer.Weight, BaseLayer.Bias, adapter.A, adapter.B, adapter.Magnitude, adapter.Scaling,
                DoraLinear.WeightNorm(BaseLayer.Weight.Data, adapter.A.Data, adapter.B.Data, adapter.Scaling));
        return LowRankLinear(x, h, BaseLayer.Weight, BaseLayer.Bias, adapter.A, adapter.B, adapter.Scaling);
    }

    /// <summary>
    /// y = x·Wᵀ + b + s·(h·Aᵀ)·Bᵀ as one graph node (h = dropout(x), or x itself when null). Only the rank-R
    /// product h·Aᵀ is kept for backward, and the low-rank term is accumulated straight into y, so an adapted
    /// layer costs one [N, R] activation more than the base layer, not three [N, out] ones.
    /// Backward: dlow = s·dy·B; dx = dy·W (+ dlow·A); dB = s·dyᵀ·low; dA = dlowᵀ·h; dW, db only if trainable. The
    /// base product and the rank-R one share a GEMM (<see cref="Ops.MatmulSumInto"/>) both ways, so y and dx are
    /// written once.
    /// </summary>
    public static Variable LowRankLinear(Variable x, Variable? h, Variable w, Variable? b, Variable a, Variable bMatrix, float s)
    {
        int inF = w.Dim(1), outF = w.Dim(0), rank = a.Dim(0);
        if (x.Dim(-1) != inF) throw new ArgumentException($"LoRA linear: input's last axis is {x.Dim(-1)} but the weight {w.Data.ShapeString} expects {inF}.");
        var outShape = x.Data.ShapeArray();
        outShape[^1] = outF;
        var y = Tensor.Empty(outShape, x.Device);
        Tensor low;
        using (var x2 = x.Data.Reshape(-1, inF))
        using (var h2 = (h ?? x).Data.Reshape(-1, inF))
        using (var y2 = y.Reshape(-1, outF))
        {
            if (b != null) Ops.BroadcastRowsInto(y2, b.Data);
            low = Ops.Matmul(h2, a.Data, false, true);                      // [N, R]
            // y = x·Wᵀ + s·low·Bᵀ (+ b) in one GEMM: the rank-R term rides along as R more reduction steps.
            Ops.MatmulSumInto(y2, x2, w.Data, true, low, bMatrix.Data, true, s, b != null ? 1f : 0f);
        }
        var inputs = new List<Variable> { x, w, a, bMatrix };
        if (h != null) inputs.Add(h);
        if (b != null) inputs.Add(b);
        return Graph.Record("lora_linear", y, inputs.ToArray(), Reads.AllInputs, dy =>
        {
            using var dy2 = dy.Reshape(-1, outF);
            using var x2 = x.Data.Reshape(-1, inF);
            using var h2 = (h ?? x).Data.Reshape(-1, inF);
            using var dlow = Tensor.Empty([dy2.Dim(0), rank], dy.Device);
            Ops.MatmulInto(dlow, dy2, bMatrix.Data, false, false, s, 0f);       // [N, R]
            if (x.RequiresGrad)
            {
                var dx = Tensor.Empty(x.Shape, x.Device);
                using (var dx2 = dx.Reshape(-1, inF))
                {
                    // dx = dy·W + dlow·A in one GEMM when the adapter reads x itself (no dropout).
                    if (h == null) Ops.MatmulSumInto(dx2, dy2, w.Data, false, dlow, a.Data, false);
                    else Ops.MatmulInto(dx2, dy2, w.Data);
                }
                Graph.Accumulate(x, dx);
            }
            if (h != null && h.RequiresGrad)
            {
                var dh = Tensor.Empty(h.Shape, h.Device);
                using (var dh2 = dh.Reshape(-1, inF)) Ops.MatmulInto(dh2, dlow, a.Data);
                Graph.Accumulate(h, dh);
            }
            if (w.RequiresGrad) Graph.Accumulate(w, Ops.Matmul(dy2, x2, true, false));
            if (b != null && b.RequiresGrad) Graph.Accumulate(b, Ops.SumTo(dy2, b.Shape));
            if (bMatrix.RequiresGrad)
            {
                var dB = Tensor.Empty(bMatrix.Shape, bMatrix.Device);
                Ops.MatmulInto(dB, dy2, low, true, false, s, 0f);
                Graph.Accumulate(bMatrix, dB);
            }
            if (a.RequiresGrad) Graph.Accumulate(a, Ops.Matmul(dlow, h2, true, false));
        }, low);
    }

    /// <summary>W += scaling·B·A (one matmul kernel on the device, accumulating into W).</summary>
    public void Merge(string name)
    {
        if (MergedAdapter != null)
            throw new InvalidOperationException($"Adapter '{MergedAdapter}' is already merged into this layer; merging twice would add it twice. Unmerge first.");
        var a = _adapters.TryGetValue(name, out var ad) ? ad : throw new KeyNotFoundException($"No adapter '{name}' to merge.");
        if (BaseLayer.Weight.Data.DType != DType.Float32)
            throw new InvalidOperationException($"Adapter '{name}' cannot be merged: the base weight {BaseLayer.Weight.Data.ShapeString} is stored in {BaseLayer.Weight.Data.DType} " +
                "(a 16-bit frozen base), and the merged sum would be rounded to its 8-bit mantissa. Load the base in float32 to merge.");
        if (a.Magnitude != null) _mergedNorm = DoraLinear.Merge(BaseLayer.Weight.Data, a.A.Data, a.B.Data, a.Magnitude.Data, a.Scaling);
        else Ops.MatmulInto(BaseLayer.Weight.Data, a.B.Data, a.A.Data, false, false, a.Scaling, 1f);
        MergedAdapter = name;
    }

    /// <summary>W −= scaling·B·A (DoRA: <see cref="DoraLinear.Unmerge"/>), restoring the base weight (to rounding).</summary>
    public void Unmerge()
    {
        if (MergedAdapter == null) throw new InvalidOperationException("No adapter is merged into this layer.");
        var a = _adapters[MergedAdapter];
        if (a.Magnitude != null)
        {
            DoraLinear.Unmerge(BaseLayer.Weight.Data, a.A.Data, a.B.Data, a.Magnitude.Data, a.Scaling, _mergedNorm!);
            _mergedNorm!.Dispose();
            _mergedNorm = null;
        }
        else Ops.MatmulInto(BaseLayer.Weight.Data, a.B.Data, a.A.Data, false, false, -a.Scaling, 1f);
        MergedAdapter = null;
    }

    /// <summary>
    /// Disposes the adapters and the base layer, and what is held outside them: the initial factors a PiSSA or LoRA-GA
    /// adapter keeps beside its residual, and a merged DoRA adapter's norm (they stayed in the ledger until the GC ran).
    /// </summary>
    public override void Dispose()
    {
        Residual?.Dispose();
        Residual = null;
        _mergedNorm?.Dispose();
        _mergedNorm = null;
        base.Dispose();
    }

    /// <summary>Detaches the base layer so it can replace this wrapper (merge-and-unload); adapters are disposed.</summary>
    internal Linear Unload()
    {
        // Unloading without the PiSSA adapter merged gives the original base back, not the residual.
        if (Residual != null) DropResidual(restore: MergedAdapter != Residual.Adapter);
        _mergedNorm?.Dispose();
        _mergedNorm = null;
        foreach (var (name, adapter) in _adapters) { RemoveModule(name); adapter.Dispose(); }
        _adapters.Clear();
        MergedAdapter = ActiveAdapter = null;
        RemoveModule("base_layer");
        return BaseLayer;
    }
}
