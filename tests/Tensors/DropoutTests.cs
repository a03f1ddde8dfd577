using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class DropoutTests
{
    const int N = 100_000;

    [Fact]
    public void MaskIsIdenticalOnCpuAndIlgpu()
    {
        var data = Random(N, 51);
        var results = new List<(float[] Y, float[] Mask)>();
        foreach (var id in Devices().Select(d => (string)d[0]))
        {
            using var x = Tensor.FromArray(data, [100, 1000], Dev(id));
            using var y = Ops.Dropout(x, 0.3f, 1234UL, out var mask);
            using (mask) results.Add((y.ToArray(), mask.ToArray()));
        }
        for (int k = 1; k < results.Count; k++)
        {
            Assert.Equal(results[0].Mask, results[k].Mask);
            Assert.Equal(results[0].Y, results[k].Y);
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void RateAndExpectedValue(string device)
    {
        var d = Dev(device);
        using var x = Tensor.Full([N], 1f, d);
        foreach (var p in new[] { 0.1f, 0.5f, 0.9f })
        {
            using var y = Ops.Dropout(x, p, 7UL, out var mask);
            using (mask)
            {
                var m = mask.ToArray();
                float keep = 1f / (1f - p);
                Assert.All(m, v => Assert.True(v == 0f || v == keep, $"mask value {v}, expected 0 or {keep}"));
                double dropped = m.Count(v => v == 0f) / (double)N;
                double sigma = Math.Sqrt(p * (1 - p) / N);
                Assert.True(Math.Abs(dropped - p) < 5 * sigma, $"p={p}: dropped fraction {dropped} on {device}");
                double mean = y.ToArray().Average(v => (double)v);
                double meanSigma = Math.Sqrt(p / (1 - p) / N);
                Assert.True(Math.Abs(mean - 1) < 5 * meanSigma, $"p={p}: E[y] = {mean}, expected 1 on {device}");
            }
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void OutputIsInputTimesMaskAndSeedsDiffer(string device)
    {
        var d = Dev(device);
        var data = Random(45 * 65, 52);
        using var x = Tensor.FromArray(data, [45, 65], d);
        using var y = Ops.Dropout(x, 0.25f, 99UL, out var mask);
        using var y2 = Ops.Dropout(x, 0.25f, 99UL, out var mask2);
        using var y3 = Ops.Dropout(x, 0.25f, 100UL, out var mask3);
        using (mask) using (mask2) using (mask3)
        {
            var m = mask.ToArray();
            Close(data.Select((v, i) => (double)v * m[i]).ToArray(), y.ToArray(), 0, 1e-7, $"y = x*mask on {device}");
            Assert.Equal(m, mask2.ToArray());
            Assert.NotEqual(m, mask3.ToArray());
            // Backward is Mul(dy, mask).
            using var dy = RandomTensor(d, 53, 45, 65);
            using var dx = Ops.Mul(dy, mask);
            var g = dy.ToArray();
            Close(g.Select((v, i) => (double)v * m[i]).ToArray(), dx.ToArray(), 0, 1e-7, $"dropout backward on {device}");
        }
    }

    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void ZeroRateIsACopyAndBadRatesThrow(string device)
    {
        var d = Dev(device);
        var data = Random(33, 54);
        using var x = Tensor.FromArray(data, [33], d);
        using var y = Ops.Dropout(x, 0f, 1UL, out var mask);
        using (mask)
        {
            Assert.Equal(data, y.ToArray());
            Assert.All(mask.ToArray(), v => Assert.Equal(1f, v));
        }
        using var all = Ops.Dropout(x, 1f, 1UL, out var zeros);
        using (zeros) Assert.All(all.ToArray(), v => Assert.Equal(0f, v));
        Assert.Throws<ArgumentException>(() => Ops.Dropout(x, -0.1f, 1UL, out _));
        Assert.Throws<ArgumentException>(() => Ops.Dropout(x, 1.5f, 1UL, out _));
    }
}
