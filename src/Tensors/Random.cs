namespace Nanolora.Tensors;

/// <summary>
/// A counter-based hash (SplitMix64's finalizer over seed and element index): the n-th number of a
/// stream needs no state, so the host, every CPU thread and every GPU kernel produce the same bits.
/// </summary>
internal static class CounterHash
{
    const ulong Golden = 0x9E3779B97F4A7C15UL;

    public static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The stream key of a seed (computed once on the host and passed to kernels).</summary>
    public static ulong Key(ulong seed) => Mix(seed ^ 0x6A09E667F3BCC909UL);

    /// <summary>The 64-bit hash of element <paramref name="index"/> in the stream of <paramref name="key"/>.</summary>
    public static ulong At(ulong key, ulong index) => Mix(key + (index + 1) * Golden);

    /// <summary>The top 24 bits: an integer in [0, 2^24), exact as a float.</summary>
    public static int Bits24(ulong key, ulong index) => (int)(At(key, index) >> 40);

    /// <summary>Bits24 for the 8 indices start … start+7 at once (AVX-512 has 64-bit multiplies); same bits as the scalar form.</summary>
    public static System.Runtime.Intrinsics.Vector512<ulong> Bits24x8(ulong key, ulong start)
    {
        var index = System.Runtime.Intrinsics.Vector512.Create(start + 1) + System.Runtime.Intrinsics.Vector512.Create(0UL, 1, 2, 3, 4, 5, 6, 7);
        var z = System.Runtime.Intrinsics.Vector512.Create(key) + index * Golden;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (z ^ (z >> 31)) >> 40;
    }

    /// <summary>Bits24 for the 4 indices start … start+3 (AVX2: .NET composes the 64-bit multiplies of 32-bit ones); same bits as the scalar form.</summary>
    public static System.Runtime.Intrinsics.Vector256<ulong> Bits24x4(ulong key, ulong start)
    {
        var index = System.Runtime.Intrinsics.Vector256.Create(start + 1) + System.Runtime.Intrinsics.Vector256.Create(0UL, 1, 2, 3);
        var z = System.Runtime.Intrinsics.Vector256.Create(key) + index * Golden;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return (z ^ (z >> 31)) >> 40;
    }
}

/// <summary>
/// Seeded random tensors that are identical on every backend for the same seed: the numbers are made on
/// the host by <see cref="CounterHash"/> (not System.Random, whose algorithm may change) and uploaded.
/// </summary>
public static class TensorRandom
{
    const double Inv24 = 1.0 / (1 << 24), Inv53 = 1.0 / (1UL << 53);

    /// <summary>U[low, high), 24-bit resolution.</summary>
    public static Tensor Uniform(ReadOnlySpan<int> shape, float low, float high, ulong seed, Device? device = null, MemoryCategory category = MemoryCategory.Parameter)
    {
        if (!(high >= low)) throw new ArgumentException($"Uniform: high ({high}) must be ≥ low ({low}).");
        ulong key = CounterHash.Key(seed);
        double lo = low, span = (double)high - low;
        return Generate(shape, device, category, (data, start, end) =>
        {
            for (long i = start; i < end; i++)
            {
                float v = (float)(lo + span * (CounterHash.Bits24(key, (ulong)i) * Inv24));
                data[i] = v < high ? v : low; // rounding to float may reach high; keep the interval half-open
            }
        });
    }

    /// <summary>N(mean, std²) by Box–Muller over pairs of 53-bit uniforms.</summary>
    public static Tensor Normal(ReadOnlySpan<int> shape, float mean, float std, ulong seed, Device? device = null, MemoryCategory category = MemoryCategory.Parameter)
    {
        if (!(std >= 0)) throw new ArgumentException($"Normal: std must be ≥ 0, got {std}.");
        ulong key = CounterHash.Key(seed);
        return Generate(shape, device, category, (data, start, end) =>
        {
            // Whole pairs only, so a chunk boundary never splits one; the caller's chunks start even.
            for (long i = start; i < end; i += 2)
            {
                double u1 = ((CounterHash.At(key, (ulong)i) >> 11) + 1) * Inv53;    // (0, 1]: log is finite
                double u2 = (CounterHash.At(key, (ulong)i + 1) >> 11) * Inv53;
                double r = Math.Sqrt(-2.0 * Math.Log(u1)), theta = 2.0 * Math.PI * u2;
                data[i] = (float)(mean + std * r * Math.Cos(theta));
                if (i + 1 < end) data[i + 1] = (float)(mean + std * r * Math.Sin(theta));
            }
        });
    }

    /// <summary>
    /// PyTorch's kaiming_uniform_(a) with fan-in mode and leaky-relu gain, as nn.Linear initializes its weight
    /// with a = √5: bound = sqrt(6 / ((1 + a²)·fanIn)), values U(−bound, bound).
    /// </summary>
    public static Tensor KaimingUniform(ReadOnlySpan<int> shape, int fanIn, ulong seed, Device? device = null, float a = 2.2360679775f, MemoryCategory category = MemoryCategory.Parameter)
    {
        if (fanIn <= 0) throw new ArgumentException($"KaimingUniform: fanIn must be positive, got {fanIn}.");
        float bound = (float)Math.Sqrt(6.0 / ((1.0 + (double)a * a) * fanIn));
        return Uniform(shape, -bound, bound, seed, device, category);
    }

    static Tensor Generate(ReadOnlySpan<int> shape, Device? device, MemoryCategory category, Action<float[], long, long> fill)
    {
        device ??= Device.Default;
        var t = Tensor.Empty(shape, device, category);
        long n = t.Length;
        var data = device.IsCpu ? t.HostArray : new float[n];
        const long grain = 1 << 16; // even, so Normal's pairs never straddle chunks
        long chunks = (n + grain - 1) / grain;
        CpuParallel.For(chunks, 1, (c0, c1) => fill(data, c0 * grain, Math.Min(n, c1 * grain)));
        if (!device.IsCpu) t.CopyFrom(data);
        return t;
    }
}
