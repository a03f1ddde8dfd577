using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Nanolora.Tensors;

namespace Nanolora.Bench;

/// <summary>
/// One op at one shape on one device: inputs made and the output validated against a double-precision
/// reference in the constructor, then <see cref="Run"/> times one call (synchronized). <see cref="Bytes"/> is
/// the minimum memory traffic (every input read once, every output written once) for the GB/s figure.
/// </summary>
public sealed class OpCase : IDisposable
{
    /// <summary>Softmax rows: B·H·S for the "small" preset's encoder self-attention (B 32, H 4, S 96).</summary>
    public const int SoftmaxRows = 32 * 4 * 96;

    public static readonly string[] Names =
        ["softmax-12288x97", "softmax-12288x1024", "layernorm-4096x512", "adamw-1M", "adamw-16M", "add-16M", "heads-32x96x4x64", "attention-32x96x4x64", "attention_chain-32x96x4x64", "attention_backward-32x96x4x64"];

    public string Name { get; }
    public double Bytes { get; }
    readonly Device _device;
    readonly List<Tensor> _inputs = new();
    readonly Action _op;

    public OpCase(string name, Device device)
    {
        Name = name;
        _device = device;
        var parts = name.Split('-');
        switch (parts[0])
        {
            case "softmax":
            {
                var (rows, width) = Dims(parts[1]);
                var x = Input([rows, width], -4f, 4f, 11);
                Validate(Ops.Softmax(x), x, (xs, r, w, ys) =>
                {
                    double max = double.NegativeInfinity, sum = 0;
                    for (int j = 0; j < w; j++) max = Math.Max(max, xs[r * w + j]);
                    for (int j = 0; j < w; j++) sum += Math.Exp(xs[r * w + j] - max);
                    for (int j = 0; j < w; j++) Check(Math.Exp(xs[r * w + j] - max) / sum, ys[r * w + j], r * w + j);
                });
                _op = () => Ops.Softmax(x).Dispose();
                Bytes = 2.0 * rows * width * sizeof(float);
                break;
            }
            case "layernorm":
            {
                var (rows, width) = Dims(parts[1]);
                var x = Input([rows, width], -2f, 3f, 12);
                var gamma = Input([width], 0.5f, 1.5f, 13);
                var beta = Input([width], -0.5f, 0.5f, 14);
                var g = gamma.ToArray(); var b = beta.ToArray();
                var y = Ops.LayerNorm(x, gamma, beta, 1e-5f, out var mean, out var rstd);
                mean.Dispose(); rstd.Dispose();
                Validate(y, x, (xs, r, w, ys) =>
                {
                    double mu = 0, sq = 0;
                    for (int j = 0; j < w; j++) mu += xs[r * w + j];
                    mu /= w;
                    for (int j = 0; j < w; j++) sq += (xs[r * w + j] - mu) * (xs[r * w + j] - mu);
                    double rs = 1 / Math.Sqrt(sq / w + 1e-5);
                    for (int j = 0; j < w; j++) Check((xs[r * w + j] - mu) * rs * g[j] + b[j], ys[r * w + j], r * w + j);
                });
                _op = () =>
                {
                    var yy = Ops.LayerNorm(x, gamma, beta, 1e-5f, out var m, out var s);
                    yy.Dispose(); m.Dispose(); s.Dispose();
                };
                Bytes = (2.0 * rows * width + 2.0 * width + 2.0 * rows) * sizeof(float); // x, y, γ, β, mean, rstd
                break;
            }
            case "adamw":
            {
                int n = Count(parts[1]);
                var p = Input([n], -1f, 1f, 15);
                var grad = Input([n], -1f, 1f, 16);
                var m = Input([n], -0.1f, 0.1f, 17);
                var v = Input([n], 0f, 0.01f, 18);
                var (ps, gs, ms, vs) = (p.ToArray(), grad.ToArray(), m.ToArray(), v.ToArray());
                const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
                Ops.AdamWStep(p, grad, m, v, lr, b1, b2, eps, wd, 1);
                var pOut = p.ToArray();
                var rng = new Random(3);
                for (int s = 0; s < 4096; s++)
                {
                    int i = rng.Next(n);
                    double mi = b1 * ms[i] + (1 - b1) * gs[i], vi = b2 * vs[i] + (1 - b2) * (double)gs[i] * gs[i];
                    double e = ps[i] * (1 - lr * wd) - lr * (mi / (1 - b1)) / (Math.Sqrt(vi / (1 - b2)) + eps);
                    Check(e, pOut[i], i);
                }
                _op = () => Ops.AdamWStep(p, grad, m, v, lr, b1, b2, eps, wd, 1);
                Bytes = 7.0 * n * sizeof(float); // read p, g, m, v; write p, m, v
                break;
            }
            case "add":
            {
                int n = Count(parts[1]);
                var a = Input([n], -1f, 1f, 19);
                var b = Input([n], -1f, 1f, 20);
                var (xa, xb) = (a.ToArray(), b.ToArray());
                using (var c = Ops.Add(a, b))
                {
                    var cs = c.ToArray();
                    for (int i = 0; i < n; i++) Check((double)xa[i] + xb[i], cs[i], i);
                }
                _op = () => Ops.Add(a, b).Dispose();
                Bytes = 3.0 * n * sizeof(float);
                break;
            }
            case "heads":
            {
                // Attention's head split, [B, T, H, D] → [B, H, T, D] (the small preset's encoder at batch 32).
                var d = parts[1].Split('x').Select(int.Parse).ToArray();
                var x = Input(d, -1f, 1f, 21);
                var xs = x.ToArray();
                using (var y = Ops.Permute(x, 0, 2, 1, 3))
                {
                    var ys = y.ToArray();
                    for (int i = 0, b = 0; b < d[0]; b++)
                        for (int h = 0; h < d[2]; h++)
                            for (int t = 0; t < d[1]; t++)
                                for (int e = 0; e < d[3]; e++, i++) Check(xs[((b * d[1] + t) * d[2] + h) * d[3] + e], ys[i], i);
                }
                _op = () => Ops.Permute(x, 0, 2, 1, 3).Dispose();
                Bytes = 2.0 * x.Length * sizeof(float);
                break;
            }
            case "attention":
            case "attention_chain":
            case "attention_backward":
            {
                // The small preset's encoder self-attention at batch 32: q, k, v [B, T, H·D], heads merged in the output.
                // Bytes: q, k, v read and the output written (forward); dOut, q, k, v and the probabilities read, three
                // gradients written (backward).
                var d = parts[1].Split('x').Select(int.Parse).ToArray();
                int b = d[0], t = d[1], h = d[2], w = d[2] * d[3];
                var (q, k, v) = (Input([b, t, w], -1f, 1f, 31), Input([b, t, w], -1f, 1f, 32), Input([b, t, w], -1f, 1f, 33));
                var probs = Tensor.Empty([b * h, t, t], _device);
                _inputs.Add(probs);
                using (var o = Ops.ScaledDotProductAttention(q, k, v, h, false, null, 0f, 0, probs)) CheckAttention(q, k, v, o, h);
                if (parts[0] == "attention_chain")
                {
                    // What the model ran before the fused op (and runs on ILGPU backends): split, q·kᵀ/√D, softmax, ·v, merge.
                    using (var o = AttentionChain(q, k, v, h)) CheckAttention(q, k, v, o, h);
                    _op = () => AttentionChain(q, k, v, h).Dispose();
                    Bytes = 4.0 * q.Length * sizeof(float);
                }
                else if (parts[0] == "attention")
                {
                    _op = () => Ops.ScaledDotProductAttention(q, k, v, h, false, null, 0f, 0, probs).Dispose();
                    Bytes = 4.0 * q.Length * sizeof(float);
                }
                else
                {
                    var dOut = Input([b, t, w], -1f, 1f, 34);
                    _op = () => { var (dq, dk, dv) = Ops.ScaledDotProductAttentionBackward(dOut, q, k, v, probs, h, 0f, 0); dq!.Dispose(); dk!.Dispose(); dv!.Dispose(); };
                    Bytes = (7.0 * q.Length + probs.Length) * sizeof(float);
                }
                break;
            }
            default: throw new ArgumentException($"Unknown op case '{name}'; expected one of {string.Join(", ", Names)}.");
        }
    }

