namespace Nanolora.Lora;

/// <summary>
/// A thin singular value decomposition in double precision, M = U·diag(S)·Vᵀ, by one-sided Jacobi rotations (Hestenes):
/// pairs of columns are rotated until all are orthogonal; their norms are then the singular values. It is slow next to
/// LAPACK's (O(m·n²) a sweep, ~10 sweeps) but exact to double rounding and small enough to read, and LoRA needs it only
/// off the training path: PiSSA's initialisation and the <c>svd</c> combination of adapters, on matrices of a few
/// hundred to a few thousand columns.
/// </summary>
public static class Svd
{
    /// <summary>The factors of a thin SVD: U [m, k], S [k] (descending, ≥ 0), Vt [k, n], with k = min(m, n); row-major.</summary>
    public sealed record Result(double[] U, double[] S, double[] Vt, int Rows, int Columns)
    {
        /// <summary>k = min(rows, columns): how many singular values there are.</summary>
        public int K => S.Length;
    }

    /// <summary>Decomposes the row-major <paramref name="rows"/> × <paramref name="columns"/> matrix <paramref name="m"/>.</summary>
    public static Result Decompose(ReadOnlySpan<double> m, int rows, int columns)
    {
        if (rows < 1 || columns < 1 || m.Length != (long)rows * columns)
            throw new ArgumentException($"SVD: a {rows} × {columns} matrix needs {(long)rows * columns} values, got {m.Length}.");
        foreach (double v in m)
            if (!double.IsFinite(v)) throw new ArgumentException("SVD: the matrix holds a NaN or an infinity.");
        if (rows >= columns) return Tall(m, rows, columns);
        // A wide matrix: decompose Mᵀ = U'·S·V'ᵀ, so M = V'·S·U'ᵀ.
        var t = new double[m.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) t[(long)j * rows + i] = m[i * columns + j];
        var r = Tall(t, columns, rows);
        return new Result(Transpose(r.Vt, r.K, rows), r.S, Transpose(r.U, columns, r.K), rows, columns);
    }

    /// <summary>The float overload: <paramref name="m"/> widened to double.</summary>
    public static Result Decompose(ReadOnlySpan<float> m, int rows, int columns)
    {
        var d = new double[m.Length];
        for (int i = 0; i < d.Length; i++) d[i] = m[i];
        return Decompose(d, rows, columns);
    }

    static Result Tall(ReadOnlySpan<double> m, int rows, int n)
    {
        // Columns as contiguous arrays, so each rotation streams two of them.
        var a = new double[n][];
        var v = new double[n][];
        for (int j = 0; j < n; j++)
        {
            a[j] = new double[rows];
            for (int i = 0; i < rows; i++) a[j][i] = m[i * n + j];
            v[j] = new double[n];
            v[j][j] = 1;
        }
        const double Tolerance = 1e-15;
        for (int sweep = 0; sweep < 80; sweep++)
        {
            bool rotated = false;
            for (int p = 0; p < n - 1; p++)
                for (int q = p + 1; q < n; q++)
                {
                    double alpha = Dot(a[p], a[p]), beta = Dot(a[q], a[q]), gamma = Dot(a[p], a[q]);
                    if (gamma == 0 || Math.Abs(gamma) <= Tolerance * Math.Sqrt(alpha * beta)) continue;
                    rotated = true;
                    double zeta = (beta - alpha) / (2 * gamma);
                    double t = Math.Sign(zeta == 0 ? 1 : zeta) / (Math.Abs(zeta) + Math.Sqrt(1 + zeta * zeta));
                    double c = 1 / Math.Sqrt(1 + t * t), s = c * t;
                    Rotate(a[p], a[q], c, s);
                    Rotate(v[p], v[q], c, s);
                }
            if (!rotated) break;
        }
        var norms = a.Select(col => Math.Sqrt(Dot(col, col))).ToArray();
        var order = Enumerable.Range(0, n).OrderByDescending(j => norms[j]).ToArray();
        var u = new double[(long)rows * n];
        var sv = new double[n];
        var vt = new double[(long)n * n];
        for (int k = 0; k < n; k++)
        {
            int j = order[k];
            sv[k] = norms[j];
            // A zero singular value leaves its U column zero: nothing downstream divides by it.
            if (norms[j] > 0)
                for (int i = 0; i < rows; i++) u[(long)i * n + k] = a[j][i] / norms[j];
            for (int i = 0; i < n; i++) vt[(long)k * n + i] = v[j][i];
        }
        return new Result(u, sv, vt, rows, n);
    }

    static double Dot(double[] x, double[] y)
    {
        double s = 0;
        for (int i = 0; i < x.Length; i++) s += x[i] * y[i];
        return s;
    }

    static void Rotate(double[] x, double[] y, double c, double s)
    {
        for (int i = 0; i < x.Length; i++)
        {
            double xi = x[i], yi = y[i];
            x[i] = c * xi - s * yi;
            y[i] = s * xi + c * yi;
        }
    }

