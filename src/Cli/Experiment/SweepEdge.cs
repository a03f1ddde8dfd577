namespace Nanolora.Cli;

/// <summary>
/// A learning-rate sweep whose best rate is the lowest or the highest it tried has not bracketed the optimum: the next
/// rate to try lies one grid step beyond that edge.
/// </summary>
public static class SweepEdge
{
    /// <summary>
    /// The rate one step beyond the best-scoring edge of <paramref name="scored"/> (the step: the ratio between the edge
    /// and its neighbour, the result rounded to two significant digits), or null when the best lies inside, fewer than
    /// two rates were tried, or the edge's rate is not apart from its neighbour's.
    /// </summary>
    /// <param name="scored">Rates tried and their validation scores, any order.</param>
    public static float? Beyond(IReadOnlyList<(float Rate, double Rouge1)> scored)
    {
        if (scored.Count < 2) return null;
        var sorted = scored.OrderBy(x => x.Rate).ToList();
        var best = sorted.MaxBy(x => x.Rouge1);
        if (best.Rate == sorted[0].Rate && sorted[1].Rate > sorted[0].Rate)
            return RoundTwoDigits(sorted[0].Rate * (sorted[0].Rate / sorted[1].Rate));
        if (best.Rate == sorted[^1].Rate && sorted[^1].Rate > sorted[^2].Rate)
            return RoundTwoDigits(sorted[^1].Rate * (sorted[^1].Rate / sorted[^2].Rate));
        return null;
    }

    /// <summary>
    /// The rates a sweep tries: the grid, then while its best is at an edge one step beyond it, at most
    /// <paramref name="extensions"/> times. <paramref name="score"/> runs (or looks up) one rate's validation score. The
    /// sequence depends only on the grid and the scores, so a resumed sweep asks for exactly the rates an uninterrupted
    /// one would, whatever an earlier run tried.
    /// </summary>
    public static List<(float Rate, double Rouge1)> Run(IReadOnlyList<float> grid, Func<float, double> score, int extensions)
    {
        var tried = grid.Select(rate => (Rate: rate, Rouge1: score(rate))).ToList();
        for (int i = 0; i < extensions && Beyond(tried) is float beyond; i++) tried.Add((beyond, score(beyond)));
        return tried;
    }

    static float RoundTwoDigits(double x)
    {
        double scale = Math.Pow(10, Math.Floor(Math.Log10(x)) - 1);
        return (float)(Math.Round(x / scale) * scale);
    }
}
