using Nanolora.Tensors;

namespace Nanolora.Tests;

/// <summary>
/// Shared test helpers: the devices every op is checked on, seeded inputs, and comparison against a
/// double-precision reference that names the first bad index and both values.
/// </summary>
public static class Reference
{
    /// <summary>cpu and ilgpu-cpu always; cuda/opencl too when this machine has them.</summary>
    public static IEnumerable<object[]> Devices()
    {
        yield return ["cpu"];
        yield return ["ilgpu-cpu"];
        foreach (var (id, _) in Device.Discover())
            if (id.StartsWith("cuda") || id.StartsWith("opencl")) yield return [id];
    }

    /// <summary>The devices that run the ILGPU kernels: <see cref="Devices"/> without cpu (ilgpu-cpu, and
    /// cuda/opencl where present; opencl:N includes POCL when NANOLORA_OPENCL_CPU=1, as in CI).</summary>
    public static IEnumerable<object[]> KernelDevices() => Devices().Where(d => (string)d[0] != "cpu");

    public static Device Dev(string id) => Device.Get(id);

    /// <summary>Deterministic values in [lo, hi) from a fixed seed.</summary>
    public static float[] Random(int n, int seed, float lo = -1f, float hi = 1f)
    {
        var rng = new Random(seed);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = lo + (hi - lo) * (float)rng.NextDouble();
        return a;
    }

    public static Tensor RandomTensor(Device d, int seed, params int[] shape) =>
        Nanolora.Tensors.Tensor.FromArray(Random((int)ShapeMath.Numel(shape), seed), shape, d);

    public static void Close(ReadOnlySpan<double> expected, ReadOnlySpan<float> actual, double atol = 1e-5, double rtol = 1e-4, string what = "")
    {
        Assert.True(expected.Length == actual.Length, $"{what}: expected {expected.Length} elements, got {actual.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i];
            bool ok = Math.Abs(e - a) <= atol + rtol * Math.Abs(e) || (double.IsNaN(e) && double.IsNaN(a)) || (double.IsInfinity(e) && e == a);
            if (!ok) Assert.Fail($"{what}: first mismatch at index {i}: expected {e:R}, got {a:R} (atol {atol}, rtol {rtol})");
        }
    }

    public static void Close(float[] expected, float[] actual, double atol = 1e-5, double rtol = 1e-4, string what = "") =>
        Close(expected.Select(x => (double)x).ToArray(), actual, atol, rtol, what);
}
