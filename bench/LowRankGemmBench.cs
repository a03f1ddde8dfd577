using System.Diagnostics;
using Nanolora.Tensors;

namespace Nanolora.Bench;

/// <summary>
/// The GEMMs of one LoRA linear at the small preset's shapes (N = B·S rows, C wide, rank R), beside the base layer's:
/// the skinny products (an output or a reduction only R wide) are where a packed, tiled GEMM loses most of its speed.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll lowrank-gemm [device] [N=3072 C=256 R=8]
/// </summary>
public static class LowRankGemmQuick
{
    public static void Run(string deviceId, string[] rest)
    {
        var device = Device.Get(deviceId);
        int Arg(string key, int fallback) => rest.Where(a => a.StartsWith(key + "=")).Select(a => int.Parse(a[(key.Length + 1)..])).DefaultIfEmpty(fallback).First();
        int n = Arg("N", 3072), c = Arg("C", 256), r = Arg("R", 8);
        using var x = TensorRandom.Uniform([n, c], -1, 1, 1, device);
        using var w = TensorRandom.Uniform([c, c], -1, 1, 2, device);
        using var a = TensorRandom.Uniform([r, c], -1, 1, 3, device);
        using var b = TensorRandom.Uniform([c, r], -1, 1, 4, device);
        using var low = TensorRandom.Uniform([n, r], -1, 1, 5, device);
        using var y = Tensor.Empty([n, c], device);
        using var dlow = Tensor.Empty([n, r], device);
        using var dB = Tensor.Empty([c, r], device);
        using var dA = Tensor.Empty([r, c], device);
        using var dW = Tensor.Empty([c, c], device);
        Console.WriteLine($"== LoRA linear GEMMs on {device}: N {n}, C {c}, R {r}; median of 21 samples of 10 calls");
        Console.WriteLine("| product | shape (M×N×K) | ms | GFLOP/s |");
        Console.WriteLine("|---|---|---:|---:|");
        void Time(string name, int m, int nn, int k, Action f)
        {
            for (int i = 0; i < 3; i++) f();
            device.Synchronize();
            var times = new List<double>();
            for (int i = 0; i < 21; i++)
            {
                var clock = Stopwatch.StartNew();
                for (int j = 0; j < 10; j++) f();
                device.Synchronize();
                times.Add(clock.Elapsed.TotalMilliseconds / 10);
            }
            times.Sort();
            double ms = times[10];
            Console.WriteLine($"| {name} | {m}×{nn}×{k} | {ms:F3} | {2.0 * m * nn * k / ms / 1e6:F1} |");
        }
        Time("base y = x·Wᵀ", n, c, c, () => Ops.MatmulInto(y, x, w, false, true, 1f, 0f));
        Time("base dx = dy·W", n, c, c, () => Ops.MatmulInto(y, x, w, false, false, 1f, 0f));
        Time("base dW = dyᵀ·x (full fine-tuning only)", c, c, n, () => Ops.MatmulInto(dW, y, x, true, false, 1f, 0f));
        Time("low = h·Aᵀ", n, r, c, () => Ops.MatmulInto(low, x, a, false, true, 1f, 0f));
        Time("y += s·low·Bᵀ", n, c, r, () => Ops.MatmulInto(y, low, b, false, true, 2f, 1f));
        Time("dlow = s·dy·B", n, r, c, () => Ops.MatmulInto(dlow, y, b, false, false, 2f, 0f));
        Time("dx += dlow·A", n, c, r, () => Ops.MatmulInto(y, dlow, a, false, false, 1f, 1f));
        Time("dB = s·dyᵀ·low", c, r, n, () => Ops.MatmulInto(dB, y, low, true, false, 2f, 0f));
        Time("dA = dlowᵀ·h", r, c, n, () => Ops.MatmulInto(dA, dlow, x, true, false, 1f, 0f));
        // The two products LoRA runs as one GEMM (Ops.MatmulSumInto): the rank-R term as R more reduction steps.
        Time("fused y = x·Wᵀ + s·low·Bᵀ", n, c, c + r, () => Ops.MatmulSumInto(y, x, w, true, low, b, true, 2f, 0f));
        Time("fused dx = dy·W + dlow·A", n, c, c + r, () => Ops.MatmulSumInto(y, x, w, false, dlow, a, false, 1f, 0f));
    }
}
