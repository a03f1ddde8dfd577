using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class RandomTests
{
    [Fact]
    public void SameSeedGivesSameNumbersOnEveryDevice()
    {
        var devices = Devices().Select(d => Dev((string)d[0])).ToList();
        foreach (var make in new Func<Device, Tensor>[]
        {
            d => TensorRandom.Uniform([45, 65], -2f, 3f, 17UL, d),
            d => TensorRandom.Normal([33, 7], 0.5f, 2f, 17UL, d),
            d => TensorRandom.KaimingUniform([65, 45], 45, 17UL, d),
        })
        {
            float[]? first = null;
            foreach (var d in devices)
            {
                using var t = make(d);
                Assert.Equal(MemoryCategory.Parameter, t.Category);
                var values = t.ToArray();
                if (first == null) first = values;
                else Assert.Equal(first, values);
            }
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void UniformMomentsAndRange(string device)
    {
        using var t = TensorRandom.Uniform([100_000], -1f, 3f, 5UL, Dev(device));
        var v = t.ToArray().Select(x => (double)x).ToArray();
        Assert.All(v, x => Assert.True(x >= -1 && x < 3, $"{x} outside [-1, 3)"));
        double mean = v.Average(), std = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / v.Length);
        Assert.InRange(mean, 1 - 0.02, 1 + 0.02);
        Assert.InRange(std, 4 / Math.Sqrt(12) * 0.99, 4 / Math.Sqrt(12) * 1.01);
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void NormalMomentsAndPrefixStability(string device)
    {
        var d = Dev(device);
        using var t = TensorRandom.Normal([100_001], 2f, 0.5f, 6UL, d);
        var v = t.ToArray().Select(x => (double)x).ToArray();
        double mean = v.Average(), std = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / v.Length);
        Assert.InRange(mean, 2 - 0.01, 2 + 0.01);
        Assert.InRange(std, 0.5 * 0.98, 0.5 * 1.02);
        double within1 = v.Count(x => Math.Abs(x - 2) < 0.5) / (double)v.Length;
        Assert.InRange(within1, 0.6827 - 0.01, 0.6827 + 0.01);
        // Element i depends only on (seed, i): a shorter tensor is a prefix of a longer one.
        using var shortT = TensorRandom.Normal([7], 2f, 0.5f, 6UL, d);
        Assert.Equal(t.ToArray()[..7], shortT.ToArray());
        using var other = TensorRandom.Normal([7], 2f, 0.5f, 8UL, d);
        Assert.NotEqual(shortT.ToArray(), other.ToArray());
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void KaimingUniformBoundMatchesTorchLinear(string device)
    {
        int fanIn = 65;
        using var t = TensorRandom.KaimingUniform([33, fanIn], fanIn, 9UL, Dev(device));
        double bound = 1 / Math.Sqrt(fanIn); // a = √5: sqrt(6 / (6·fanIn))
        var v = t.ToArray();
        Assert.All(v, x => Assert.True(Math.Abs(x) <= bound, $"{x} beyond ±{bound}"));
        Assert.True(v.Max() > 0.95 * bound && v.Min() < -0.95 * bound, "values should fill the interval");
        using var relu = TensorRandom.KaimingUniform([1000], 10, 9UL, Dev(device), a: 0f);
        Assert.All(relu.ToArray(), x => Assert.True(Math.Abs(x) <= Math.Sqrt(6.0 / 10)));
    }
}
