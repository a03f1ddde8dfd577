using System.Text.Json;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>merge with several adapters (weighted combination) and finetune --loraplus-ratio, run in-process.</summary>
public class MergeCliTests
{
    /// <summary>An adapter on the shipped base with random B in ±<paramref name="scale"/>, saved to a fresh folder; returns the folder.</summary>
    internal static string SavedAdapter(int rank, int seed, string[] targets, float scale = 0.05f)
    {
        var (model, _) = Checkpoint.Load(CliTests.ShippedBase(), Device.Cpu);
        using var _ = model;
        var lora = LoraModel.Inject(model, new LoraConfig { R = rank, Alpha = 2 * rank, TargetModules = targets }, "x", (ulong)seed);
        foreach (var (_, a) in lora.AdapterWeights("x")) a.B.Data.CopyFrom(Reference.Random((int)a.B.Count, seed++, -scale, scale));
        var dir = Directory.CreateTempSubdirectory().FullName;
        AdapterFiles.Save(lora, "x", dir);
        return dir;
    }

    [Fact]
    public void MergeCombinesWeightedAdaptersIntoTheCheckpoint()
    {
        string one = SavedAdapter(2, 10, ["q_proj"]), two = SavedAdapter(3, 20, ["q_proj", "v_proj"]);
        var outDir = Path.Combine(Directory.CreateTempSubdirectory().FullName, "merged");
        var adapterDir = Path.Combine(Directory.CreateTempSubdirectory().FullName, "combined");
        var (code, output, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--weights", "0.7,0.3",
            "--combination", "cat", "--device", "cpu", "--out", outDir, "--save-adapter", adapterDir);
        Assert.True(code == 0, err);
        Assert.Contains("cat-combined (weights 0.7, 0.3)", output);

        // The merged checkpoint is the base plus 0.7·Δ₁ + 0.3·Δ₂, exactly what applying both adapters' weighted deltas gives.
        var (expected, _) = Checkpoint.Load(CliTests.ShippedBase(), Device.Cpu);
        using var __ = expected;
        var lora = LoraModel.For(expected);
        AdapterFiles.Load(lora, one, "one");
        AdapterFiles.Load(lora, two, "two");
        var (merged, _) = Checkpoint.Load(outDir, Device.Cpu);
        using var ___ = merged;
        var mergedWeights = merged.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
        foreach (var (path, layer) in lora.Layers)
        {
            var w = layer.BaseLayer.Weight.Data.ToArray().Select(x => (double)x).ToArray();
            int inF = layer.BaseLayer.InFeatures;
            foreach (var (name, weight) in new[] { ("one", 0.7), ("two", 0.3) })
            {
                if (!layer.Adapters.TryGetValue(name, out var ad)) continue;
                float[] a = ad.A.Data.ToArray(), b = ad.B.Data.ToArray();
                for (int o = 0; o < layer.BaseLayer.OutFeatures; o++)
                    for (int j = 0; j < ad.Rank; j++)
                        for (int k = 0; k < inF; k++) w[o * inF + k] += weight * ad.Scaling * b[o * ad.Rank + j] * a[j * inF + k];
            }
            Reference.Close(w, mergedWeights[path + ".weight"], 1e-6, 1e-5, path);
        }
        // The combined adapter itself: rank 2 + 3 on q_proj, 3 on v_proj, scaling 1.
        var config = AdapterFiles.ReadConfig(adapterDir);
        Assert.Equal(1f, config.ScalingFor("encoder.layers.0.self_attn.q_proj"));
        Assert.Equal(5, config.RankFor("encoder.layers.0.self_attn.q_proj"));
        Assert.Equal(3, config.RankFor("encoder.layers.0.self_attn.v_proj"));

        // Refusals: one line each, naming the option.
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--weights", "0.7", "--combination", "cat", "--out", outDir + "2");
        Assert.Equal(1, code);
        Assert.Contains("--weights has 1 value but there are 2 --adapter folders", err);
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--combination", "ties", "--out", outDir + "2");
        Assert.Equal(1, code);
        Assert.Contains("--combination is 'ties'; allowed: linear, cat, svd", err);
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--out", outDir + "2");
        Assert.Equal(1, code);
        Assert.Contains("need --combination", err);
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--combination", "linear", "--device", "cpu", "--out", outDir + "2");
        Assert.Equal(1, code);
        Assert.Contains("equal ranks", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        (code, _, err) = CliTests.Run("merge", "--model", CliTests.ShippedBase(), "--adapter", one, "--adapter", two, "--combination", "cat", "--device", "cpu", "--out", outDir);
        Assert.Equal(1, code);
        Assert.Contains("--overwrite", err);   // the merged checkpoint is not replaced silently
    }

    [Fact]
    public void FinetuneRecordsTheLoraPlusRatio()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (code, output, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "1", "--batch-size", "2", "--train-examples", "4",
            "--loraplus-ratio", "16", "--device", "cpu", "--out", dir, "--overwrite", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(16f, doc.RootElement.GetProperty("loraplus_lr_ratio").GetSingle());
        (code, _, err) = CliTests.Run("finetune", "--method", "full", "--model", CliTests.ShippedBase(), "--steps", "1", "--loraplus-ratio", "16",
            "--device", "cpu", "--out", Directory.CreateTempSubdirectory().FullName);
        Assert.Equal(1, code);
        Assert.Contains("needs method lora", err);
    }

    [Fact]
    public void FinetuneRecordsTheRiemannianPreconditioner()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (code, output, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "1", "--batch-size", "2", "--train-examples", "4",
            "--riemannian", "--device", "cpu", "--out", dir, "--overwrite", "--json");
        Assert.True(code == 0, err);
        using var doc = JsonDocument.Parse(output);
        Assert.Equal(0.01f, doc.RootElement.GetProperty("riemannian_reg").GetSingle());
        // The same run without it trains other weights: the preconditioner reached the optimizer (B starts at zero, so its
        // first step's gradient only moves B; the second step's A gradient is then rescaled by (BᵀB + reg·I)⁻¹).
        var plain = Directory.CreateTempSubdirectory().FullName;
        (code, _, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "2", "--batch-size", "2", "--train-examples", "4",
            "--device", "cpu", "--out", plain, "--overwrite");
        Assert.True(code == 0, err);
        var twoSteps = Directory.CreateTempSubdirectory().FullName;
        (code, _, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "2", "--batch-size", "2", "--train-examples", "4",
            "--riemannian", "--device", "cpu", "--out", twoSteps, "--overwrite");
        Assert.True(code == 0, err);
        Assert.NotEqual(File.ReadAllBytes(Path.Combine(plain, "adapter_model.safetensors")), File.ReadAllBytes(Path.Combine(twoSteps, "adapter_model.safetensors")));
        (code, _, err) = CliTests.Run("finetune", "--method", "full", "--model", CliTests.ShippedBase(), "--steps", "1", "--riemannian",
            "--device", "cpu", "--out", Directory.CreateTempSubdirectory().FullName);
        Assert.Equal(1, code);
        Assert.Contains("--riemannian preconditions LoRA adapters", err);
        Assert.Single(err.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        (code, _, err) = CliTests.Run("finetune", "--model", CliTests.ShippedBase(), "--steps", "1", "--riemannian-reg", "0.1",
            "--device", "cpu", "--out", Directory.CreateTempSubdirectory().FullName);
        Assert.Equal(1, code);
        Assert.Contains("give --riemannian too", err);
    }
}
