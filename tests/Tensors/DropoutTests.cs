using Nanolora.Tensors;
using static Nanolora.Tests.Reference;

namespace Nanolora.Tests.Tensors;

public class DropoutTests
{
    const int N = 100_000;

    /// <summary>
    /// The vector masks (16 lanes on AVX-512, 8 on AVX2, each where the machine has it) draw the scalar mask's bits at
    /// every index, small and past 2^31 / 8, so every CPU path and every kernel drop the same elements.
    /// </summary>
    [Fact]
    public void VectorMasksEqualTheScalarMask()
    {
        var prm = new DropoutParams(int.MaxValue, CounterHash.Key(99), (int)Math.Round(0.3 * (1 << 24)), Ops.DropoutKeepScale(0.3f), 0);
        foreach (int start in new[] { 0, 8, 1000, 268_435_456, int.MaxValue - 64 })
            for (int i = start; i < start + 48; i += 16)
            {
                var expected = Enumerable.Range(i, 16).Select(prm.MaskAt).ToArray();
                if (System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated)
                {
                    var m16 = Ops.Mask16(prm, i);
                    Assert.Equal(expected, Enumerable.Range(0, 16).Select(l => m16[l]).ToArray());
                }
                if (System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated)
                {
                    var (lo, hi) = (Ops.Mask8(prm, i), Ops.Mask8(prm, i + 8));
                    Assert.Equal(expected, Enumerable.Range(0, 16).Select(l => l < 8 ? lo[l] : hi[l - 8]).ToArray());
                }
                Assert.Contains(0f, expected.Take(16));
            }
    }

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

    // The fused feed-forward activation: the same values as Relu then Dropout with the seed, and one mask for both
    // derivatives (0 where x ≤ 0 or dropped), at a length off the 16-wide vectors, zeros included, and p = 0.
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void ReluDropoutIsReluThenDropoutInOnePass(string device)
    {
        var d = Dev(device);
        var data = Random(37 * 29, 55);
        for (int i = 0; i < data.Length; i += 7) data[i] = 0f;
        data[3] = data[500] = float.NaN;   // ReLU's value on each device (NaN kept on cpu), derivative 0
        using var x = Tensor.FromArray(data, [37, 29], d);
        using var dy = RandomTensor(d, 56, 37, 29);
        var g = dy.ToArray();
        foreach (var p in new[] { 0.3f, 0f })
        {
            using var relu = Ops.Map(x, new ReluOp());
            using var expected = Ops.Dropout(relu, p, 77UL, out var dropMask);
            using var y = Ops.ReluDropout(x, p, 77UL, out var mask);
            using (dropMask) using (mask)
            {
                var got = y.ToArray(); var want = expected.ToArray(); var m = mask.ToArray(); var dm = dropMask.ToArray();
                for (int i = 0; i < data.Length; i++)
                {
                    Assert.True(got[i] == want[i] || float.IsNaN(got[i]) && float.IsNaN(want[i]),
                        $"p={p} on {device} [{i}]: x {data[i]}, fused {got[i]}, Relu then Dropout {want[i]}");
                    float derivative = data[i] > 0f ? dm[i] : 0f;
                    Assert.True(m[i] == derivative, $"p={p} on {device} [{i}]: mask {m[i]}, expected {derivative} (x {data[i]})");
                }
                using var dx = Ops.Mul(dy, mask);
                Close(g.Select((v, i) => data[i] > 0f ? (double)v * dm[i] : 0.0).ToArray(), dx.ToArray(), 0, 1e-7, $"backward p={p} on {device}");
                var dropped = relu.ToArray();
                Assert.Equal(float.IsNaN(dropped[3]), float.IsNaN(got[3]));
            }
        }
        Assert.Throws<ArgumentException>(() => Ops.ReluDropout(x, 1.5f, 1UL, out _));
    }

