using System.Diagnostics;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using Nanolora.Tensors;

namespace Nanolora.Bench;

/// <summary>
/// The cpu GEMM's micro-kernel alone, without packing or scheduling: it runs over already packed A panels and B slices
/// in the order the GEMM's blocks use them (every A panel of a 128-row block against one B slice, then the next slice),
/// on 1 thread and on every thread at once, with working sets sized for L1/L2, L2 and L3. Against `fma-peak` this says
/// how much of a full product's shortfall is the kernel's and how much its packing, threads and memory.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll gemm-kernel
/// </summary>
public static unsafe class GemmKernelQuick
{
    public static void Run(string _)
    {
        if (!Avx2.IsSupported) { Console.WriteLine("gemm-kernel: needs AVX2 (x86-64)"); return; }
        bool wide = Vector512.IsHardwareAccelerated;
        int mr = wide ? Avx512Kernel.MR : Avx2Kernel.MR, nr = wide ? Avx512Kernel.NR : Avx2Kernel.NR, panels = 128 / mr;
        Console.WriteLine($"== GEMM micro-kernel {mr}×{nr} ({(wide ? "AVX-512" : "AVX2")}) over packed panels, {panels} A panels per block");
        foreach (var (kc, slices, where) in new[] { (256, 1, "A block + B slice in L2, B slice in L1"), (1024, 1, "A block + B slice in L2"), (1024, 4, "A block + 4 B slices in L2"), (1024, 32, "B (32 slices) from L3") })
        {
            var a = GC.AllocateUninitializedArray<float>(mr * kc * panels + 16, pinned: true);
            var b = GC.AllocateUninitializedArray<float>(nr * kc * slices + 16, pinned: true);
            var rng = new Random(1);
            for (int i = 0; i < a.Length; i++) a[i] = (float)rng.NextDouble() - 0.5f;
            for (int i = 0; i < b.Length; i++) b[i] = (float)rng.NextDouble() - 0.5f;
            double flops = 2.0 * mr * nr * kc * panels * slices;
            int reps = (int)Math.Max(1, 1e9 / flops);
            foreach (int threads in new[] { 1, Environment.ProcessorCount })
            {
                var samples = new List<double>();
                // Each thread its own C (one 128-row block × all slices), made before the clock starts.
                var cs = Enumerable.Range(0, threads).Select(_ => GC.AllocateUninitializedArray<float>(panels * mr * nr * slices + 16, pinned: true)).ToArray();
                for (int r = 0; r < 8; r++)
                {
                    var clock = Stopwatch.StartNew();
                    Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, i => Sweep(wide, reps, kc, panels, slices, a, b, cs[i]));
                    if (r > 0) samples.Add(threads * flops * reps / clock.Elapsed.TotalSeconds / 1e9);   // the first warms the JIT
                }
                samples.Sort();
                Console.WriteLine($"gemm-kernel  kc {kc,4}  slices {slices,2}  {threads} threads  median {samples[samples.Count / 2],7:F1} GFLOP/s  best {samples[^1],7:F1} GFLOP/s  ({where})");
            }
        }
    }

    /// <summary>One thread's sweeps: A and B shared read-only, as the GEMM's tasks share packed B; all three 64-byte aligned as the GEMM's packed buffers are.</summary>
    static void Sweep(bool wide, int reps, int kc, int panels, int slices, float[] a, float[] b, float[] c)
    {
        int mr = wide ? Avx512Kernel.MR : Avx2Kernel.MR, nr = wide ? Avx512Kernel.NR : Avx2Kernel.NR, ldc = nr * slices;
        float* ap = PackBuffers.Aligned(a), bp = PackBuffers.Aligned(b), cp = PackBuffers.Aligned(c);
        for (int i = 0; i < reps; i++)
            for (int s = 0; s < slices; s++)
                for (int p = 0; p < panels; p++)
                {
                    float* panel = ap + p * mr * kc, slice = bp + (long)s * nr * kc, tile = cp + (long)p * mr * ldc + s * nr;
                    if (wide) Avx512Kernel.Run(kc, panel, slice, tile, ldc, 1f, 0f, false);
                    else Avx2Kernel.Run(kc, panel, slice, tile, ldc, 1f, 0f, false);
                }
    }
}
