using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// A caching allocator, like PyTorch's: freed buffers are kept by size class and handed out again,
/// so a training step does not allocate after the first one. Size classes are 8 per power of two
/// (at most 12.5% waste). Not thread-safe across devices; each device has its own pool.
/// </summary>
internal sealed class BufferPool<TBuffer> where TBuffer : class
{
    readonly Dictionary<long, Stack<TBuffer>> _free = new();
    readonly Func<long, TBuffer> _allocate;
    readonly Action<TBuffer> _release;
    readonly object _gate = new();
    public long ReservedBytes { get; private set; }

    public BufferPool(Func<long, TBuffer> allocate, Action<TBuffer> release)
    {
        _allocate = allocate;
        _release = release;
    }

    /// <summary>Rounds a length up to its size class: 8 steps per octave above 64 elements.</summary>
    public static long SizeClass(long elements)
    {
        if (elements <= 64) return 64;
        int octave = 63 - System.Numerics.BitOperations.LeadingZeroCount((ulong)(elements - 1));
        long step = Math.Max(1L << Math.Max(octave - 3, 0), 64);
        return (elements + step - 1) / step * step;
    }

    public TBuffer Rent(long elements, out long capacity)
    {
        capacity = SizeClass(elements);
        lock (_gate)
        {
            if (_free.TryGetValue(capacity, out var stack) && stack.Count > 0) return stack.Pop();
            ReservedBytes += capacity * sizeof(float);
        }
        return _allocate(capacity);
    }

    public void Return(TBuffer buffer, long capacity)
    {
        lock (_gate)
        {
            if (!_free.TryGetValue(capacity, out var stack)) _free[capacity] = stack = new Stack<TBuffer>();
            stack.Push(buffer);
        }
    }

    /// <summary>Releases every cached free buffer (torch.cuda.empty_cache).</summary>
    public void Trim()
    {
        lock (_gate)
        {
            foreach (var (capacity, stack) in _free)
                while (stack.Count > 0) { _release(stack.Pop()); ReservedBytes -= capacity * sizeof(float); }
        }
    }
}
