using Nanolora.Transformer;

namespace Nanolora.Lora;

/// <summary>How <see cref="LoraModel.AddWeightedAdapter"/> combines adapters (PEFT's <c>combination_type</c>); wᵢ are the weights, sᵢ the scalings.</summary>
public enum AdapterCombination
{
    /// <summary>
    /// PEFT's task arithmetic on the factors: A = Σ √(wᵢsᵢ)·Aᵢ, B = Σ √(wᵢsᵢ)·Bᵢ (a negative wᵢsᵢ puts its sign on A). Needs
    /// equal ranks. With more than one adapter B·A is not Σ wᵢsᵢ·Bᵢ·Aᵢ: the cross terms Bᵢ·Aⱼ remain.
    /// </summary>
    Linear,
    /// <summary>Concatenation: A = [w₁s₁·A₁; w₂s₂·A₂; …] (rows), B = [B₁ B₂ …] (columns); rank Σ rᵢ, and B·A = Σ wᵢsᵢ·Bᵢ·Aᵢ exactly.</summary>
    Cat,
    /// <summary>Δ = Σ wᵢsᵢ·Bᵢ·Aᵢ per layer, truncated SVD U·S·Vᵀ to the new rank: B = U·S, A = Vᵀ (exact at full rank).</summary>
    Svd,
}

public sealed partial class LoraModel
{
    /// <summary>
    /// PEFT's <c>add_weighted_adapter</c>: a new adapter <paramref name="newName"/> from existing ones, combined per layer as
    /// <paramref name="combination"/> says. It adapts the union of the inputs' layers (a layer an input lacks gets nothing from
    /// it) and is not made active. Its config has scaling exactly 1 on every layer — lora_alpha = r, or √r with rsLoRA (PEFT sets
    /// alpha = r even for rsLoRA, so its rsLoRA combinations come out √r too large) — and per-layer ranks in rank_pattern where
    /// they differ. Unlike PEFT, one adapter is combined as asked (PEFT switches to linear), an existing name is refused (PEFT
    /// returns silently), and inputs that train biases or modules_to_save are refused (PEFT drops those silently), as is DoRA.
    /// </summary>
    /// <param name="adapters">The adapters to combine (names of this model's adapters).</param>
    /// <param name="weights">One finite weight per adapter.</param>
    /// <param name="newName">The new adapter's name.</param>
    /// <param name="combination">How the factors combine.</param>
    /// <param name="svdRank">The new rank for <see cref="AdapterCombination.Svd"/> (null: the largest input rank at each layer).</param>
    public void AddWeightedAdapter(IReadOnlyList<string> adapters, IReadOnlyList<float> weights, string newName,
        AdapterCombination combination = AdapterCombination.Svd, int? svdRank = null)
    {
        const string what = "add_weighted_adapter";
        if (adapters.Count == 0) throw new ArgumentException($"{what}: no adapters to combine.");
        if (weights.Count != adapters.Count) throw new ArgumentException($"{what}: {weights.Count} weights for {adapters.Count} adapters; give one weight per adapter.");
        if (_configs.ContainsKey(newName)) throw new ArgumentException($"{what}: an adapter named '{newName}' already exists.");
        if (svdRank is < 1) throw new ArgumentException($"{what}: svd_rank is {svdRank}, expected at least 1.");
        if (svdRank != null && combination != AdapterCombination.Svd) throw new ArgumentException($"{what}: svd_rank applies to the svd combination, not {combination.ToString().ToLowerInvariant()}.");
        for (int i = 0; i < adapters.Count; i++)
        {
            if (!_configs.TryGetValue(adapters[i], out var c)) throw new KeyNotFoundException($"{what}: no adapter '{adapters[i]}'. Adapters: {string.Join(", ", _configs.Keys)}.");
            if (!float.IsFinite(weights[i])) throw new ArgumentException($"{what}: the weight of '{adapters[i]}' is {weights[i]}, expected a finite number.");
            if (c.Bias != LoraBias.None || c.ModulesToSave.Count > 0)
                throw new ArgumentException($"{what}: adapter '{adapters[i]}' trains bias '{c.Bias}' / modules_to_save [{string.Join(", ", c.ModulesToSave)}]; only LoRA matrices combine, so it needs bias none and no modules_to_save.");
        }

        // Plan and compute every layer before the model is touched, so a refusal leaves it as it was.
        var layers = new List<(string Path, LoraLinear Layer, int Rank, float[] A, float[] B)>();
        foreach (var (path, layer) in _layers)
        {
            var parts = new List<(string Name, LoraAdapter Adapter, float Weight)>();
            for (int i = 0; i < adapters.Count; i++)
                if (layer.Adapters.TryGetValue(adapters[i], out var adapter))
                {
                    RequirePlainLora(layer, path, adapters[i], what);
                    parts.Add((adapters[i], adapter, weights[i]));
                }
            if (parts.Count == 0) continue;
            if (combination == AdapterCombination.Linear && parts.FirstOrDefault(p => p.Adapter.Rank != parts[0].Adapter.Rank) is { Name: not null } odd)
                throw new ArgumentException($"{what}: the linear combination needs equal ranks, but at '{path}' adapter '{parts[0].Name}' has rank {parts[0].Adapter.Rank} and '{odd.Name}' rank {odd.Adapter.Rank}; use cat or svd.");
            int rank = combination switch
            {
                AdapterCombination.Linear => parts[0].Adapter.Rank,
                AdapterCombination.Cat => parts.Sum(p => p.Adapter.Rank),
                _ => svdRank ?? parts.Max(p => p.Adapter.Rank),
            };
            var input = parts.Select(p => (p.Adapter.A.Data.ToArray(), p.Adapter.B.Data.ToArray(), p.Adapter.Rank, (double)p.Weight * p.Adapter.Scaling)).ToList();
            int inF = layer.BaseLayer.InFeatures, outF = layer.BaseLayer.OutFeatures;
            var (a, b) = combination switch
            {
                AdapterCombination.Linear => CombineLinear(input, rank, inF, outF),
                AdapterCombination.Cat => CombineCat(input, rank, inF, outF),
                _ => CombineSvd(input, rank, inF, outF),
            };
            layers.Add((path, layer, rank, a, b));
        }

        var config = CombinedConfig(adapters, layers.Select(l => (l.Path, l.Rank)).ToList());
        AddAdapter(newName, config);
        foreach (var (path, layer, rank, a, b) in layers)
        {
            var target = layer.Adapters[newName];
            if (target.Rank != rank || target.Scaling != 1f)
            {
                DeleteAdapter(newName);
                throw new InvalidOperationException($"{what}: the combined config gives '{path}' rank {target.Rank} and scaling {target.Scaling}, expected rank {rank} and scaling 1.");
            }
            target.A.Data.CopyFrom(a);
            target.B.Data.CopyFrom(b);
        }
    }

