using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>One adapter's matrices: A [R, in] and B [out, R], with its scaling and dropout.</summary>
public sealed class LoraAdapter : Module
{
    public Parameter A { get; }
    public Parameter B { get; }
    public int Rank { get; }
    public float Scaling { get; }
    public float Dropout { get; }

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

    public long Count => A.Count + B.Count;
}

/// <summary>
/// loralib's layer: a frozen base Linear (W [out, in], b) plus named low-rank adapters.
/// y = x·Wᵀ + b + dropout(x)·Aᵀ·Bᵀ·scaling for the active adapter. Merging folds B·A·scaling into W
/// so inference costs exactly what the base layer costs.
/// </summary>
public sealed class LoraLinear : Module, ILayer
{
    readonly Dictionary<string, LoraAdapter> _adapters = new();
    readonly SeedSequence _dropoutSeeds;
    public Linear BaseLayer { get; }
    public string? ActiveAdapter { get; internal set; }
    public bool AdaptersDisabled { get; internal set; }
    /// <summary>The adapter whose product is currently folded into the base weight, if any.</summary>
    public string? MergedAdapter { get; private set; }

    public LoraLinear(Linear baseLayer, ulong seed)
    {
        BaseLayer = RegisterModule("base_layer", baseLayer);
        _dropoutSeeds = new SeedSequence(seed);
    }

    public IReadOnlyDictionary<string, LoraAdapter> Adapters => _adapters;

    internal LoraAdapter AddAdapter(string name, int rank, float scaling, float dropout, LoraInit init, ulong seed)
    {
        if (_adapters.ContainsKey(name)) throw new ArgumentException($"Adapter '{name}' already exists on this layer.");
        var adapter = new LoraAdapter(BaseLayer.InFeatures, BaseLayer.OutFeatures, rank, scaling, dropout, init, seed, BaseLayer.Weight.Device);
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
    }

    public Variable Forward(Variable x)
    {
        var y = BaseLayer.Forward(x);
        if (AdaptersDisabled && MergedAdapter != null)
            throw new InvalidOperationException($"Adapters are disabled but '{MergedAdapter}' is merged into the weight; unmerge it first.");
        if (AdaptersDisabled || ActiveAdapter == null || MergedAdapter == ActiveAdapter) return y;
        var adapter = _adapters[ActiveAdapter];
        var h = F.Dropout(x, adapter.Dropout, _dropoutSeeds.Next(), Training);
        // Scaling the rank-R intermediate instead of the [..., out] result saves one full-width activation.
        var low = F.Scale(F.Linear(h, adapter.A, null), adapter.Scaling);   // [..., R]
        var delta = F.Linear(low, adapter.B, null);                          // [..., out]
        return F.Add(y, delta);
    }

    /// <summary>W += scaling·B·A (one matmul kernel on the device, accumulating into W).</summary>
    public void Merge(string name)
    {
        if (MergedAdapter != null)
            throw new InvalidOperationException($"Adapter '{MergedAdapter}' is already merged into this layer; merging twice would add it twice. Unmerge first.");
        var a = _adapters.TryGetValue(name, out var ad) ? ad : throw new KeyNotFoundException($"No adapter '{name}' to merge.");
        Ops.MatmulInto(BaseLayer.Weight.Data, a.B.Data, a.A.Data, false, false, a.Scaling, 1f);
        MergedAdapter = name;
    }

    /// <summary>W −= scaling·B·A, restoring the base weight (to rounding).</summary>
    public void Unmerge()
    {
        if (MergedAdapter == null) throw new InvalidOperationException("No adapter is merged into this layer.");
        var a = _adapters[MergedAdapter];
        Ops.MatmulInto(BaseLayer.Weight.Data, a.B.Data, a.A.Data, false, false, -a.Scaling, 1f);
        MergedAdapter = null;
    }

    /// <summary>Detaches the base layer so it can replace this wrapper (merge-and-unload); adapters are disposed.</summary>
    internal Linear Unload()
    {
        foreach (var (name, adapter) in _adapters) { RemoveModule(name); adapter.Dispose(); }
        _adapters.Clear();
        MergedAdapter = ActiveAdapter = null;
        RemoveModule("base_layer");
        return BaseLayer;
    }
}