    public void Run()
    {
        _op();
        _device.Synchronize();
    }

    public void Dispose()
    {
        foreach (var t in _inputs) t.Dispose();
        _inputs.Clear();
    }

    Tensor Input(int[] shape, float low, float high, ulong seed)
    {
        var t = TensorRandom.Uniform(shape, low, high, seed, _device, MemoryCategory.Activation);
        _inputs.Add(t);
        return t;
    }

    /// <summary>Checks 64 spread-out rows (all of them when fewer) of a row-wise op's output, then disposes it.</summary>
    void Validate(Tensor y, Tensor x, Action<float[], int, int, float[]> checkRow)
    {
        using (y)
        {
            var xs = x.ToArray(); var ys = y.ToArray();
            int w = x.Dim(-1), rows = (int)(x.Length / w);
            for (int k = 0; k < Math.Min(rows, 64); k++) checkRow(xs, (int)((long)k * rows / Math.Min(rows, 64)), w, ys);
        }
    }

    static Tensor AttentionChain(Tensor q, Tensor k, Tensor v, int heads)
    {
        int b = q.Dim(0), t = q.Dim(1), w = q.Dim(2), d = w / heads;
        Tensor Split(Tensor x) { using var view = x.Reshape(b, t, heads, d); using var p = Ops.Permute(view, 0, 2, 1, 3); return p.Reshape(b * heads, t, d); }
        using var qh = Split(q);
        using var kh = Split(k);
        using var vh = Split(v);
        using var scores = Ops.Matmul(qh, kh, false, true, 1f / MathF.Sqrt(d));
        using var probs = Ops.Softmax(scores, output: scores);
        using var context = Ops.Matmul(probs, vh);
        using var heads4 = context.Reshape(b, heads, t, d);
        using var merged = Ops.Permute(heads4, 0, 2, 1, 3);
        return merged.Reshape(b, t, w);
    }