    /// <summary>
    /// The combined adapter's config: the first input's dropout, rsLoRA flag, base and task; per-layer ranks with alpha chosen
    /// so every scaling is 1; and targets that select exactly <paramref name="layers"/> — the union of the inputs'
    /// target_modules when that selects them, else the layers' full paths.
    /// </summary>
    LoraConfig CombinedConfig(IReadOnlyList<string> adapters, IReadOnlyList<(string Path, int Rank)> layers)
    {
        var first = _configs[adapters[0]];
        float AlphaFor(int r) => first.UseRsLora ? MathF.Sqrt(r) : r;   // alpha/r or alpha/√r: exactly 1 in float either way
        int common = layers.GroupBy(l => l.Rank).OrderByDescending(g => g.Count()).ThenBy(g => g.Key).First().Key;
        var rankPattern = layers.Where(l => l.Rank != common).ToDictionary(l => l.Path, l => l.Rank);
        var config = new LoraConfig
        {
            R = common, Alpha = AlphaFor(common), Dropout = first.Dropout, UseRsLora = first.UseRsLora,
            RankPattern = rankPattern, AlphaPattern = rankPattern.ToDictionary(kv => kv.Key, kv => AlphaFor(kv.Value)),
            TargetModules = adapters.Distinct().SelectMany(a => _configs[a].TargetModules).Distinct().ToList(),
            BaseModelNameOrPath = first.BaseModelNameOrPath, TaskType = first.TaskType,
        };
        var wanted = layers.Select(l => l.Path).ToHashSet();
        var selected = Base.NamedModules()
            .Where(m => (m.Module is Linear || m.Module is LoraLinear) && !m.Name.EndsWith(".base_layer") && config.Targets(m.Name))
            .Select(m => m.Name).ToHashSet();
        return selected.SetEquals(wanted) ? config : config with { TargetModules = layers.Select(l => l.Path).ToList() };
    }

