using Nanolora.Lora;

namespace Nanolora.Tests.Lora;

/// <summary>The Jacobi SVD: U·diag(S)·Vᵀ rebuilds the matrix, U and V are orthonormal, S is sorted and non-negative.</summary>
public class SvdTests
{
    static double[] Random(int rows, int columns, int seed, int rank = 0)
    {
        var rng = new System.Random(seed);
        if (rank == 0) return Enumerable.Range(0, rows * columns).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
        // A product of [rows, rank] and [rank, columns]: exactly rank-deficient.
        var l = Random(rows, rank, seed + 1);
        var r = Random(rank, columns, seed + 2);
        var m = new double[rows * columns];
        for (int i = 0; i < rows; i++) for (int j = 0; j < columns; j++) for (int k = 0; k < rank; k++) m[i * columns + j] += l[i * rank + k] * r[k * columns + j];
        return m;
    }

    [Theory]
    [InlineData(7, 5, 0)]
    [InlineData(5, 7, 0)]
    [InlineData(13, 13, 0)]
    [InlineData(1, 6, 0)]
    [InlineData(9, 6, 2)]
    [InlineData(33, 17, 0)]
    public void TheFactorsRebuildTheMatrixAndAreOrthonormal(int rows, int columns, int rank)
    {
        var m = Random(rows, columns, 42 + rows, rank);
        var svd = Svd.Decompose(m, rows, columns);
        int k = Math.Min(rows, columns);
        Assert.Equal(k, svd.K);
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < columns; j++)
            {
                double sum = 0;
                for (int t = 0; t < k; t++) sum += svd.U[i * k + t] * svd.S[t] * svd.Vt[t * columns + j];
                Assert.True(Math.Abs(sum - m[i * columns + j]) < 1e-12, $"({i},{j}): {sum} vs {m[i * columns + j]}");
            }
        for (int t = 1; t < k; t++) Assert.True(svd.S[t] <= svd.S[t - 1] && svd.S[t] >= 0, $"S not sorted at {t}");
        int nonzero = svd.S.Count(s => s > 1e-9);
        Assert.Equal(rank == 0 ? k : rank, nonzero);
        for (int a = 0; a < k; a++)
            for (int b = 0; b < k; b++)
            {
                double vv = 0, uu = 0;
                for (int j = 0; j < columns; j++) vv += svd.Vt[a * columns + j] * svd.Vt[b * columns + j];
                for (int i = 0; i < rows; i++) uu += svd.U[i * k + a] * svd.U[i * k + b];
                Assert.True(Math.Abs(vv - (a == b ? 1 : 0)) < 1e-12, $"VᵀV[{a},{b}] = {vv}");
                if (a < nonzero && b < nonzero) Assert.True(Math.Abs(uu - (a == b ? 1 : 0)) < 1e-12, $"UᵀU[{a},{b}] = {uu}");
            }
    }

    [Fact]
    public void KnownSingularValuesAreFound()
    {
        // diag(3, 2) rotated on both sides keeps singular values 3 and 2.
        double c = Math.Cos(0.3), s = Math.Sin(0.3);
        double[] m = [c * 3 * c + -s * 2 * s, c * 3 * -s + -s * 2 * c, s * 3 * c + c * 2 * s, s * 3 * -s + c * 2 * c];
        var svd = Svd.Decompose(m, 2, 2);
        Assert.Equal(3, svd.S[0], 12);
        Assert.Equal(2, svd.S[1], 12);
    }

    [Fact]
    public void ANaNOrAWrongLengthIsRefused()
    {
        Assert.Contains("NaN", Assert.Throws<ArgumentException>(() => Svd.Decompose(new[] { 1.0, double.NaN }, 1, 2)).Message);
        Assert.Contains("needs 6", Assert.Throws<ArgumentException>(() => Svd.Decompose(new double[5], 2, 3)).Message);
    }
}