    /// <summary>Attention's output against double precision at 64 spread-out (batch, head, query) rows.</summary>
    void CheckAttention(Tensor q, Tensor k, Tensor v, Tensor o, int heads)
    {
        var (qs, ks, vs, os) = (q.ToArray(), k.ToArray(), v.ToArray(), o.ToArray());
        int b = q.Dim(0), t = q.Dim(1), w = q.Dim(2), hd = w / heads;
        for (int n = 0; n < 64; n++)
        {
            int bi = n * 7 % b, h = n % heads, i = n * 13 % t;
            var logit = new double[t];
            for (int j = 0; j < t; j++)
            {
                for (int e = 0; e < hd; e++) logit[j] += (double)qs[(bi * t + i) * w + h * hd + e] * ks[(bi * t + j) * w + h * hd + e];
                logit[j] /= Math.Sqrt(hd);
            }
            double max = logit.Max(), sum = logit.Sum(x => Math.Exp(x - max));
            for (int e = 0; e < hd; e++)
            {
                double acc = 0;
                for (int j = 0; j < t; j++) acc += Math.Exp(logit[j] - max) / sum * vs[(bi * t + j) * w + h * hd + e];
                Check(acc, os[(bi * t + i) * w + h * hd + e], (bi * t + i) * w + h * hd + e);
            }
        }
    }

    void Check(double expected, float actual, long index)
    {
        if (!(Math.Abs(expected - actual) <= 1e-4 + 1e-4 * Math.Abs(expected)))
            throw new InvalidOperationException($"{Name} on {_device.Id} is wrong at index {index}: expected {expected}, got {actual}.");
    }

    static (int Rows, int Width) Dims(string s) { var d = s.Split('x'); return (int.Parse(d[0]), int.Parse(d[1])); }
    static int Count(string s) => int.Parse(s.TrimEnd('M')) * (1 << 20);