    /// <summary>Refuses an adapter slot that is more than plain LoRA (DoRA's magnitude vector, or any parameter besides lora_A and lora_B).</summary>
    internal static void RequirePlainLora(LoraLinear layer, string path, string adapter, string what)
    {
        var extra = layer.Adapters[adapter].NamedParameters().Select(p => p.Name).Where(n => n is not ("lora_A" or "lora_B"))
            .Concat(layer.NamedParameters().Select(p => p.Name).Where(n => n.Contains("magnitude") && n.Split('.').Contains(adapter)))
            .FirstOrDefault();
        if (extra != null)
            throw new NotSupportedException($"{what}: adapter '{adapter}' at '{path}' has parameter '{extra}' besides lora_A and lora_B (DoRA?); only plain LoRA adapters are supported.");
    }

    /// <summary>A and B of the linear combination: each factor weighted by √|wᵢsᵢ|, A carrying the sign.</summary>
    static (float[] A, float[] B) CombineLinear(List<(float[] A, float[] B, int Rank, double Ws)> parts, int rank, int inF, int outF)
    {
        var a = new double[rank * inF];
        var b = new double[outF * rank];
        foreach (var (pa, pb, _, ws) in parts)
        {
            double root = Math.Sqrt(Math.Abs(ws)), signed = Math.Sign(ws) * root;
            for (int i = 0; i < a.Length; i++) a[i] += signed * pa[i];
            for (int i = 0; i < b.Length; i++) b[i] += root * pb[i];
        }
        return (ToFloat(a), ToFloat(b));
    }

    /// <summary>A [Σr, in] stacks wᵢsᵢ·Aᵢ by rows; B [out, Σr] places the Bᵢ side by side.</summary>
    static (float[] A, float[] B) CombineCat(List<(float[] A, float[] B, int Rank, double Ws)> parts, int rank, int inF, int outF)
    {
        var a = new float[rank * inF];
        var b = new float[outF * rank];
        int offset = 0;
        foreach (var (pa, pb, r, ws) in parts)
        {
            for (int j = 0; j < r; j++)
                for (int k = 0; k < inF; k++) a[(offset + j) * inF + k] = (float)(ws * pa[j * inF + k]);
            for (int o = 0; o < outF; o++)
                for (int j = 0; j < r; j++) b[o * rank + offset + j] = pb[o * r + j];
            offset += r;
        }
        return (a, b);
    }

    /// <summary>Δ = Σ wᵢsᵢ·Bᵢ·Aᵢ in double, then B = U·S and A = Vᵀ over its top <paramref name="rank"/> singular values (zeros past min(out, in)).</summary>
    static (float[] A, float[] B) CombineSvd(List<(float[] A, float[] B, int Rank, double Ws)> parts, int rank, int inF, int outF)
    {
        var delta = new double[outF * inF];
        foreach (var (pa, pb, r, ws) in parts)
            for (int o = 0; o < outF; o++)
                for (int j = 0; j < r; j++)
                {
                    double bj = ws * pb[o * r + j];
                    if (bj == 0) continue;
                    for (int k = 0; k < inF; k++) delta[o * inF + k] += bj * pa[j * inF + k];
                }
        var svd = Svd.Decompose(delta, outF, inF);
        int keep = Math.Min(rank, svd.K);
        var a = new float[rank * inF];
        var b = new float[outF * rank];
        for (int j = 0; j < keep; j++)
        {
            for (int k = 0; k < inF; k++) a[j * inF + k] = (float)svd.Vt[j * inF + k];
            for (int o = 0; o < outF; o++) b[o * rank + j] = (float)(svd.U[o * svd.K + j] * svd.S[j]);
        }
        return (a, b);
    }

    static float[] ToFloat(double[] x) => Array.ConvertAll(x, v => (float)v);
}
