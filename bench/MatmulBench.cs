using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Nanolora.Tensors;

namespace Nanolora.Bench;

/// <summary>
/// C = A·B at 256³, 512³, 1024³ and [2048×512]·[512×2048] on cpu (and cuda/opencl when present), with a
/// GFLOP/s column (2·M·N·K / mean time). Setup validates sampled outputs against a double-precision
/// reference before anything is timed. Peers (PyTorch CPU, OpenBLAS): bench/peers/run-peers.sh.
/// Run: dotnet run -c Release --project bench -- --filter '*MatmulBench*' [--job short]
/// </summary>
[Config(typeof(GflopsConfig))]
public class MatmulBench
{
    [Params("256x256x256", "512x512x512", "1024x1024x1024", "2048x512x2048")]
    public string Shape { get; set; } = "";

    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "";

    public static IEnumerable<string> Devices() =>
        new[] { "cpu" }.Concat(Nanolora.Tensors.Device.Discover().Select(d => d.Id.Split(':')[0]).Where(id => id is "cuda" or "opencl").Distinct());

    Tensor _a = null!, _b = null!, _c = null!;
    Device _device = null!;

    [GlobalSetup]
    public void Setup()
    {
        var (m, k, n) = Parse(Shape);
        _device = Nanolora.Tensors.Device.Get(Device);
        var rng = new Random(7);
        var ad = Enumerable.Range(0, m * k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        var bd = Enumerable.Range(0, k * n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _a = Tensor.FromArray(ad, [m, k], _device);
        _b = Tensor.FromArray(bd, [k, n], _device);
        _c = Tensor.Empty([m, n], _device);
        Ops.MatmulInto(_c, _a, _b);
        var c = _c.ToArray();
        for (int s = 0; s < 256; s++)
        {
            int i = rng.Next(m), j = rng.Next(n);
            double e = 0;
            for (int p = 0; p < k; p++) e += (double)ad[i * k + p] * bd[p * n + j];
            if (Math.Abs(e - c[i * n + j]) > 1e-4 + 1e-4 * Math.Abs(e))
                throw new InvalidOperationException($"Matmul {Shape} on {Device} is wrong at ({i}, {j}): expected {e}, got {c[i * n + j]}.");
        }
    }

    [Benchmark]
    public void Matmul()
    {
        Ops.MatmulInto(_c, _a, _b);
        _device.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup() { _a.Dispose(); _b.Dispose(); _c.Dispose(); }

    internal static (int M, int K, int N) Parse(string shape)
    {
        var d = shape.Split('x').Select(int.Parse).ToArray();
        return (d[0], d[1], d[2]);
    }

    sealed class GflopsConfig : ManualConfig
    {
        public GflopsConfig() => AddColumn(new RateColumn("GFLOPS", "GFLOP/s", "2·M·N·K / mean time, in 10^9 floating-point operations per second",
            c => { var (m, k, n) = Parse((string)c.Parameters["Shape"]); return 2.0 * m * n * k; }));
    }
}

/// <summary>
/// A Stopwatch harness timed the same way as bench/peers (3 warm-ups, 7 samples of ~2 GFLOP each,
/// median and best), after validating against the reference. Besides wall-clock GFLOP/s it prints
/// GFLOP per CPU-second of this process, which stays meaningful when the machine is shared.
/// Run: dotnet run -c Release --project bench -- matmul-quick [device] [MxKxN ...] (default: MatmulBench's four shapes)
/// </summary>
public static class MatmulQuick
{
    public static void Run(string device, string[] shapes)
    {
        Console.WriteLine($"== Nanolora Ops.MatmulInto on {Nanolora.Tensors.Device.Get(device)}");
        foreach (var shape in shapes.Length > 0 ? shapes : ["256x256x256", "512x512x512", "1024x1024x1024", "2048x512x2048"])
        {
            var bench = new MatmulBench { Shape = shape, Device = device };
            bench.Setup();
            var (m, k, n) = MatmulBench.Parse(shape);
            double flops = 2.0 * m * n * k;
            int reps = Math.Max(3, (int)(2e9 / flops));
            for (int w = 0; w < 3; w++) bench.Matmul();
            var wall = new List<double>();
            var cpu = new List<double>();
            var process = System.Diagnostics.Process.GetCurrentProcess();
            for (int r = 0; r < 7; r++)
            {
                process.Refresh();
                var cpu0 = process.TotalProcessorTime;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                for (int i = 0; i < reps; i++) bench.Matmul();
                wall.Add(clock.Elapsed.TotalSeconds / reps);
                process.Refresh();
                cpu.Add((process.TotalProcessorTime - cpu0).TotalSeconds / reps);
            }
            bench.Cleanup();
            wall.Sort();
            cpu.Sort();
            Console.WriteLine($"nanolora {m,5}x{k,5}x{n,5}  median {flops / wall[3] / 1e9,7:F1} GFLOP/s  best {flops / wall[0] / 1e9,7:F1} GFLOP/s" +
                $"  | per CPU-second: median {flops / cpu[3] / 1e9,7:F1}");
        }
    }
}
