using System.Text.Json.Nodes;
using Nanolora.Tensors;

namespace Nanolora.DeviceRunner;

/// <summary>
/// <c>bandwidth --device D [--small]</c>: the memory-bound ops (softmax, LayerNorm, the fused AdamW step, and add as
/// the plain elementwise case) in effective GB/s = the least bytes each must move (every input read once, every
/// output written once) / median time, against a device-to-device copy of the same buffer size, which is what the
/// memory system gives a kernel that does nothing else. Each op's output is first compared with the cpu backend's.
/// </summary>
public static class BandwidthMode
{
    public static int Run(RunnerOptions o)
    {
        var device = o.Device();
        bool small = o.Flag("small");
        // Full: 128 MiB per tensor, far past any cache (H200: 50 MB L2). Small: what a CPU test runs in seconds.
        int rows = small ? 256 : 32768, width = 1024, n = rows * width;
        Console.WriteLine($"== bandwidth on {device}: {n:N0} floats ({Results.MiB(4L * n)}) per tensor; median of 7 samples of >= 50 ms");
        var cases = new (string Name, double Bytes, Func<Probe, Action> Setup, Func<Probe, float[][]> Output)[]
        {
            ("copy", 2.0 * n * 4, p => { var (src, dst) = (p.T(1, [n]), p.Own(Tensor.Empty([n], p.Device))); return () => dst.CopyFrom(src); },
                p => { var dst = p.Own(Tensor.Empty([n], p.Device)); dst.CopyFrom(p.T(1, [n])); return [dst.ToArray()]; }),
            ("add", 3.0 * n * 4, p => { var (a, b) = (p.T(2, [n]), p.T(3, [n])); return () => Ops.Add(a, b).Dispose(); },
                p => [p.Read(Ops.Add(p.T(2, [n]), p.T(3, [n])))]),
            ($"softmax [{rows}, {width}]", 2.0 * n * 4, p => { var x = p.T(4, [rows, width], -4, 4); return () => Ops.Softmax(x).Dispose(); },
                p => [p.Read(Ops.Softmax(p.T(4, [rows, width], -4, 4)))]),
            ($"layernorm [{rows}, {width}]", (2.0 * n + 2.0 * width + 2.0 * rows) * 4, p =>
            {
                var (x, g, b) = (p.T(5, [rows, width], -2, 3), p.T(6, [width], 0.5f, 1.5f), p.T(7, [width], -0.5f, 0.5f));
                return () => { Ops.LayerNorm(x, g, b, 1e-5f, out var mean, out var rstd).Dispose(); mean.Dispose(); rstd.Dispose(); };
            }, p =>
            {
                var y = p.Own(Ops.LayerNorm(p.T(5, [rows, width], -2, 3), p.T(6, [width], 0.5f, 1.5f), p.T(7, [width], -0.5f, 0.5f), 1e-5f, out var mean, out var rstd));
                p.Own(mean); p.Own(rstd);
                return [y.ToArray(), mean.ToArray(), rstd.ToArray()];
            }),
            ("adamw", 7.0 * n * 4, p =>
            {
                var (w, g, m, v) = (p.T(8, [n]), p.T(9, [n]), p.T(10, [n], -0.1f, 0.1f), p.T(11, [n], 0f, 0.01f));
                return () => Ops.AdamWStep(w, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
            }, p =>
            {
                var (w, g, m, v) = (p.T(8, [n]), p.T(9, [n]), p.T(10, [n], -0.1f, 0.1f), p.T(11, [n], 0f, 0.01f));
                Ops.AdamWStep(w, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, 1);
                return [w.ToArray(), m.ToArray(), v.ToArray()];
            }),
        };
        var list = new JsonArray();
        bool allCorrect = true;
        double copyRate = 0;
        foreach (var (name, bytes, setup, output) in cases)
        {
            bool correct = Matches(device, output, out double error);
            allCorrect &= correct;
            using var probe = new Probe(device);
            var (median, best) = DeviceTiming.Measure(device, setup(probe), 7, 0.05);
            double rate = bytes / median / 1e9;
            if (name == "copy") copyRate = rate;
            Console.WriteLine($"{name,-22} {rate,8:F1} GB/s (best {bytes / best / 1e9:F1})  {median * 1e3,9:F3} ms  {(copyRate > 0 ? rate / copyRate : 0),5:P0} of copy" +
                $"  vs cpu backend: max abs {error:G2}{(correct ? "" : "  WRONG RESULT")}");
            list.Add(new JsonObject
            {
                ["op"] = name, ["bytes"] = bytes, ["ms_median"] = Math.Round(median * 1e3, 4), ["gbps_median"] = Math.Round(rate, 1),
                ["gbps_best"] = Math.Round(bytes / best / 1e9, 1), ["fraction_of_copy"] = copyRate > 0 ? Math.Round(rate / copyRate, 3) : null,
                ["max_abs_error_vs_cpu"] = error, ["correct"] = correct,
            });
        }
        var results = Results.Start("bandwidth", device);
        results["floats_per_tensor"] = n;
        results["ops"] = list;
        Results.Write(o.JsonPath, results, allCorrect);
        return allCorrect ? 0 : 1;
    }

    static bool Matches(Device device, Func<Probe, float[][]> output, out double error)
    {
        float[][] expected, actual;
        using (var p = new Probe(Device.Cpu)) expected = output(p);
        using (var p = new Probe(device)) actual = output(p);
        var comparisons = expected.Zip(actual, (e, a) => Comparison.Of("", e, a, 1e-5, 1e-4)).ToList();
        error = comparisons.Max(c => c.MaxAbsError);
        return comparisons.All(c => c.Passed);
    }
}