    // Rows of a larger tensor, given their mask offset, draw that tensor's mask: the feed-forward's hidden layer made a row
    // block at a time equals the whole one bit for bit. Blocks of 7 rows of 29 start off the 16- and 8-wide vectors and end
    // in their scalar tails; a negative offset is refused.
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void AnOffsetMaskIsThatPartOfTheWholeTensorsMask(string device)
    {
        var d = Dev(device);
        const int rows = 37, cols = 29, block = 7;
        var data = Random(rows * cols, 57);
        using var x = Tensor.FromArray(data, [rows, cols], d);
        using var whole = Ops.ReluDropout(x, 0.4f, 78UL);
        var expected = whole.ToArray();
        for (int start = 0; start < rows; start += block)
        {
            int count = Math.Min(block, rows - start);
            using var part = Tensor.FromArray(data.AsSpan(start * cols, count * cols).ToArray(), [count, cols], d);
            Ops.ReluDropout(part, 0.4f, 78UL, output: part, maskOffset: (long)start * cols);
            var got = part.ToArray();
            for (int i = 0; i < got.Length; i++)
                Assert.True(got[i] == expected[start * cols + i], $"{device}: rows from {start}, element {i}: {got[i]} vs {expected[start * cols + i]} of the whole");
        }
        Assert.Throws<ArgumentException>(() => Ops.ReluDropout(x, 0.4f, 78UL, maskOffset: -1));
    }