    /// <summary>"cpu", plus "cuda"/"opencl" when discovered; never the ilgpu-cpu simulator.</summary>
    public static IEnumerable<string> Devices() =>
        new[] { "cpu" }.Concat(Device.Discover().Select(d => d.Id.Split(':')[0]).Where(id => id is "cuda" or "opencl").Distinct());
}

/// <summary>
/// Softmax [12288 × 97 | 1024], LayerNorm [4096 × 512], AdamW step on 1M and 16M parameters, Add on 16M
/// elements, on cpu (and cuda/opencl when present), with a GB/s column (minimum bytes moved / mean time).
/// Setup validates the output against a double-precision reference before timing.
/// Run: dotnet run -c Release --project bench -- --filter '*OpsBench*' [--job short]
/// </summary>
[Config(typeof(GBpsConfig))]
public class OpsBench
{
    [Params("softmax-12288x97", "softmax-12288x1024", "layernorm-4096x512", "adamw-1M", "adamw-16M", "add-16M")]
    public string Op { get; set; } = "";

    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "";

    public static IEnumerable<string> Devices() => OpCase.Devices();

    OpCase _case = null!;

    [GlobalSetup]
    public void Setup() => _case = new OpCase(Op, Nanolora.Tensors.Device.Get(Device));

    [Benchmark]
    public void Run() => _case.Run();

    [GlobalCleanup]
    public void Cleanup() => _case.Dispose();

    sealed class GBpsConfig : ManualConfig
    {
        public GBpsConfig() => AddColumn(new RateColumn("GBps", "GB/s", "minimum bytes read + written / mean time, in 10^9 bytes per second", BytesOf));

        // Bytes depend only on the shape; a cpu case computes them (small validation cost, once per op).
        static readonly Dictionary<string, double> Bytes = new();
        static double BytesOf(BenchmarkDotNet.Running.BenchmarkCase c)
        {
            var op = (string)c.Parameters["Op"];
            if (Bytes.TryGetValue(op, out var bytes)) return bytes;
            using var opCase = new OpCase(op, Nanolora.Tensors.Device.Get("cpu"));
            return Bytes[op] = opCase.Bytes;
        }
    }
}

/// <summary>
/// Stopwatch harness for <see cref="OpCase"/>s: validate, 3 warm-ups, 7 samples of ≥ 0.2 s, median and best
/// GB/s, plus milliseconds per call. Same timing as bench/peers/torch_ops.py.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll ops-quick [device] [name prefixes]
/// </summary>
public static class OpsQuick
{
    /// <param name="deviceId">The device.</param>
    /// <param name="only">Op cases whose names start with one of these (all when empty): `ops-quick cpu attention`.</param>
    public static void Run(string deviceId, string[] only)
    {
        var device = Device.Get(deviceId);
        Console.WriteLine($"== Nanolora ops on {device}");
        foreach (var name in OpCase.Names.Where(n => only.Length == 0 || only.Any(n.StartsWith)))
        {
            using var c = new OpCase(name, device);
            var (median, best) = Timing.MedianBest(c.Run, 0.2);
            Console.WriteLine($"nanolora {name,-20} median {c.Bytes / median / 1e9,7:F1} GB/s  best {c.Bytes / best / 1e9,7:F1} GB/s" +
                $"  ({median * 1e3:F3} ms median)");
        }
    }
}

/// <summary>Shared Stopwatch timing: 3 warm-ups, then 7 samples each repeating the action for about minSeconds.</summary>
public static class Timing
{
    public static (double MedianSeconds, double BestSeconds) MedianBest(Action action, double minSeconds, int warmups = 3, int samples = 7)
    {
        for (int w = 0; w < warmups; w++) action();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        action();
        double once = Math.Max(clock.Elapsed.TotalSeconds, 1e-7);
        int reps = Math.Max(1, (int)Math.Ceiling(minSeconds / once));
        var times = new List<double>();
        for (int s = 0; s < samples; s++)
        {
            clock.Restart();
            for (int i = 0; i < reps; i++) action();
            times.Add(clock.Elapsed.TotalSeconds / reps);
        }
        times.Sort();
        return (times[samples / 2], times[0]);
    }
}
