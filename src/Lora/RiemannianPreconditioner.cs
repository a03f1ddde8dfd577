using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Lora;

/// <summary>
/// Riemannian preconditioned LoRA (Zhang and Pilanci 2024, "Riemannian Preconditioned LoRA for Fine-Tuning Foundation
/// Models"; PEFT's <c>create_riemannian_optimizer</c>). Before every optimizer step each adapter's gradients are
/// multiplied by an r × r matrix built from the other factor: g_A ← (BᵀB + reg·I)⁻¹·g_A and g_B ← g_B·(A·Aᵀ + reg·I)⁻¹.
/// Why: with W's update written as B·ΔA + ΔB·A, plain gradients give B·Bᵀ·G + G·Aᵀ·A (G the loss gradient of the adapted
/// weight), whose size and direction depend on how the product happens to be split between A and B; the preconditioned
/// ones give B(BᵀB)⁻¹Bᵀ·G + G·Aᵀ(AAᵀ)⁻¹A — G projected onto the factors' column and row spaces, the same for every split
/// of one product, which is a step on the manifold of rank-r matrices rather than in A and B's coordinates. The optimizer
/// (AdamW here, as in the paper's "scaled AdamW") then runs unchanged on the rewritten gradients. Each pair of factors is
/// read as it is before either of its gradients changes. The r × r inverse is taken in double precision (Cholesky; the
/// matrix is symmetric, and positive definite for reg &gt; 0); PEFT takes a pseudo-inverse and also allows reg = 0.
/// </summary>
public sealed class RiemannianPreconditioner : IGradientPreconditioner
{
    /// <summary>PEFT's default damping added to the diagonal before inverting (the paper's code used 1e-6).</summary>
    public const float DefaultReg = 1e-2f;

    readonly List<(string Name, Parameter A, Parameter B)> _pairs = new();

    /// <summary>The damping added to each r × r matrix's diagonal before it is inverted.</summary>
    public float Reg { get; }

    /// <summary>The adapters preconditioned: the names of their lora_A parameters.</summary>
    public IEnumerable<string> Adapters => _pairs.Select(p => p.Name);

    /// <summary>Every lora_A and lora_B whose gradient it rewrites.</summary>
    public IEnumerable<Parameter> Parameters => _pairs.SelectMany(p => new[] { p.A, p.B });

