using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// A pooled buffer shared by a tensor and its views; returned to the pool when the last one is disposed.
/// Exactly one of <see cref="Host"/> (cpu) and <see cref="Buffer"/> (ILGPU) is set.
/// </summary>
internal sealed class Storage
{
    public readonly Device Device;
    public readonly long Length;
    public readonly long Capacity;
    public readonly float[]? Host;
    public readonly MemoryBuffer1D<float, Stride1D.Dense>? Buffer;
    int _references = 1;
    public MemoryCategory Category { get; private set; }

    public Storage(Device device, long length, long capacity, MemoryCategory category, float[]? host, MemoryBuffer1D<float, Stride1D.Dense>? buffer)
    {
        Device = device; Length = length; Capacity = capacity; Category = category; Host = host; Buffer = buffer;
        device.Ledger.Add(category, length * sizeof(float));
    }

    public bool IsAlive => _references > 0;

    public void Retain()
    {
        if (Interlocked.Increment(ref _references) <= 1) throw new ObjectDisposedException("tensor storage", "A view was taken of a tensor that was already disposed.");
    }

    public void ReleaseReference()
    {
        int left = Interlocked.Decrement(ref _references);
        if (left == 0)
        {
            Device.Ledger.Remove(Category, Length * sizeof(float));
            Device.Release(this);
        }
    }

    public void Recategorize(MemoryCategory category)
    {
        if (category == Category) return;
        Device.Ledger.Remove(Category, Length * sizeof(float));
        Device.Ledger.Add(category, Length * sizeof(float));
        Category = category;
    }
}
