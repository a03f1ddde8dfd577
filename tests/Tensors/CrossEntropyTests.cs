using Nanolora.Tensors;
using static Nanolora.Tests.FiniteDifference;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class CrossEntropyTests
{
    const int Ignore = -100;

    /// <summary>PyTorch's cross_entropy(reduction='mean', ignore_index, label_smoothing) in double; also log-probabilities.</summary>
    static double LossRef(double[] x, int[] targets, int v, double eps, out double[] logp)
    {
        int n = targets.Length, count = 0;
        logp = new double[x.Length];
        double total = 0;
        for (int r = 0; r < n; r++)
        {
            var row = x.AsSpan(r * v, v).ToArray();
            double max = row.Max(), lse = max + Math.Log(row.Sum(e => Math.Exp(e - max)));
            for (int j = 0; j < v; j++) logp[r * v + j] = row[j] - lse;
            if (targets[r] == Ignore) continue;
            count++;
            double meanNll = 0;
            for (int j = 0; j < v; j++) meanNll -= logp[r * v + j] / v;
            total += (1 - eps) * -logp[r * v + targets[r]] + eps * meanNll;
        }
        return count == 0 ? 0 : total / count;
    }

    static double[] GradRef(double[] logp, int[] targets, int v, double eps, double gradScale)
    {
        int count = targets.Count(t => t != Ignore);
        var dx = new double[logp.Length];
        for (int r = 0; r < targets.Length; r++)
        {
            if (targets[r] == Ignore) continue;
            for (int j = 0; j < v; j++)
                dx[r * v + j] = gradScale * (Math.Exp(logp[r * v + j]) - eps / v - (j == targets[r] ? 1 - eps : 0)) / count;
        }
        return dx;
    }

    /// <summary>Targets in [0, v) with every third row (from row 1) ignored.</summary>
    static int[] Targets(int n, int v, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(i => i % 3 == 1 ? Ignore : rng.Next(v)).ToArray();
    }

    public static IEnumerable<object[]> Cases() =>
        from d in Devices() from n in new[] { 1, 7, 33 } from v in new[] { 1, 7, 33, 65 } from eps in new[] { 0f, 0.1f }
        select new object[] { d[0], n, v, eps };

    [Theory, MemberData(nameof(Cases))]
    public void LossLogProbsAndGradientMatchDoubleReference(string device, int n, int v, float eps)
    {
        var d = Dev(device);
        string what = $"cross-entropy [{n}, {v}] eps {eps} on {device}";
        var data = Random(n * v, 71, -5f, 5f);
        var targets = Targets(n, v, 72);
        using var logits = Tensor.FromArray(data, [n, v], d);
        using var loss = Ops.CrossEntropy(logits, targets, Ignore, eps, out var logProbs);
        using var _lp = logProbs;
        double expected = LossRef(data.ToDouble(), targets, v, eps, out var logp);
        Assert.Equal(0, loss.Rank);
        Close([expected], [loss.Item()], 1e-5, 1e-5, what + " loss");
        Close(logp, logProbs.ToArray(), 2e-6, 2e-6, what + " log-probabilities");

        using var dx = Ops.CrossEntropyBackward(logProbs, targets, Ignore, eps, 1.5f);
        var grad = dx.ToArray();
        Close(GradRef(logp, targets, v, eps, 1.5), grad, 1e-6, 1e-4, what + " gradient");
        for (int r = 1; r < n; r += 3) Assert.All(grad.AsSpan(r * v, v).ToArray(), g => Assert.Equal(0f, g));

        // In place over the log-probabilities (what the autograd rule does): the same gradient bit for bit.
        var lpValues = logProbs.ToArray();
        Assert.Same(logProbs, Ops.CrossEntropyBackward(logProbs, targets, Ignore, eps, 1.5f, output: logProbs));
        Assert.Equal(grad, logProbs.ToArray());

        // The log-probabilities over the logits (a training step's loss): the same loss and values bit for bit, with a
        // target equal to the ignore index's neighbours and the ignore index itself inside the vocabulary.
        using var overLogits = Tensor.FromArray(data, [n, v], d);
        using var lossInPlace = Ops.CrossEntropy(overLogits, targets, Ignore, eps, out var written, logProbsOutput: overLogits);
        Assert.Same(overLogits, written);
        Assert.Equal(loss.Item(), lossInPlace.Item());
        Assert.Equal(lpValues, overLogits.ToArray());
        var padTargets = targets.Select((t, i) => t == Ignore || i % 4 == 0 ? 0 : t).ToArray();   // 0: the ignore index below
        using var padLoss = Ops.CrossEntropy(logits, padTargets, 0, eps, out var padLp);
        using var _padLp = padLp;
        using var padOver = Tensor.FromArray(data, [n, v], d);
        using var padLossInPlace = Ops.CrossEntropy(padOver, padTargets, 0, eps, out _, logProbsOutput: padOver);
        Assert.Equal(padLoss.Item(), padLossInPlace.Item());
        Assert.Equal(padLp.ToArray(), padOver.ToArray());
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void AllTargetsIgnoredGivesZeroLossAndZeroGradient(string device)
    {
        var d = Dev(device);
        using var logits = Tensor.FromArray(Random(3 * 4, 73), [3, 4], d);
        int[] targets = [Ignore, Ignore, Ignore];
        using var loss = Ops.CrossEntropy(logits, targets, Ignore, 0.1f, out var logProbs);
        using var _lp = logProbs;
        Assert.Equal(0f, loss.Item());
        using var dx = Ops.CrossEntropyBackward(logProbs, targets, Ignore, 0.1f, 1f);
        Assert.All(dx.ToArray(), g => Assert.Equal(0f, g));
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void LargeLogitsStayFinite(string device)
    {
        var d = Dev(device);
        var data = new float[] { 1000f, -1000f, 0f, 500f, 80f, 90f, 100f, -20f };
        int[] targets = [1, 2];
        using var logits = Tensor.FromArray(data, [2, 4], d);
        using var loss = Ops.CrossEntropy(logits, targets, Ignore, 0f, out var logProbs);
        using var _lp = logProbs;
        double expected = LossRef(data.ToDouble(), targets, 4, 0, out _);
        Close([expected], [loss.Item()], 1e-3, 1e-5, $"large logits on {device}");
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BadTargetsThrowNamingTargetRowAndVocabulary(string device)
    {
        var d = Dev(device);
        using var logits = Tensor.Zeros([3, 5], d);
        var e = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, [0, 5, 1], Ignore, 0f, out _));
        Assert.Contains("target 5", e.Message);
        Assert.Contains("row 1", e.Message);
        Assert.Contains("V = 5", e.Message);
        e = Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, [0, 1], Ignore, 0f, out _));
        Assert.Contains("3", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropyBackward(logits, [0, -1, 1], Ignore, 0f, 1f));
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(logits, [0, 1, 2], Ignore, 1.5f, out _));
        using var rank3 = Tensor.Zeros([1, 3, 5], d);
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(rank3, [0, 1, 2], Ignore, 0f, out _));
    }

    [Theory, InlineData(0f), InlineData(0.1f)]
    public void GradientAgreesWithFiniteDifferences(float eps)
    {
        var d = Device.Cpu;
        int n = 4, v = 6;
        var data = Random(n * v, 74, -3f, 3f).ToDouble();
        int[] targets = [3, Ignore, 0, 5];
        using var logits = Tensor.FromArray(data.Select(x => (float)x).ToArray(), [n, v], d);
        using var loss = Ops.CrossEntropy(logits, targets, Ignore, eps, out var logProbs);
        using var _lp = logProbs;
        using var dx = Ops.CrossEntropyBackward(logProbs, targets, Ignore, eps, 2f);
        var numeric = Gradient(x => 2 * LossRef(x, targets, v, eps, out _), data);
        Close(numeric, dx.ToArray(), 1e-6, 1e-3, $"cross-entropy gradient vs finite differences (eps {eps})");
    }
}
