using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Lora;

/// <summary>
/// PiSSA (Meng et al. 2024, PEFT's <c>init_lora_weights="pissa"</c>): the adapter starts on W's principal subspace and the
/// base keeps the rest. With W = U·S·Vᵀ (exact, <see cref="Svd"/> in double): A = diag(√(S_r/s))·Vᵀ_r, B = U_r·diag(√(S_r/s)),
/// W_res = W − s·B·A, so s·B·A = U_r·S_r·Vᵀ_r and the model's output is unchanged at initialisation.
/// </summary>
public static class Pissa
{
    /// <summary>
    /// Sets <paramref name="adapter"/>'s A and B from the SVD of <paramref name="w"/> and replaces W by its residual, in
    /// place; returns what the layer must keep. Refused when the rank exceeds min(out, in) (there are only that many singular values).
    /// </summary>
    public static InitResidual Initialize(string adapterName, Tensor w, LoraAdapter adapter)
    {
        int outF = w.Dim(0), inF = w.Dim(1), r = adapter.Rank;
        if (r > Math.Min(outF, inF))
            throw new ArgumentException($"PiSSA: rank {r} exceeds min(out, in) = {Math.Min(outF, inF)} of the {outF} × {inF} weight, which has only that many singular values.");
        var svd = Svd.Decompose(w.ToArray(), outF, inF);
        var a = new float[(long)r * inF];
        var b = new float[(long)outF * r];
        for (int k = 0; k < r; k++)
        {
            // PEFT divides S by the scaling first, so that s·B·A = U_r·S_r·Vᵀ_r whatever alpha is.
            double root = Math.Sqrt(svd.S[k] / adapter.Scaling);
            for (int j = 0; j < inF; j++) a[(long)k * inF + j] = (float)(root * svd.Vt[(long)k * inF + j]);
            for (int i = 0; i < outF; i++) b[(long)i * r + k] = (float)(svd.U[(long)i * svd.K + k] * root);
        }
        return InitResidual.Take(adapterName, w, adapter, a, b);
    }

    /// <summary>
    /// PEFT's <c>path_initial_model_for_weight_conversion</c>: the trained update on the original base is
    /// s·(B·A − B0·A0) = s·[B, −B0]·[A; A0], a rank-2r LoRA: A' = [A; A0] [2R, in], B' = [B, −B0] [out, 2R] (row-major).
    /// </summary>
    public static (float[] A, float[] B) ConvertToLora(LoraAdapter adapter, InitResidual residual)
    {
        int r = adapter.Rank, inF = adapter.A.Data.Dim(1), outF = adapter.B.Data.Dim(0);
        float[] a = adapter.A.Data.ToArray(), a0 = residual.InitialA.Data.ToArray();
        float[] b = adapter.B.Data.ToArray(), b0 = residual.InitialB.Data.ToArray();
        var convertedA = new float[2L * r * inF];
        a.CopyTo(convertedA, 0);
        a0.CopyTo(convertedA, (long)r * inF);
        var convertedB = new float[(long)outF * 2 * r];
        for (int i = 0; i < outF; i++)
            for (int k = 0; k < r; k++)
            {
                convertedB[(long)i * 2 * r + k] = b[(long)i * r + k];
                convertedB[(long)i * 2 * r + r + k] = -b0[(long)i * r + k];
            }
        return (convertedA, convertedB);
    }

    /// <summary>
    /// The config of the converted adapter, as PEFT writes it: rank doubled, alpha doubled (×√2 with rsLoRA, so alpha/√r
    /// stays), rank_pattern doubled and alpha_pattern scaled the same way, init_lora_weights plain. The scaling of every
    /// module is unchanged. (PEFT doubles alpha_pattern even with rsLoRA, and so refuses that pair; scaling it by √2 keeps it right.)
    /// </summary>
    public static LoraConfig ConvertedConfig(LoraConfig c)
    {
        float alphaFactor = c.UseRsLora ? MathF.Sqrt(2f) : 2f;
        return c with
        {
            R = 2 * c.R,
            Alpha = c.Alpha * alphaFactor,
            RankPattern = c.RankPattern.ToDictionary(kv => kv.Key, kv => 2 * kv.Value),
            AlphaPattern = c.AlphaPattern.ToDictionary(kv => kv.Key, kv => kv.Value * alphaFactor),
            Init = LoraInit.KaimingUniform,
        };
    }
}
