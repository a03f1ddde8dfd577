using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>LoRA-GA as PEFT does it: adapters started on the loss gradient's leading directions, the base keeping the residual.</summary>
public class LoraGaTests
{
    static readonly TransformerConfig Config = TinyModels.Config;
    static readonly LoraConfig Gradient = new() { R = 3, Alpha = 6, Init = LoraInit.LoraGa, LoraGaStableGamma = 9, TargetModules = ["q_proj", "v_proj", "fc1"] };

    static Dictionary<string, Tensor> Gradients(Seq2SeqTransformer model, int batches = 2)
    {
        var data = Enumerable.Range(0, batches).Select(i => TinyModels.CopyBatch(new Random(10 + i), 6)).ToList();
        return LoraGa.EstimateGradients(model, Gradient, batches, i => model.Loss(data[i], 0f));
    }

    // A matrix with a known, decaying spectrum plus noise: U·diag(s)·Vᵀ + ε.
    static float[] Decaying(int rows, int columns, int seed)
    {
        var rng = new Random(seed);
        var m = new float[rows * columns];
        for (int k = 0; k < Math.Min(rows, columns); k++)
        {
            double s = Math.Pow(0.7, k);
            var u = Enumerable.Range(0, rows).Select(_ => rng.NextDouble() - 0.5).ToArray();
            var v = Enumerable.Range(0, columns).Select(_ => rng.NextDouble() - 0.5).ToArray();
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < columns; j++) m[i * columns + j] += (float)(s * u[i] * v[j]);
        }
        return m;
    }

    [Theory]
    [InlineData(37, 53, 6)]
    [InlineData(61, 29, 4)]
    public void LeadingSingularTripletsMatchTheFullDecomposition(int rows, int columns, int k)
    {
        var m = Decaying(rows, columns, rows);
        var exact = Svd.Decompose(m, rows, columns);
        var lead = Svd.Leading(m, rows, columns, k);
        Assert.Equal(k, lead.K);
        for (int t = 0; t < k; t++)
        {
            Assert.True(Math.Abs(lead.S[t] - exact.S[t]) <= 1e-9 * exact.S[0], $"σ{t}: {lead.S[t]} vs {exact.S[t]}");
            // Singular vectors are defined up to sign: |⟨u, u'⟩| and |⟨v, v'⟩| must be 1.
            double du = 0, dv = 0;
            for (int i = 0; i < rows; i++) du += lead.U[i * k + t] * exact.U[i * exact.K + t];
            for (int j = 0; j < columns; j++) dv += lead.Vt[t * columns + j] * exact.Vt[t * columns + j];
            Assert.True(Math.Abs(Math.Abs(du) - 1) <= 1e-7 && Math.Abs(Math.Abs(dv) - 1) <= 1e-7, $"vector {t}: |⟨u,u'⟩| {Math.Abs(du)}, |⟨v,v'⟩| {Math.Abs(dv)}");
        }
        Assert.Throws<ArgumentException>(() => Svd.Leading(m, rows, columns, Math.Min(rows, columns) + 1));
    }

    // The point of LoRA-GA: the first gradient step of s·B·A, s·(B·ΔA + ΔB·A) ∝ B·Bᵀ·G + G·Aᵀ·A, is the best rank-2r
    // approximation of the full gradient G (scaled by ζ²), and the model's output does not move at initialisation.
    [Fact]
    public void TheFirstStepOfTheAdapterIsTheGradientsBestRank2rApproximationAndTheOutputIsKept()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(3), 6);
        var before = TinyModels.Logits(model, batch);
        var original = model.NamedParameters().Where(p => p.Name.EndsWith(".weight")).ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        var trainable = model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList();
        var gradients = Gradients(model);
        Assert.Equal(trainable, model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList());
        Assert.All(model.Parameters(), p => Assert.Null(p.Grad));
        Assert.Equal(LoraModel.TargetPaths(model, Gradient), gradients.Keys);   // q, v of every attention and fc1 of every layer: 8
        Assert.Equal(8, gradients.Count);
        var lora = LoraModel.Inject(model, Gradient, gradients: gradients);
        Assert.True(ResidualChecks.MaxRelativeDifference(before, TinyModels.Logits(model, batch)) <= 1e-4, "LoRA-GA init changed the output");
        foreach (var (path, adapter) in lora.AdapterWeights("default"))
        {
            var layer = lora.Layers[path];
            int outF = layer.BaseLayer.OutFeatures, inF = layer.BaseLayer.InFeatures, r = adapter.Rank;
            double zeta = Math.Pow(outF, 0.25) / Math.Sqrt(Gradient.LoraGaStableGamma);
            float[] g = gradients[path].ToArray(), a = adapter.A.Data.ToArray(), b = adapter.B.Data.ToArray();
            var svd = Svd.Decompose(g, outF, inF);
            var direction = new double[outF * inF];
            var best = new double[outF * inF];
            // B·Bᵀ·G + G·Aᵀ·A, in double, against ζ²·Σ_{k<2r} u_k·σ_k·v_kᵀ.
            for (int i = 0; i < outF; i++)
                for (int j = 0; j < inF; j++)
                {
                    double sum = 0, gaa = 0, t = 0;
                    for (int p = 0; p < outF; p++)
                    {
                        double bb = 0;
                        for (int k = 0; k < r; k++) bb += b[i * r + k] * b[p * r + k];
                        sum += bb * g[p * inF + j];
                    }
                    for (int q = 0; q < inF; q++)
                    {
                        double aa = 0;
                        for (int k = 0; k < r; k++) aa += a[k * inF + q] * a[k * inF + j];
                        gaa += g[i * inF + q] * aa;
                    }
                    for (int k = 0; k < 2 * r; k++) t += svd.U[i * svd.K + k] * svd.S[k] * svd.Vt[k * inF + j];
                    direction[i * inF + j] = sum + gaa;
                    best[i * inF + j] = zeta * zeta * t;
                }
            Reference.Close(best, direction.Select(x => (float)x).ToArray(), 1e-4, 1e-4, $"{path}: B·Bᵀ·G + G·Aᵀ·A vs ζ²·(G's rank-2r part)");
            ResidualChecks.ResidualRebuilds(original[path + ".weight"], layer, adapter, path);
            Assert.True(layer.Residual is { } res && res.Adapter == "default");
        }
        using (lora.DisableAdapters()) Assert.True(ResidualChecks.MaxRelativeDifference(before, TinyModels.Logits(model, batch)) <= 1e-4, "disabled LoRA-GA is not the base");
        // Disposing the model frees the initial factors kept beside the residual too (they are not parameters of the model).
        var kept = lora.Layers.Values.Select(l => l.Residual!.InitialA.Data).ToList();
        model.Dispose();
        Assert.All(kept, t => Assert.True(t.IsDisposed));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SavedAdapterIsConvertedToPlainLoraThatReproducesTheModelOnTheOriginalBase(bool dora)
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var batch = TinyModels.CopyBatch(new Random(4), 5);
        var baseOut = TinyModels.Logits(model, batch);
        var config = Gradient with { UseDora = dora };
        var lora = LoraModel.Inject(model, config, "task", gradients: Gradients(model));
        // DoRA's magnitude starts at the row norms of the original W (the residual plus the initial product).
        if (dora) Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, TinyModels.Logits(model, batch)) <= 1e-4, "DoRA + LoRA-GA init changed the output");
        ResidualChecks.Train(model, 3);
        var trained = TinyModels.Logits(model, batch);
        Assert.True(ResidualChecks.MaxRelativeDifference(baseOut, trained) > 1e-3, "training changed nothing: vacuous comparison");
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "task", dir);
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, AdapterFiles.ConfigFile)))!;
        Assert.Equal(6, (int)json["r"]!);
        Assert.True((bool)json["init_lora_weights"]!);
        Assert.Equal(dora, (bool)json["use_dora"]!);

        var onBase = ResidualChecks.OnAFreshBase(Config, dir, "task", batch);
        Assert.True(ResidualChecks.MaxRelativeDifference(trained, onBase) <= 1e-4, "converted LoRA-GA adapter on the original base differs");
    }

    [Fact]
    public void MissingGradientsTooHighARankAndAnUnconvertedPeftFileAreRefusedByName()
    {
        using var model = new Seq2SeqTransformer(Config, Device.Cpu);
        var none = Assert.Throws<ArgumentException>(() => LoraModel.Inject(model, Gradient));
        Assert.Contains("no gradient for 'encoder.layers.0.self_attn.q_proj'", none.Message);
        var gradients = Gradients(model);
        var weights = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        // Only fc1, the last target of each layer, is too wide: refused before q and v (which pass) are rewritten.
        var wide = Assert.Throws<ArgumentException>(() => LoraModel.Inject(model, Gradient with { RankPattern = new Dictionary<string, int> { ["fc1"] = 9 } }, gradients: gradients));
        Assert.Contains("needs 18 singular directions", wide.Message);
        Assert.Contains("fc1", wide.Message);
        var nan = new Dictionary<string, Tensor>(gradients);
        string last = LoraModel.TargetPaths(model, Gradient).Last();
        nan[last] = Tensor.FromArray(Enumerable.Repeat(float.NaN, (int)gradients[last].Length).ToArray(), gradients[last].ShapeArray(), Device.Cpu);
        var notFinite = Assert.Throws<ArgumentException>(() => LoraModel.Inject(model, Gradient, gradients: nan));
        Assert.Contains($"'{last}' holds NaN", notFinite.Message);
        Assert.DoesNotContain(model.NamedModules(), m => m.Module is LoraLinear);
        foreach (var (name, p) in model.NamedParameters()) Assert.Equal(weights[name], p.Data.ToArray());
        nan[last].Dispose();
        var gamma = Assert.Throws<ArgumentException>(() => (Gradient with { LoraGaStableGamma = 0 }).Validate());
        Assert.Contains("stable_gamma", gamma.Message);

        var config = JsonNode.Parse(AdapterFiles.ConfigJson(Gradient))!;
        Assert.Equal("lora_ga", (string?)config["init_lora_weights"]);
        Assert.Equal(9, (double)config["lora_ga_config"]!["stable_gamma"]!);
        var dir = Directory.CreateTempSubdirectory().FullName;
        File.WriteAllText(Path.Combine(dir, AdapterFiles.ConfigFile), config.ToJsonString());
        var refused = Assert.Throws<InvalidDataException>(() => AdapterFiles.ReadConfig(dir));
        Assert.Contains("init_lora_weights", refused.Message);
    }
}