    static double[] Transpose(double[] m, int rows, int columns)
    {
        var t = new double[m.Length];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++) t[(long)j * rows + i] = m[(long)i * columns + j];
        return t;
    }

    /// <summary>
    /// The leading <paramref name="k"/> singular triplets only, by randomized subspace iteration (Halko, Martinsson and Tropp
    /// 2011; what PEFT's LoRA-GA runs through torch.svd_lowrank): a Gaussian sketch of q = min(2k, min(rows, columns))
    /// columns (PEFT's q = 4r for k = 2r), <paramref name="iterations"/> power iterations re-orthonormalized each half step, then the exact SVD of the
    /// q × n projection. The leading values converge like (σ_{q+1}/σ_i)^(2·iterations+1): for a gradient whose spectrum
    /// decays that is double rounding, at a tiny fraction of a full decomposition's cost on a 384 × 1536 matrix.
    /// Deterministic for a given <paramref name="seed"/>.
    /// </summary>
    public static Result Leading(ReadOnlySpan<float> m, int rows, int columns, int k, int iterations = 4, ulong seed = 1)
    {
        int most = Math.Min(rows, columns);
        if (k < 1 || k > most) throw new ArgumentException($"SVD: {k} leading singular values asked of a {rows} × {columns} matrix, which has {most}.");
        int q = Math.Min(most, 2 * k);
        var a = new double[m.Length];
        for (int i = 0; i < a.Length; i++)
            a[i] = double.IsFinite(m[i]) ? m[i] : throw new ArgumentException("SVD: the matrix holds a NaN or an infinity.");
        var rng = new Random((int)(seed % int.MaxValue));
        var omega = new double[(long)columns * q];
        for (int i = 0; i < omega.Length; i++) omega[i] = Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var y = Multiply(a, rows, columns, omega, q, transposeA: false);           // rows × q
        Orthonormalize(y, rows, q);
        for (int it = 0; it < iterations; it++)
        {
            var z = Multiply(a, rows, columns, y, q, transposeA: true);             // columns × q
            Orthonormalize(z, columns, q);
            y = Multiply(a, rows, columns, z, q, transposeA: false);
            Orthonormalize(y, rows, q);
        }
        // B = Qᵀ·M (q × columns), decomposed exactly: M ≈ Q·B = (Q·U_B)·S·Vᵀ.
        var b = new double[(long)q * columns];
        for (int i = 0; i < rows; i++)
            for (int c = 0; c < q; c++)
            {
                double qi = y[(long)i * q + c];
                if (qi == 0) continue;
                for (int j = 0; j < columns; j++) b[(long)c * columns + j] += qi * a[(long)i * columns + j];
            }
        var small = Decompose(b, q, columns);
        var u = new double[(long)rows * k];
        for (int i = 0; i < rows; i++)
            for (int t = 0; t < k; t++)
            {
                double sum = 0;
                for (int c = 0; c < q; c++) sum += y[(long)i * q + c] * small.U[(long)c * small.K + t];
                u[(long)i * k + t] = sum;
            }
        return new Result(u, small.S[..k], small.Vt.AsSpan(0, k * columns).ToArray(), rows, columns);
    }

    /// <summary>M·X (M rows × columns, X columns × q) or, with <paramref name="transposeA"/>, Mᵀ·X (X rows × q); row-major.</summary>
    static double[] Multiply(double[] a, int rows, int columns, double[] x, int q, bool transposeA)
    {
        var result = new double[(long)(transposeA ? columns : rows) * q];
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++)
            {
                double aij = a[(long)i * columns + j];
                long from = transposeA ? (long)i * q : (long)j * q, to = transposeA ? (long)j * q : (long)i * q;
                for (int c = 0; c < q; c++) result[to + c] += aij * x[from + c];
            }
        return result;
    }

    /// <summary>Modified Gram–Schmidt on the q columns of the row-major n × q matrix, twice (once is not enough in floating point).</summary>
    static void Orthonormalize(double[] m, int n, int q)
    {
        for (int pass = 0; pass < 2; pass++)
            for (int c = 0; c < q; c++)
            {
                for (int p = 0; p < c; p++)
                {
                    double dot = 0;
                    for (int i = 0; i < n; i++) dot += m[(long)i * q + c] * m[(long)i * q + p];
                    for (int i = 0; i < n; i++) m[(long)i * q + c] -= dot * m[(long)i * q + p];
                }
                double norm = 0;
                for (int i = 0; i < n; i++) norm += m[(long)i * q + c] * m[(long)i * q + c];
                norm = Math.Sqrt(norm);
                for (int i = 0; i < n; i++) m[(long)i * q + c] = norm > 0 ? m[(long)i * q + c] / norm : 0;
            }
    }
}
