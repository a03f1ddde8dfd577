namespace Nanolora.Tests;

/// <summary>Central finite differences in double: the independent check on every backward rule.</summary>
public static class FiniteDifference
{
    /// <summary>∂f/∂x_i ≈ (f(x + h·e_i) − f(x − h·e_i)) / 2h for every i.</summary>
    public static double[] Gradient(Func<double[], double> f, double[] x, double h = 1e-5)
    {
        var g = new double[x.Length];
        var probe = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            probe[i] = x[i] + h;
            double up = f(probe);
            probe[i] = x[i] - h;
            double down = f(probe);
            probe[i] = x[i];
            g[i] = (up - down) / (2 * h);
        }
        return g;
    }

    /// <summary>Σ w ⊙ y, the scalar whose gradient with respect to y is w.</summary>
    public static double Weighted(double[] w, double[] y)
    {
        double s = 0;
        for (int i = 0; i < y.Length; i++) s += w[i] * y[i];
        return s;
    }

    public static double[] ToDouble(this float[] a) => a.Select(v => (double)v).ToArray();
}