    // A residual connection's sum in one pass: bit for bit Dropout then Add with the seed (same mask), off the vector width.
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void DropoutAddIsDropoutThenAddInOnePass(string device)
    {
        var d = Dev(device);
        using var residual = RandomTensor(d, 57, 23, 41);
        using var x = RandomTensor(d, 58, 23, 41);
        foreach (var p in new[] { 0.1f, 0f })
        {
            using var dropped = Ops.Dropout(x, p, 91UL, out var dropMask);
            using var expected = Ops.Add(residual, dropped);
            using var y = Ops.DropoutAdd(residual, x, p, 91UL, out var mask);
            using (dropMask) using (mask)
            {
                Assert.Equal(dropMask.ToArray(), mask.ToArray());
                var got = y.ToArray(); var want = expected.ToArray();
                // A GPU compiler may fuse the multiply and the add (one rounding fewer); cpu and the simulator may not.
                bool exact = device is "cpu" or "ilgpu-cpu";
                for (int i = 0; i < got.Length; i++)
                    Assert.True(got[i] == want[i] || !exact && Math.Abs(got[i] - want[i]) <= 1e-6f * Math.Max(1f, Math.Abs(want[i])),
                        $"p={p} on {device} [{i}]: fused {got[i]}, Dropout then Add {want[i]}");
            }
        }
        using var wrong = RandomTensor(d, 59, 23, 40);
        var e = Assert.Throws<ArgumentException>(() => Ops.DropoutAdd(residual, wrong, 0.1f, 1UL, out _));
        Assert.Contains("DropoutAdd", e.Message);
    }
    // A ReLU(-dropout) mask as bits: set exactly where the hidden value is not zero, and the backward through the bits is
    // bit for bit the float mask's (Mul(dy, mask) after ReLU-dropout, ReLU's select without dropout), at lengths off 8 and 32.
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void MaskBitsGiveTheFloatMasksBackwardBitForBit(string device)
    {
        var d = Dev(device);
        foreach (int n in new[] { 1, 31, 33, 8 * 37 + 5, 4099 })
        {
            var data = Random(n, 60 + n);
            for (int i = 0; i < n; i += 5) data[i] = 0f;
            for (int i = 3; i < n; i += 97) data[i] = float.NaN;   // ReLU's derivative there is 0, as for x ≤ 0
            using var x = Tensor.FromArray(data, [n], d);
            using var dy = RandomTensor(d, 61 + n, n);
            var g = dy.ToArray();
            foreach (var p in new[] { 0.3f, 0f })
            {
                using var y = Ops.ReluDropout(x, p, 78UL, out var mask);
                using var bits = Ops.PackPositive(y);
                Assert.Equal((n + 31) / 32, bits.Length);
                var hidden = y.ToArray(); var m = mask.ToArray();
                var words = bits.ToArray().Select(BitConverter.SingleToUInt32Bits).ToArray();
                for (int i = 0; i < n; i++)
                    Assert.True(((words[i / 32] >> (i % 32)) & 1) == (hidden[i] > 0f ? 1u : 0u), $"n={n} p={p} on {device}: bit {i}, hidden {hidden[i]}");
                using (mask)
                {
                    bool select = p == 0f;
                    float scale = p == 0f ? 1f : (float)(1.0 / (1.0 - p));
                    using var dx = Ops.MulByBits(dy, bits, scale, select);
                    var got = dx.ToArray();
                    using var inPlace = dy.Clone();
                    Ops.MulByBits(inPlace, bits, scale, select, output: inPlace);
                    Assert.Equal(got.Select(BitConverter.SingleToInt32Bits), inPlace.ToArray().Select(BitConverter.SingleToInt32Bits));
                    for (int i = 0; i < n; i++)
                    {
                        float want = select ? (data[i] > 0f ? g[i] : 0f) : g[i] * m[i];
                        Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got[i]), $"n={n} p={p} on {device} [{i}]: {got[i]:R}, expected {want:R}");
                    }
                }
            }
            using var tooFew = Tensor.Zeros([Math.Max(1, (n + 31) / 32 - 1)], d);
            if (tooFew.Length != (n + 31) / 32) Assert.Throws<ArgumentException>(() => Ops.MulByBits(dy, tooFew, 1f, true));
        }
    }
    // Backward without a kept mask: the mask drawn again from the seed (dropout, dropout-add) or read off ReLU-dropout's
    // output gives Mul(dy, mask) bit for bit, and the forwards that write no mask give the same values, at lengths off the
    // 16-lane steps and the parallel chunks, negative dy included (signed zeros).
    [Theory, MemberData(nameof(Devices), MemberType = typeof(Reference))]
    public void BackwardWithoutAKeptMaskIsMulByTheMaskBitForBit(string device)
    {
        var d = Dev(device);
        foreach (int n in new[] { 1, 17, 16 * 1024 + 9, 40_000 })
            foreach (var p in new[] { 0.1f, 0.5f, 0f })
            {
                var data = Random(n, 70 + n);
                for (int i = 0; i < n; i += 6) data[i] = 0f;
                for (int i = 5; i < n; i += 89) data[i] = float.NaN;   // the written mask holds 0 there; so must the backward
                using var x = Tensor.FromArray(data, [n], d);
                using var residual = RandomTensor(d, 71 + n, n);
                using var dy = RandomTensor(d, 72 + n, n);
                ulong seed = 90UL + (ulong)n;
                using var withMask = Ops.Dropout(x, p, seed, out var mask);
                using var without = Ops.Dropout(x, p, seed);
                using var summed = Ops.DropoutAdd(residual, x, p, seed, out var addMask);
                using var summedWithout = Ops.DropoutAdd(residual, x, p, seed);
                using var relu = Ops.ReluDropout(x, p, seed, out var reluMask);
                using var reluWithout = Ops.ReluDropout(x, p, seed);
                using (mask) using (addMask) using (reluMask)
                {
                    string what = $"n={n} p={p} on {device}";
                    AssertBits(withMask, without, $"dropout values, {what}");
                    AssertBits(summed, summedWithout, $"dropout-add values, {what}");
                    AssertBits(relu, reluWithout, $"relu-dropout values, {what}");
                    using (var overX = x.Clone())   // in place over fc1's output, as a feed-forward block runs it
                        AssertBits(relu, Ops.ReluDropout(overX, p, seed, output: overX), $"relu-dropout in place, {what}");
                    using (var want = Ops.Mul(dy, mask)) using (var got = Ops.DropoutBackward(dy, p, seed)) AssertBits(want, got, $"dropout backward, {what}");
                    using (var want = Ops.Mul(dy, reluMask)) using (var got = Ops.ReluDropoutBackward(dy, relu, p)) AssertBits(want, got, $"relu-dropout backward, {what}");
                    // In place (dy itself as the output), as the autograd rules run them.
                    using (var want = Ops.Mul(dy, mask)) using (var inPlace = dy.Clone())
                        AssertBits(want, Ops.DropoutBackward(inPlace, p, seed, output: inPlace), $"dropout backward in place, {what}");
                    using (var want = Ops.Mul(dy, reluMask)) using (var inPlace = dy.Clone())
                        AssertBits(want, Ops.ReluDropoutBackward(inPlace, relu, p, output: inPlace), $"relu-dropout backward in place, {what}");
                }
            }
    }

    static void AssertBits(Tensor expected, Tensor actual, string what)
    {
        var e = expected.ToArray(); var a = actual.ToArray();
        Assert.Equal(e.Length, a.Length);
        for (int i = 0; i < e.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(e[i]) == BitConverter.SingleToInt32Bits(a[i]), $"{what} [{i}]: {a[i]:R}, expected {e[i]:R}");
    }
}
