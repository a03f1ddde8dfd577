using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// A pooled buffer shared by a tensor and its views; returned to the pool when the last one is disposed.
/// Exactly one of <see cref="Host"/> (cpu) and <see cref="Buffer"/> (ILGPU) is set, or, for a bfloat16 storage, one of
/// <see cref="Host16"/> and <see cref="Buffer16"/>: those are frozen weights, allocated outside the pool and freed with
/// their last tensor.
/// </summary>
internal sealed class Storage
{
    public readonly Device Device;
    public readonly long Length;
    public readonly long Capacity;
    public readonly float[]? Host;
    public readonly MemoryBuffer1D<float, Stride1D.Dense>? Buffer;
    public readonly ushort[]? Host16;
    public readonly MemoryBuffer1D<ushort, Stride1D.Dense>? Buffer16;
    public readonly DType DType;
    int _references = 1;
    long Bytes => Length * (DType == DType.BFloat16 ? sizeof(ushort) : sizeof(float));
    public MemoryCategory Category { get; private set; }

    public Storage(Device device, long length, long capacity, MemoryCategory category, float[]? host, MemoryBuffer1D<float, Stride1D.Dense>? buffer)
    {
        Device = device; Length = length; Capacity = capacity; Category = category; Host = host; Buffer = buffer;
        DType = DType.Float32;
        device.Ledger.Add(category, Bytes);
    }

    /// <summary>A bfloat16 storage of <paramref name="length"/> elements (one of host and buffer set).</summary>
    public Storage(Device device, long length, MemoryCategory category, ushort[]? host, MemoryBuffer1D<ushort, Stride1D.Dense>? buffer)
    {
        Device = device; Length = length; Capacity = length; Category = category; Host16 = host; Buffer16 = buffer;
        DType = DType.BFloat16;
        device.Ledger.Add(category, Bytes);
    }

    public bool IsAlive => _references > 0;
    /// <summary>More than one tensor (views) holds this storage.</summary>
    public bool IsShared => Volatile.Read(ref _references) > 1;

    public void Retain()
    {
        if (Interlocked.Increment(ref _references) <= 1) throw new ObjectDisposedException("tensor storage", "A view was taken of a tensor that was already disposed.");
    }

    public void ReleaseReference()
    {
        int left = Interlocked.Decrement(ref _references);
        if (left == 0)
        {
            Device.Ledger.Remove(Category, Bytes);
            if (DType == DType.BFloat16) Buffer16?.Dispose();
            else Device.Release(this);
        }
    }

    public void Recategorize(MemoryCategory category)
    {
        if (category == Category) return;
        Device.Ledger.Remove(Category, Bytes);
        Device.Ledger.Add(category, Bytes);
        Category = category;
    }
}
