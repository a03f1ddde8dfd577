using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// bfloat16: the upper half of a float32's bits. Rounding keeps the nearest value (ties to even, as PyTorch's
/// <c>tensor.to(torch.bfloat16)</c>); widening is exact. A frozen base stored this way halves its weights' memory,
/// and the GEMM widens them while packing, so the arithmetic stays float32.
/// </summary>
public static class BFloat16
{
    /// <summary>The bfloat16 nearest to <paramref name="x"/> (ties to even); NaN stays a (quiet) NaN, infinities stay.</summary>
    public static ushort Round(float x)
    {
        uint bits = BitConverter.SingleToUInt32Bits(x);
        if (float.IsNaN(x)) return (ushort)((bits >> 16) | 0x40);
        bits += 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)(bits >> 16);
    }

    /// <summary>The float32 equal to a bfloat16.</summary>
    public static float Widen(ushort h) => BitConverter.UInt32BitsToSingle((uint)h << 16);

    /// <summary>Rounds every element of <paramref name="x"/> into <paramref name="h"/>.</summary>
    public static void Round(ReadOnlySpan<float> x, Span<ushort> h)
    {
        for (int i = 0; i < x.Length; i++) h[i] = Round(x[i]);
    }

    /// <summary>Widens every element of <paramref name="h"/> into <paramref name="x"/>, sixteen at a time.</summary>
    public static void Widen(ReadOnlySpan<ushort> h, Span<float> x)
    {
        int i = 0;
        ref ushort h0 = ref MemoryMarshal.GetReference(h);
        ref float x0 = ref MemoryMarshal.GetReference(x);
        for (; i <= h.Length - 16; i += 16)
        {
            var (lo, hi) = Vector256.Widen(Vector256.LoadUnsafe(ref h0, (nuint)i));
            Vector256.ShiftLeft(lo, 16).AsSingle().StoreUnsafe(ref x0, (nuint)i);
            Vector256.ShiftLeft(hi, 16).AsSingle().StoreUnsafe(ref x0, (nuint)i + 8);
        }
        for (; i < h.Length; i++) x[i] = Widen(h[i]);
    }
}

public sealed partial class Tensor
{
    /// <summary>
    /// A bfloat16 copy on the same device (each element rounded to nearest, ties to even), in <paramref name="category"/>
    /// or this tensor's own: half the bytes. Only a few readers take one (the B operand of Ops.Matmul/MatmulInto, so a
    /// frozen linear's weight; <see cref="ToArray"/>; <see cref="ToFloat32"/>); any other op refuses it with a clear error.
    /// </summary>
    public Tensor ToBFloat16(MemoryCategory? category = null)
    {
        ThrowIfDisposed();
        if (DType == DType.BFloat16) return To(Device, category);
        var values = ToArray();
        var bits = GC.AllocateUninitializedArray<ushort>(values.Length, pinned: true);
        BFloat16.Round(values, bits);
        Storage storage;
        if (Device is IlgpuDevice gpu)
        {
            var buffer = gpu.Accelerator.Allocate1D<ushort>(Math.Max(1, bits.Length));
            if (bits.Length > 0) buffer.View.SubView(0, bits.Length).CopyFromCPU(bits);
            gpu.Synchronize();
            storage = new Storage(Device, Length, category ?? Category, null, buffer);
        }
        else storage = new Storage(Device, Length, category ?? Category, bits, null);
        return new Tensor(storage, (int[])_shape.Clone());
    }

    /// <summary>A float32 copy (bfloat16 widened exactly; a float32 tensor is cloned).</summary>
    public Tensor ToFloat32(MemoryCategory? category = null)
    {
        ThrowIfDisposed();
        if (DType == DType.Float32) return Clone(category);
        var t = Empty(_shape, Device, category ?? Category);
        if (Device is IlgpuDevice gpu) Ops.WidenGpu(gpu, View16, t.View, checked((int)Length));
        else BFloat16.Widen(Host16.AsSpan(0, checked((int)Length)), t.HostArray.AsSpan(0, checked((int)Length)));
        return t;
    }

    /// <summary>The bfloat16 bits of a cpu tensor (elements [0, Length)).</summary>
    internal ushort[] Host16 { get { ThrowIfDisposed(); return _storage.Host16 ?? throw new InvalidOperationException($"This {DType} tensor on {Device.Id} has no bfloat16 host array."); } }

    /// <summary>The ILGPU view of a bfloat16 tensor's bits.</summary>
    internal ArrayView<ushort> View16
    {
        get
        {
            ThrowIfDisposed();
            if (_storage.Buffer16 == null) throw new InvalidOperationException($"This {DType} tensor on {Device.Id} has no bfloat16 ILGPU view.");
            return _storage.Buffer16.View.SubView(0, Length);
        }
    }

    float[] WidenToArray()
    {
        var result = new float[Length];
        if (_storage.Host16 != null) BFloat16.Widen(_storage.Host16.AsSpan(0, result.Length), result);
        else if (Length > 0)
        {
            var bits = new ushort[Length];
            Device.Synchronize();
            View16.CopyToCPU(bits);
            Device.Synchronize();
            BFloat16.Widen(bits, result);
        }
        return result;
    }

    void ThrowIfBFloat16(string what)
    {
        if (_storage.DType == DType.BFloat16)
            throw new InvalidOperationException($"{what} needs float32, but this tensor {ShapeString} is stored in bfloat16 (a frozen 16-bit weight); " +
                "only a matmul's B operand reads it directly. Widen it with ToFloat32() first.");
    }
}

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<ushort>, ArrayView<float>, int>> WidenKernel =
        new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<ushort>, ArrayView<float>, int>(Widen16));

    static void Widen16(Index1D index, ArrayView<ushort> h, ArrayView<float> x, int n)
    {
        for (int i = index; i < n; i += GridExtent()) x[i] = Interop.IntAsFloat((uint)h[i] << 16);
    }

    internal static void WidenGpu(IlgpuDevice gpu, ArrayView<ushort> h, ArrayView<float> x, int n)
    {
        if (n > 0) WidenKernel.On(gpu)(LaunchThreads(gpu, n), h, x, n);
    }
}
