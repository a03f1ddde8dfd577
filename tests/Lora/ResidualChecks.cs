using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>Checks shared by the tests of initialisations that leave the base weight a residual (PiSSA, LoRA-GA) and DoRA's.</summary>
static class ResidualChecks
{
    /// <summary>max |expected − actual| over max |expected|.</summary>
    public static double MaxRelativeDifference(float[] expected, float[] actual)
    {
        double scale = expected.Max(x => Math.Abs((double)x));
        return expected.Zip(actual).Max(p => Math.Abs(p.First - p.Second)) / scale;
    }

    /// <summary>s·B·A of <paramref name="adapter"/>, [out, in] row-major, summed in double.</summary>
    public static float[] Product(LoraAdapter adapter)
    {
        float[] a = adapter.A.Data.ToArray(), b = adapter.B.Data.ToArray();
        int r = adapter.Rank, inF = adapter.A.Data.Dim(1), outF = adapter.B.Data.Dim(0);
        var product = new float[outF * inF];
        for (int i = 0; i < outF; i++)
            for (int j = 0; j < inF; j++)
            {
                double ba = 0;
                for (int k = 0; k < r; k++) ba += b[i * r + k] * a[k * inF + j];
                product[i * inF + j] = (float)(adapter.Scaling * ba);
            }
        return product;
    }

    /// <summary>The layer's base weight (the residual) plus s·B·A gives back the original <paramref name="w"/>, to fp32 rounding.</summary>
    public static void ResidualRebuilds(float[] w, LoraLinear layer, LoraAdapter adapter, string path) =>
        Reference.Close(w, layer.BaseLayer.Weight.Data.ToArray().Zip(Product(adapter), (x, y) => x + y).ToArray(), 1e-5, 1e-5, $"{path}: W_res + s·B·A vs W");

    /// <summary>The logits of a fresh base of <paramref name="config"/> (the original weights) with the adapter saved in
    /// <paramref name="dir"/> loaded as <paramref name="name"/>: a converted adapter must reproduce the trained model there.</summary>
    public static float[] OnAFreshBase(TransformerConfig config, string dir, string name, Batch batch)
    {
        using var fresh = new Seq2SeqTransformer(config, Device.Cpu);
        var plain = LoraModel.For(fresh);
        AdapterFiles.Load(plain, dir, name);
        plain.SetActiveAdapter(name);
        Assert.All(plain.Layers.Values, l => Assert.Null(l.Residual));
        return TinyModels.Logits(fresh, batch);
    }

    /// <summary>A few AdamW steps (lr 1e-2) on copy batches: enough to move the adapters measurably.</summary>
    public static void Train(Seq2SeqTransformer model, int steps)
    {
        using var optimizer = new Nanolora.Autograd.AdamW(model.TrainableParameters(), 1e-2f);
        var rng = new Random(2);
        for (int i = 0; i < steps; i++) TinyModels.Step(model, optimizer, TinyModels.CopyBatch(rng, 8));
    }
}
