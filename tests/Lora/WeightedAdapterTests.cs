using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>PEFT's add_weighted_adapter: linear, cat and svd, checked against the weighted sum of the deltas.</summary>
public class WeightedAdapterTests
{
    static readonly TransformerConfig Config = TinyModels.Config;

    static Batch Data() => TinyModels.CopyBatch(new Random(3), 6);

    /// <summary>Gives adapter <paramref name="name"/> random (trained-looking) A and B.</summary>
    static void Randomize(LoraModel lora, string name, int seed)
    {
        foreach (var (_, a) in lora.AdapterWeights(name))
        {
            a.A.Data.CopyFrom(Reference.Random((int)a.A.Count, seed++, -0.4f, 0.4f));
            a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -0.3f, 0.3f));
        }
    }

    /// <summary>W + Σ wᵢsᵢ·Bᵢ·Aᵢ for every wrapped layer, in double, by module path.</summary>
    static Dictionary<string, double[]> ExpectedWeights(LoraModel lora, string[] adapters, float[] weights)
    {
        var result = new Dictionary<string, double[]>();
        foreach (var (path, layer) in lora.Layers)
        {
            int outF = layer.BaseLayer.OutFeatures, inF = layer.BaseLayer.InFeatures;
            var w = layer.BaseLayer.Weight.Data.ToArray().Select(x => (double)x).ToArray();
            for (int i = 0; i < adapters.Length; i++)
            {
                if (!layer.Adapters.TryGetValue(adapters[i], out var ad)) continue;
                float[] a = ad.A.Data.ToArray(), b = ad.B.Data.ToArray();
                for (int o = 0; o < outF; o++)
                    for (int j = 0; j < ad.Rank; j++)
                        for (int k = 0; k < inF; k++) w[o * inF + k] += (double)weights[i] * ad.Scaling * b[o * ad.Rank + j] * a[j * inF + k];
            }
            result[path] = w;
        }
        return result;
    }

    static void AssertMergedWeights(LoraModel lora, Dictionary<string, double[]> expected, string what)
    {
        foreach (var (path, w) in expected)
            Reference.Close(w, lora.Layers[path].BaseLayer.Weight.Data.ToArray(), 2e-6, 1e-5, $"{what}: {path}");
    }

    [Theory]
    [InlineData(AdapterCombination.Linear, false)]
    [InlineData(AdapterCombination.Cat, false)]
    [InlineData(AdapterCombination.Svd, false)]
    [InlineData(AdapterCombination.Linear, true)]
    [InlineData(AdapterCombination.Cat, true)]
    [InlineData(AdapterCombination.Svd, true)]
    public void OneAdapterWithWeightOneReproducesItself(AdapterCombination how, bool rsLora)
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 12, UseRsLora = rsLora, TargetModules = ["q_proj", "v_proj", "fc1"] }, "task");
        Randomize(lora, "task", 10);
        var batch = Data();
        var expected = TinyModels.Logits(model, batch);
        lora.AddWeightedAdapter(["task"], [1f], "combo", how);   // svd: rank 4 by default, the full rank of a rank-4 update
        lora.SetActiveAdapter("combo");
        Reference.Close(expected, TinyModels.Logits(model, batch), 1e-5, 1e-5, $"{how}, rsLoRA {rsLora}");
        Assert.All(lora.AdapterWeights("combo"), x => Assert.Equal(1f, x.Adapter.Scaling));
        Assert.Equal(rsLora, lora.Adapters["combo"].UseRsLora);
        Assert.Equal(rsLora ? 2f : 4f, lora.Adapters["combo"].Alpha);   // scaling alpha/√r or alpha/r = 1 at r 4
    }

    [Fact]
    public void CatAndFullRankSvdEqualTheWeightedSumOfDeltas()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(model);
        // Different ranks, scalings (one rsLoRA) and targets: the union is q_proj, v_proj and fc1.
        lora.AddAdapter("a", new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj", "v_proj"] });
        lora.AddAdapter("b", new LoraConfig { R = 3, Alpha = 5, UseRsLora = true, TargetModules = ["q_proj", "fc1"] }, seed: 2);
        Randomize(lora, "a", 20);
        Randomize(lora, "b", 200);
        string[] names = ["a", "b"];
        float[] weights = [0.7f, -0.3f];
        var expected = ExpectedWeights(lora, names, weights);

        lora.AddWeightedAdapter(names, weights, "cat", AdapterCombination.Cat);
        var attention = lora.Layers["encoder.layers.0.self_attn.q_proj"].Adapters["cat"];
        Assert.Equal(5, attention.Rank);                                                   // 2 + 3 where both adapt
        Assert.Equal(2, lora.Layers["encoder.layers.0.self_attn.v_proj"].Adapters["cat"].Rank);
        Assert.Equal(3, lora.Layers["encoder.layers.0.ffn.fc1"].Adapters["cat"].Rank);
        Assert.Equal(lora.Layers.Count, lora.AdapterWeights("cat").Count());                // the union of the targets
        lora.SetActiveAdapter("cat");
        lora.Merge();
        AssertMergedWeights(lora, expected, "cat");
        lora.Unmerge();

        lora.AddWeightedAdapter(names, weights, "svd", AdapterCombination.Svd, svdRank: 5);
        lora.SetActiveAdapter("svd");
        lora.Merge();
        AssertMergedWeights(lora, expected, "svd at rank 5");
        lora.Unmerge();

        // A truncated svd keeps the largest singular directions: rank 1 is no longer the sum.
        lora.AddWeightedAdapter(names, weights, "svd1", AdapterCombination.Svd, svdRank: 1);
        Assert.All(lora.AdapterWeights("svd1"), x => Assert.Equal(1, x.Adapter.Rank));
    }

    [Fact]
    public void CombinedAdapterSavesAndLoadsWithItsPerLayerRanks()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(model);
        lora.AddAdapter("a", new LoraConfig { R = 2, TargetModules = ["q_proj", "v_proj"] });
        lora.AddAdapter("b", new LoraConfig { R = 3, UseRsLora = true, TargetModules = ["q_proj", "fc1"] }, seed: 2);
        Randomize(lora, "a", 30);
        Randomize(lora, "b", 300);
        lora.AddWeightedAdapter(["a", "b"], [0.5f, 2f], "cat", AdapterCombination.Cat);
        lora.SetActiveAdapter("cat");
        var batch = Data();
        var expected = TinyModels.Logits(model, batch);
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "cat", dir);

        using var fresh = new Seq2SeqTransformer(Config, Device.Cpu);
        var loaded = LoraModel.For(fresh);
        AdapterFiles.Load(loaded, dir, "cat");
        loaded.SetActiveAdapter("cat");
        Reference.Close(expected, TinyModels.Logits(fresh, batch), 1e-6, 1e-6, "reloaded cat adapter");
        Assert.Equal(["q_proj", "v_proj", "fc1"], loaded.Adapters["cat"].TargetModules);
        Assert.All(loaded.AdapterWeights("cat"), x => Assert.Equal(1f, x.Adapter.Scaling));
    }

    [Fact]
    public void LinearCombinesTheFactorsWithRootWeights()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(model);
        lora.AddAdapter("a", new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj"] });
        lora.AddAdapter("b", new LoraConfig { R = 2, Alpha = 2, TargetModules = ["q_proj"] }, seed: 3);
        Randomize(lora, "a", 40);
        Randomize(lora, "b", 400);
        lora.AddWeightedAdapter(["a", "b"], [0.5f, 3f], "lin", AdapterCombination.Linear);
        var layer = lora.Layers["decoder.layers.0.self_attn.q_proj"];
        double ca = Math.Sqrt(0.5 * 2), cb = Math.Sqrt(3.0 * 1);   // √(w·s): scalings 4/2 and 2/2
        float[] aA = layer.Adapters["a"].A.Data.ToArray(), bA = layer.Adapters["b"].A.Data.ToArray();
        float[] aB = layer.Adapters["a"].B.Data.ToArray(), bB = layer.Adapters["b"].B.Data.ToArray();
        Reference.Close(aA.Zip(bA, (x, y) => ca * x + cb * y).ToArray(), layer.Adapters["lin"].A.Data.ToArray(), 1e-6, 1e-6, "A");
        Reference.Close(aB.Zip(bB, (x, y) => ca * x + cb * y).ToArray(), layer.Adapters["lin"].B.Data.ToArray(), 1e-6, 1e-6, "B");
    }

    [Fact]
    public void RefusalsNameTheProblemAndLeaveTheModelAlone()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var lora = LoraModel.For(model);
        lora.AddAdapter("a", new LoraConfig { R = 2, TargetModules = ["q_proj"] });
        lora.AddAdapter("b", new LoraConfig { R = 4, TargetModules = ["q_proj"] });
        var e = Assert.Throws<ArgumentException>(() => lora.AddWeightedAdapter(["a", "b"], [1f, 1f], "lin", AdapterCombination.Linear));
        Assert.Contains("equal ranks", e.Message);
        Assert.Contains("rank 2", e.Message);
        Assert.Contains("rank 4", e.Message);
        Assert.Contains("q_proj", e.Message);
        Assert.Contains("2 weights for 1 adapters", Assert.Throws<ArgumentException>(() => lora.AddWeightedAdapter(["a"], [1f, 2f], "x")).Message);
        Assert.Contains("no adapter 'c'", Assert.Throws<KeyNotFoundException>(() => lora.AddWeightedAdapter(["a", "c"], [1f, 1f], "x")).Message);
        Assert.Contains("already exists", Assert.Throws<ArgumentException>(() => lora.AddWeightedAdapter(["a"], [1f], "b")).Message);
        Assert.Contains("svd_rank", Assert.Throws<ArgumentException>(() => lora.AddWeightedAdapter(["a"], [1f], "x", AdapterCombination.Cat, 3)).Message);
        lora.AddAdapter("biased", new LoraConfig { R = 2, TargetModules = ["q_proj"], Bias = LoraBias.LoraOnly });
        Assert.Contains("bias 'LoraOnly'", Assert.Throws<ArgumentException>(() => lora.AddWeightedAdapter(["a", "biased"], [1f, 1f], "x", AdapterCombination.Cat)).Message);
        Assert.Equal(["a", "b", "biased"], lora.Adapters.Keys.Order());
    }
}
