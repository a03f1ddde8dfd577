using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>Riemannian preconditioned LoRA (PEFT's create_riemannian_optimizer): r × r preconditioners on A's and B's gradients.</summary>
public class RiemannianPreconditionerTests
{
    const int In = 7, Out = 5, R = 3;

    /// <summary>A one-layer LoRA model (r = 3, α = 6) with A and B set to the given values (B ≠ 0, so A has a gradient).</summary>
    static (OneLinear Model, LoraAdapter Adapter) Model(float[] a, float[] b)
    {
        var m = new OneLinear(In, Out, Device.Cpu);
        var lora = LoraModel.Inject(m, new LoraConfig { R = R, Alpha = 6, TargetModules = ["q_proj"] });
        var adapter = lora.Layers["q_proj"].Adapters["default"];
        adapter.A.Data.CopyFrom(a);
        adapter.B.Data.CopyFrom(b);
        return (m, adapter);
    }

    static void Backward(OneLinear m)
    {
        var x = Variable.Constant(Tensor.FromArray(Reference.Random(4 * In, 9), [4, In], Device.Cpu));
        TinyModels.WeightedSum(m.Forward(x)).Backward();
    }

    /// <summary>Solves M·X = Y for the n × n matrix M by Gauss-Jordan elimination with partial pivoting, in double.</summary>
    static double[] Solve(double[] m, double[] y, int n, int cols)
    {
        var a = (double[])m.Clone();
        var x = (double[])y.Clone();
        for (int c = 0; c < n; c++)
        {
            int p = Enumerable.Range(c, n - c).MaxBy(i => Math.Abs(a[i * n + c]));
            for (int k = 0; k < n; k++) (a[c * n + k], a[p * n + k]) = (a[p * n + k], a[c * n + k]);
            for (int k = 0; k < cols; k++) (x[c * cols + k], x[p * cols + k]) = (x[p * cols + k], x[c * cols + k]);
            for (int i = 0; i < n; i++)
            {
                if (i == c) continue;
                double f = a[i * n + c] / a[c * n + c];
                for (int k = 0; k < n; k++) a[i * n + k] -= f * a[c * n + k];
                for (int k = 0; k < cols; k++) x[i * cols + k] -= f * x[c * cols + k];
            }
        }
        for (int c = 0; c < n; c++)
            for (int k = 0; k < cols; k++) x[c * cols + k] /= a[c * n + c];
        return x;
    }

    /// <summary>FᵀF (F rows × cols, <paramref name="transpose"/>) or F·Fᵀ, plus reg on the diagonal, in double.</summary>
    static double[] DampedGram(float[] f, int rows, int cols, bool transpose, double reg)
    {
        int n = transpose ? cols : rows, len = transpose ? rows : cols;
        var g = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            {
                double s = i == j ? reg : 0;
                for (int k = 0; k < len; k++)
                    s += transpose ? (double)f[k * cols + i] * f[k * cols + j] : (double)f[i * cols + k] * f[j * cols + k];
                g[i * n + j] = s;
            }
        return g;
    }

    /// <summary>The reference: g_A ← (BᵀB + reg·I)⁻¹·g_A and g_B ← g_B·(AAᵀ + reg·I)⁻¹ (= ((AAᵀ + reg·I)⁻¹·g_Bᵀ)ᵀ), in double.</summary>
    static (double[] GA, double[] GB) Expected(float[] a, float[] b, float[] ga, float[] gb, double reg)
    {
        var newA = Solve(DampedGram(b, Out, R, transpose: true, reg), ga.Select(v => (double)v).ToArray(), R, In);
        var gbT = new double[R * Out];
        for (int i = 0; i < Out; i++) for (int k = 0; k < R; k++) gbT[k * Out + i] = gb[i * R + k];
        var solved = Solve(DampedGram(a, R, In, transpose: false, reg), gbT, R, Out);
        var newB = new double[Out * R];
        for (int i = 0; i < Out; i++) for (int k = 0; k < R; k++) newB[i * R + k] = solved[k * Out + i];
        return (newA, newB);
    }

    [Theory]
    [InlineData(1e-2)]
    [InlineData(1e-5)]
    public void GradientsAreMultipliedByTheDampedInverses(double reg)
    {
        float[] a = Reference.Random(R * In, 11, -0.5f, 0.5f), b = Reference.Random(Out * R, 12, -0.5f, 0.5f);
        var (m, adapter) = Model(a, b);
        using var _ = m;
        Backward(m);
        float[] ga = adapter.A.Grad!.ToArray(), gb = adapter.B.Grad!.ToArray();
        var preconditioner = new RiemannianPreconditioner(m, (float)reg);
        Assert.Equal(["q_proj.lora_A"], preconditioner.Adapters.Select(n => n.Replace(".default", "")));
        preconditioner.Precondition();
        var (expectedA, expectedB) = Expected(a, b, ga, gb, reg);
        Reference.Close(expectedA, adapter.A.Grad!.ToArray(), 1e-5, 1e-4, "A's gradient");
        Reference.Close(expectedB, adapter.B.Grad!.ToArray(), 1e-5, 1e-4, "B's gradient");
        Assert.Equal(a, adapter.A.Data.ToArray());   // the factors themselves are untouched
    }

    /// <summary>
    /// The method's point: the first-order change of the product, B·ΔA + ΔB·A, is the same for every split of one product
    /// (A' = S·A, B' = B·S⁻¹) — plain gradients give different changes for different splits.
    /// </summary>
    [Fact]
    public void TheProductsStepDoesNotDependOnHowItIsSplit()
    {
        float[] a = Reference.Random(R * In, 21, -0.5f, 0.5f), b = Reference.Random(Out * R, 22, -0.5f, 0.5f);
        double[] s = [1.5, 0.3, -0.2, 0.1, 0.7, 0.4, -0.3, 0.2, 2.0];   // well conditioned
        double[] sInverse = Solve(s, [1, 0, 0, 0, 1, 0, 0, 0, 1], R, R);
        float[] a2 = new float[R * In], b2 = new float[Out * R];
        for (int i = 0; i < R; i++) for (int j = 0; j < In; j++) a2[i * In + j] = (float)Enumerable.Range(0, R).Sum(k => s[i * R + k] * a[k * In + j]);
        for (int i = 0; i < Out; i++) for (int j = 0; j < R; j++) b2[i * R + j] = (float)Enumerable.Range(0, R).Sum(k => b[i * R + k] * sInverse[k * R + j]);

        double[] Change(float[] fa, float[] fb, bool precondition)
        {
            var (m, adapter) = Model(fa, fb);
            using var _ = m;
            Backward(m);
            if (precondition) new RiemannianPreconditioner(m, 1e-7f).Precondition();
            float[] da = adapter.A.Grad!.ToArray(), db = adapter.B.Grad!.ToArray();
            var change = new double[Out * In];
            for (int i = 0; i < Out; i++)
                for (int j = 0; j < In; j++)
                    change[i * In + j] = Enumerable.Range(0, R).Sum(k => (double)fb[i * R + k] * da[k * In + j] + (double)db[i * R + k] * fa[k * In + j]);
            return change;
        }

        var first = Change(a, b, true);
        Reference.Close(first, Change(a2, b2, true).Select(v => (float)v).ToArray(), 1e-4, 1e-3, "the preconditioned product step");
        var plain = Change(a, b, false);
        var plainSplit = Change(a2, b2, false);
        Assert.True(plain.Zip(plainSplit, (x, y) => Math.Abs(x - y)).Max() > 1e-2 * plain.Max(Math.Abs), "plain gradients depend on the split");
    }

    [Fact]
    public void TheOptimizerPreconditionsAfterClippingAndBeforeItsMoments()
    {
        float[] a = Reference.Random(R * In, 31, -0.5f, 0.5f), b = Reference.Random(Out * R, 32, -0.5f, 0.5f);
        var (m, adapter) = Model(a, b);
        using var _ = m;
        Backward(m);
        float[] ga = adapter.A.Grad!.ToArray(), gb = adapter.B.Grad!.ToArray();
        double norm = Math.Sqrt(ga.Concat(gb).Sum(v => (double)v * v));
        const double clip = 1e-2;
        Assert.True(norm > clip, "the test's gradient is clipped");
        double scale = (float)(clip / (norm + 1e-6));
        var parameters = m.TrainableParameters().ToList();
        using var optimizer = new AdamW(parameters, 1e-3f) { Preconditioner = new RiemannianPreconditioner(m, 1e-2f) };
        optimizer.ClipStepAndZero(1e-3f, clip);
        var state = optimizer.StateDict().ToDictionary(e => e.Name, e => e.Data);
        var (expectedA, expectedB) = Expected(a, b, ga.Select(v => (float)(v * scale)).ToArray(), gb.Select(v => (float)(v * scale)).ToArray(), 1e-2);
        // AdamW's first step leaves exp_avg = (1 − β1)·g: the clipped, then preconditioned gradient.
        Reference.Close(expectedA.Select(v => 0.1 * v).ToArray(), state[$"{parameters.IndexOf(adapter.A)}.exp_avg"], 1e-7, 1e-4, "A's exp_avg");
        Reference.Close(expectedB.Select(v => 0.1 * v).ToArray(), state[$"{parameters.IndexOf(adapter.B)}.exp_avg"], 1e-7, 1e-4, "B's exp_avg");
    }

    [Fact]
    public void OnlyTheActiveAdaptersFactorsAreRewrittenAndTheOptimizerMustOwnThem()
    {
        using var m = new OneLinear(In, Out, Device.Cpu);
        var lora = LoraModel.Inject(m, new LoraConfig { R = R, Alpha = 6, TargetModules = ["q_proj"], UseDora = true });
        lora.AddAdapter("other", new LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj"] }, seed: 7);
        lora.SetActiveAdapter("default");
        var adapter = lora.Layers["q_proj"].Adapters["default"];
        adapter.B.Data.CopyFrom(Reference.Random(Out * R, 41, -0.5f, 0.5f));
        var preconditioner = new RiemannianPreconditioner(m);
        Assert.Equal([adapter.A, adapter.B], preconditioner.Parameters);   // not the inactive adapter's, not DoRA's magnitude
        Backward(m);
        var magnitude = adapter.Magnitude!.Grad!.ToArray();
        preconditioner.Precondition();
        Assert.Equal(magnitude, adapter.Magnitude.Grad!.ToArray());
        // An optimizer over fewer parameters than the preconditioner rewrites refuses it, naming the stray one.
        using var optimizer = new AdamW([adapter.Magnitude], 1e-3f);
        var e = Assert.Throws<ArgumentException>(() => optimizer.Preconditioner = preconditioner);
        Assert.Contains("lora_A", e.Message);
        Assert.Contains("does not update", e.Message);
    }

    [Fact]
    public void BadInputIsRefused()
    {
        using var plain = new OneLinear(In, Out, Device.Cpu);
        Assert.Contains("no trainable lora_A / lora_B pair", Assert.Throws<ArgumentException>(() => new RiemannianPreconditioner(plain)).Message);
        var (m, adapter) = Model(Reference.Random(R * In, 1), Reference.Random(Out * R, 2));
        using var _ = m;
        Assert.Contains("reg is 0", Assert.Throws<ArgumentException>(() => new RiemannianPreconditioner(m, 0f)).Message);
        Assert.Contains("reg is NaN", Assert.Throws<ArgumentException>(() => new RiemannianPreconditioner(m, float.NaN)).Message);
        Backward(m);
        float[] gradientA = adapter.A.Grad!.ToArray(), gradientB = adapter.B.Grad!.ToArray();
        adapter.B.Data.CopyFrom(Enumerable.Repeat(float.NaN, Out * R).ToArray());
        var e = Assert.Throws<InvalidOperationException>(() => new RiemannianPreconditioner(m).Precondition());
        Assert.Contains($"'{new RiemannianPreconditioner(m).Adapters.Single()[..^1]}B'", e.Message);   // names the factor
        Assert.Contains("not positive definite", e.Message);
        Assert.Equal(gradientA, adapter.A.Grad!.ToArray());   // nothing was rewritten
        Assert.Equal(gradientB, adapter.B.Grad!.ToArray());
        Assert.Null(RiemannianPreconditioner.InvertSymmetric([1, 2, 2, 1], 2));   // eigenvalues 3 and −1
        Reference.Close(new double[] { 2.0 / 3, -1.0 / 3, -1.0 / 3, 2.0 / 3 }, RiemannianPreconditioner.InvertSymmetric([2, 1, 1, 2], 2)!.Select(v => (float)v).ToArray(), 1e-7, 1e-6, "inverse of [[2,1],[1,2]]");
    }
}
