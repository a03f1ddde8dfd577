namespace Nanolora.Tensors;

/// <summary>
/// The op set. One file per op family (Ops/*.cs) holds the CPU implementation, the ILGPU kernels and
/// the backward pieces side by side. Every op returns a fresh tensor owned by the caller.
/// </summary>
public static partial class Ops
{
    /// <summary>Throws unless every tensor is alive and on the same device; returns that device.</summary>
    internal static Device SameDevice(string op, params Tensor[] tensors)
    {
        var device = tensors[0].Device;
        foreach (var t in tensors)
        {
            if (t.IsDisposed) throw new ObjectDisposedException(nameof(Tensor), $"{op}: an input tensor was used after Dispose().");
            if (t.Device != device)
                throw new ArgumentException($"{op}: tensors are on different devices ({device.Id} and {t.Device.Id}); move them with To(device) first.");
        }
        return device;
    }

    internal static void SameShape(string op, Tensor a, Tensor b)
    {
        if (!a.Shape.SequenceEqual(b.Shape))
            throw new ArgumentException($"{op}: shapes must match, got {a.ShapeString} and {b.ShapeString}.");
    }

    /// <summary>ILGPU launch indices are 32-bit; larger tensors must be split by the caller.</summary>
    internal static int GpuLength(Tensor t, string op)
    {
        if (t.Length > int.MaxValue) throw new ArgumentException($"{op}: {t.Length} elements exceed the 2^31-1 an ILGPU launch can index.");
        return (int)t.Length;
    }

    /// <summary>Threads for a grid-stride launch over n elements.</summary>
    internal static int LaunchThreads(IlgpuDevice d, long n) => (int)Math.Max(1, Math.Min(n, d.GridStrideThreads));
}

/// <summary>Splits CPU work into chunks over the thread pool; small jobs stay on the calling thread.</summary>
internal static class CpuParallel
{
    public static void For(long count, long grain, Action<long, long> body)
    {
        int workers = Environment.ProcessorCount;
        if (count <= grain || workers == 1) { body(0, count); return; }
        int chunks = (int)Math.Min(workers * 4, (count + grain - 1) / grain);
        long per = (count + chunks - 1) / chunks;
        Parallel.For(0, chunks, c =>
        {
            long start = c * per, end = Math.Min(count, start + per);
            if (start < end) body(start, end);
        });
    }
}
