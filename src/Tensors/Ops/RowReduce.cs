using System.Numerics;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;

// ILGPU's simulator emits its launch code into a dynamic assembly of this name; it needs this to see the
// internal parameter structs of the kernels (they stay out of the public API).
[assembly: System.Runtime.CompilerServices.InternalsVisibleTo("ILGPURuntime")]

namespace Nanolora.Tensors;

/// <summary>
/// The building blocks of the row-wise kernels (softmax, norms, cross-entropy): one group of threads
/// owns one row, strides over it, and combines per-thread values with a shared-memory tree reduction.
/// </summary>
internal static class RowReduce
{
    /// <summary>Shared-memory slots each row kernel allocates: the largest group size ever launched.</summary>
    public const int MaxGroup = 256;

    /// <summary>
    /// A power-of-two group size for rows of <paramref name="width"/>: at least a warp, at most 256.
    /// The simulator is capped at 64 because each simulated thread is an OS thread and barriers
    /// dominate there; it also means simulator tests with wide rows exercise the strided loop.
    /// </summary>
    public static int GroupSize(IlgpuDevice d, int width)
    {
        int cap = d.Kind == DeviceKind.IlgpuCpu ? 64 : Math.Min(MaxGroup, d.Accelerator.MaxNumThreadsPerGroup);
        cap = 1 << BitOperations.Log2((uint)Math.Max(cap, 1));
        int floor = Math.Min(cap, (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(d.Accelerator.WarpSize, 1)));
        int wanted = (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(width, 1));
        return Math.Clamp(wanted, floor, cap);
    }

    /// <summary>One group per row.</summary>
    public static KernelConfig PerRow(IlgpuDevice d, int rows, int width) => new(rows, GroupSize(d, width));

    // Every reduction takes a shared buffer of its own, allocated in the kernel and used by no other
    // reduction there. Why not one buffer and a barrier after reading the result: ILGPU's O2 code
    // placement sinks the load `shared[0]` to its first use, which may lie past that barrier and past the
    // next reduction's stores into shared[0]. POCL ran LayerNorm that way and got wrong rows (13 test
    // failures); the simulator, which runs the IL as written, never shows it. With a buffer per
    // reduction nothing writes a buffer after its result is read, so wherever the load lands it reads the
    // same value, and no trailing barrier is needed. Reusing a buffer is now a plain race on every backend.
    // Loads inside the tree (shared[t + half]) feed a store in the same block, so they cannot sink past a barrier.

    /// <summary>The sum of <paramref name="value"/> over the group; every thread gets it. Group size must be a
    /// power of two; <paramref name="shared"/> (≥ group size) must be this call's own buffer (see above).</summary>
    public static float Sum(ArrayView<float> shared, float value)
    {
        int t = Group.IdxX;
        shared[t] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half >>= 1)
        {
            if (t < half) shared[t] += shared[t + half];
            Group.Barrier();
        }
        return shared[0];
    }

    /// <summary>The maximum of <paramref name="value"/> over the group; every thread gets it. Same rules as <see cref="Sum"/>.</summary>
    public static float Max(ArrayView<float> shared, float value)
    {
        int t = Group.IdxX;
        shared[t] = value;
        Group.Barrier();
        for (int half = Group.DimX / 2; half > 0; half >>= 1)
        {
            if (t < half && shared[t + half] > shared[t]) shared[t] = shared[t + half];
            Group.Barrier();
        }
        return shared[0];
    }
}

/// <summary>
/// Host ints (token ids, targets) copied to an ILGPU device for the launches of one op.
/// Dispose synchronizes first, so the buffer is not freed under a running kernel.
/// </summary>
internal sealed class DeviceInts : IDisposable
{
    readonly IlgpuDevice _gpu;
    readonly MemoryBuffer1D<int, Stride1D.Dense> _buffer;

    public DeviceInts(IlgpuDevice gpu, ReadOnlySpan<int> data)
    {
        _gpu = gpu;
        _buffer = gpu.Accelerator.Allocate1D<int>(Math.Max(1, data.Length));
        if (data.Length == 0) return;
        // Pinned until the copy has finished (see Tensor.CopyFrom).
        unsafe
        {
            fixed (int* p = data)
            {
                _buffer.View.SubView(0, data.Length).CopyFromCPU(ref *p, data.Length);
                gpu.Accelerator.Synchronize();
            }
        }
    }

    public ArrayView<int> View => _buffer.View;

    public void Dispose()
    {
        _gpu.Accelerator.Synchronize();
        _buffer.Dispose();
    }
}
