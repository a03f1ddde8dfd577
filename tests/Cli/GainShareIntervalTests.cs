using Nanolora.Cli;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

public class GainShareIntervalTests
{
    static double[] Noisy(int n, int seed, Func<int, double, double> value)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i => value(i, rng.NextDouble())).ToArray();
    }

    [Fact]
    public void LoraEqualToFullIsAllOfTheGainAndLoraEqualToBaseNone()
    {
        var b = Noisy(300, 1, (_, u) => u * 0.5);
        var f = b.Select(v => v + 0.1).ToArray();
        var all = GainShareInterval.Compute(b, f, f)!;
        Assert.Equal(1.0, all.Share, 12);
        Assert.Equal(1.0, all.Low, 12);
        Assert.Equal(1.0, all.High, 12);
        var none = GainShareInterval.Compute(b, f, b)!;
        Assert.Equal(0.0, none.Share, 12);
        Assert.Equal(0.0, none.Low, 12);
        Assert.Equal(0.0, none.High, 12);
    }

    [Fact]
    public void TheIntervalHoldsThePointAndNarrowsWithMorePairs()
    {
        // Per pair: full gains 0.1, LoRA 0.06 on average, each with its own noise: the share is about 0.6.
        GainShareInterval.Interval Make(int n)
        {
            var b = Noisy(n, 2, (_, u) => u * 0.6);
            var f = Noisy(n, 3, (i, u) => b[i] + 0.1 + (u - 0.5) * 0.3);
            var l = Noisy(n, 4, (i, u) => b[i] + 0.06 + (u - 0.5) * 0.3);
            var interval = GainShareInterval.Compute(b, f, l)!;
            Assert.Equal((l.Average() - b.Average()) / (f.Average() - b.Average()), interval.Share, 12);
            Assert.InRange(interval.Share, interval.Low, interval.High);
            Assert.Equal(n, interval.Pairs);
            return interval;
        }
        var small = Make(100);
        var large = Make(3000);
        Assert.InRange(large.Share, 0.5, 0.7);
        Assert.True(large.High - large.Low < small.High - small.Low,
            $"3,000 pairs gave {large.Low:F3}–{large.High:F3}, 100 pairs {small.Low:F3}–{small.High:F3}");
        Assert.True(large.High - large.Low > 0.01);
    }

    [Fact]
    public void NoShareWhenFullGainedTooLittleAndMismatchedPairsThrow()
    {
        var b = Noisy(50, 5, (_, u) => u);
        Assert.Null(GainShareInterval.Compute(b, b.Select(v => v + 0.001).ToArray(), b));
        var e = Assert.Throws<ArgumentException>(() => GainShareInterval.Compute(b, b.Take(49).ToArray(), b));
        Assert.Contains("50, 49 and 50", e.Message);
    }

    // Full's gain barely above the 0.005 floor: many resamples fall under it and have no share; the interval's low end
    // is then −∞ (reported as undefined), never NaN.
    [Fact]
    public void ResamplesWithoutAShareMakeTheLowEndUndefinedNotNaN()
    {
        var b = Noisy(400, 6, (_, u) => u * 0.5);
        // Full's per-pair gain alternates 0.0065 ± 0.04: exactly 0.0065 over all pairs, a resample's mean gain has a spread
        // of 0.002, so about a fifth of the resamples fall under 0.005.
        var f = b.Select((v, i) => v + 0.0065 + (i % 2 == 0 ? 0.04 : -0.04)).ToArray();
        var l = b.Select((v, i) => v + 0.003 + (i % 2 == 0 ? 0.02 : -0.02)).ToArray();
        var interval = GainShareInterval.Compute(b, f, l);
        Assert.NotNull(interval);
        Assert.True(double.IsNegativeInfinity(interval.Low), $"low end {interval.Low}");
        Assert.False(double.IsNaN(interval.High));
    }

    [Fact]
    public void ReadsTheExperimentsPredictionFiles()
    {
        var dir = Directory.CreateTempSubdirectory("nanolora-share-").FullName;
        try
        {
            string[] refs = ["terminal file manager", "library for parsing json", "command line tool for images", "python bindings for the library"];
            void Write(string name, string[] lines, string[]? references = null)
            {
                File.WriteAllText(Path.Combine(dir, name + ".txt"), string.Join('\n', lines) + "\n");
                File.WriteAllText(Path.Combine(dir, name + ".references.txt"), string.Join('\n', references ?? refs) + "\n");
            }
            string[] basePred = ["a program", "json", "tool", "bindings"];
            string[] fullPred = ["terminal file manager", "library for json", "command line tool", "python bindings for the library"];
            string[] loraPred = ["file manager", "library for json", "tool for images", "python bindings"];
            Write("base", basePred); Write("full", fullPred); Write("lora-r8", loraPred);
            double[] Scores(string[] p) => p.Select((x, i) => Rouge.Score(x, refs[i]).Rouge1.F).ToArray();
            var expected = GainShareInterval.Compute(Scores(basePred), Scores(fullPred), Scores(loraPred))!;
            var read = GainShareInterval.FromPredictions(dir, "lora-r8")!;
            Assert.Equal(expected, read);
            Assert.Null(GainShareInterval.FromPredictions(dir, "lora-r16"));
            Write("full", fullPred, ["other", "references", "than", "base's"]);
            Assert.Null(GainShareInterval.FromPredictions(dir, "lora-r8"));
        }
        finally { Directory.Delete(dir, true); }
    }
}