    /// <summary>
    /// Preconditions every trainable lora_A / lora_B pair of <paramref name="model"/> (found by name, as PEFT does: the
    /// lora_B beside each lora_A). A DoRA magnitude or a trained bias is left to the optimizer as it is. A model with no such
    /// pair, and a <paramref name="reg"/> that is not finite and &gt; 0, are refused.
    /// </summary>
    public RiemannianPreconditioner(Module model, float reg = DefaultReg)
    {
        Validate(reg);
        Reg = reg;
        var parameters = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter, StringComparer.Ordinal);
        foreach (var (name, a) in parameters)
        {
            if (!name.EndsWith(".lora_A", StringComparison.Ordinal) || !a.Trainable || a.Data.Rank != 2) continue;
            if (!parameters.TryGetValue(name[..^1] + "B", out var b) || !b.Trainable || b.Data.Rank != 2) continue;
            if (b.Data.Dim(1) != a.Data.Dim(0))
                throw new ArgumentException($"Riemannian preconditioner: '{name}' is {a.Data.ShapeString} but its lora_B is {b.Data.ShapeString}; expected B's columns to equal A's rows (the rank).");
            _pairs.Add((name, a, b));
        }
        if (_pairs.Count == 0)
            throw new ArgumentException("Riemannian preconditioner: the model has no trainable lora_A / lora_B pair; inject or activate a LoRA adapter first.");
    }

    /// <summary>Throws unless <paramref name="reg"/> is finite and &gt; 0.</summary>
    public static void Validate(float reg)
    {
        if (!(reg > 0 && float.IsFinite(reg))) throw new ArgumentException($"Riemannian preconditioner: reg is {reg}, expected a finite number > 0 (PEFT's default is {DefaultReg:G}).");
    }

    /// <summary>
    /// Rewrites the gradients of every pair that has them: g_A ← (BᵀB + reg·I)⁻¹·g_A, g_B ← g_B·(AAᵀ + reg·I)⁻¹. Every inverse
    /// is taken before any gradient changes, so a factor that fails (NaN, or a matrix not positive definite) leaves them all as
    /// they were.
    /// </summary>
    public void Precondition()
    {
        var inverses = new List<(Tensor Grad, Tensor Inverse, bool Left)>();
        try
        {
            foreach (var (name, a, b) in _pairs)
            {
                if (a.Grad != null) inverses.Add((a.Grad, DampedInverse(b.Data, transposeFirst: true, name[..^1] + "B"), true));
                if (b.Grad != null) inverses.Add((b.Grad, DampedInverse(a.Data, transposeFirst: false, name), false));
            }
            foreach (var (grad, inverse, left) in inverses)
                using (var value = left ? Ops.Matmul(inverse, grad) : Ops.Matmul(grad, inverse)) grad.CopyFrom(value);
        }
        finally { foreach (var x in inverses) x.Inverse.Dispose(); }
    }

    /// <summary>
    /// (FᵀF + reg·I)⁻¹ for B (<paramref name="transposeFirst"/>) or (F·Fᵀ + reg·I)⁻¹ for A: r × r, on F's device. The Gram
    /// matrix is summed in double on the host (F is r × width, small), so rounding cannot make it indefinite.
    /// </summary>
    Tensor DampedInverse(Tensor factor, bool transposeFirst, string name)
    {
        var f = factor.ToArray();
        int rows = factor.Dim(0), cols = factor.Dim(1);
        int r = transposeFirst ? cols : rows, length = transposeFirst ? rows : cols;
        var m = new double[r * r];
        for (int i = 0; i < r; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = 0;
                for (int k = 0; k < length; k++)
                    sum += transposeFirst ? (double)f[k * cols + i] * f[k * cols + j] : (double)f[i * cols + k] * f[j * cols + k];
                m[i * r + j] = m[j * r + i] = sum;
            }
        for (int i = 0; i < r; i++) m[i * r + i] += Reg;
        var inverse = InvertSymmetric(m, r) ?? throw new InvalidOperationException(
            $"Riemannian preconditioner: the {r} × {r} Gram matrix of '{name}' plus reg {Reg:G} is not positive definite (the factor holds NaN or infinity); its gradients were left as they were.");
        return Tensor.FromArray(Array.ConvertAll(inverse, v => (float)v), [r, r], factor.Device);
    }

    /// <summary>
    /// The inverse of the symmetric positive definite n × n matrix <paramref name="m"/> (row-major), by its Cholesky factor
    /// L (m = L·Lᵀ) and a forward and a backward substitution per column; null when m is not positive definite.
    /// </summary>
    internal static double[]? InvertSymmetric(double[] m, int n)
    {
        var l = new double[n * n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j <= i; j++)
            {
                double sum = m[i * n + j];
                for (int k = 0; k < j; k++) sum -= l[i * n + k] * l[j * n + k];
                if (i == j)
                {
                    if (!(sum > 0)) return null;   // NaN too
                    l[i * n + i] = Math.Sqrt(sum);
                }
                else l[i * n + j] = sum / l[j * n + j];
            }
        var inverse = new double[n * n];
        var y = new double[n];
        for (int c = 0; c < n; c++)
        {
            for (int i = 0; i < n; i++)   // L·y = e_c
            {
                double sum = i == c ? 1 : 0;
                for (int k = 0; k < i; k++) sum -= l[i * n + k] * y[k];
                y[i] = sum / l[i * n + i];
            }
            for (int i = n - 1; i >= 0; i--)   // Lᵀ·x = y, x is column c
            {
                double sum = y[i];
                for (int k = i + 1; k < n; k++) sum -= l[k * n + i] * inverse[k * n + c];
                inverse[i * n + c] = sum / l[i * n + i];
            }
        }
        return inverse;
    }
}
