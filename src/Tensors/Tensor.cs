using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// An N-d float32 tensor, contiguous and row-major, on one device.
/// Disposal rule (stated once, as in TorchSharp): every op returns a fresh tensor that the caller owns
/// and must dispose; ops never dispose their inputs. <see cref="Reshape"/> returns a view that shares
/// storage; the storage goes back to the pool when the tensor and all its views are disposed.
/// </summary>
public sealed partial class Tensor : IDisposable
{
    readonly Storage _storage;
    readonly int[] _shape;
    bool _disposed;

    /// <summary>The device holding the elements.</summary>
    public Device Device => _storage.Device;
    /// <summary>Element type: float32, or bfloat16 for a frozen weight stored in 16 bits (<see cref="ToBFloat16"/>).</summary>
    public DType DType => _storage.DType;
    /// <summary>Another tensor (a view) holds this one's storage too: writing over it writes over that one.</summary>
    internal bool SharesStorage => _storage.IsShared;
    /// <summary>Sizes of the axes, outermost first (row-major).</summary>
    public ReadOnlySpan<int> Shape => _shape;
    /// <summary>Number of axes (0 for a scalar).</summary>
    public int Rank => _shape.Length;
    /// <summary>Number of elements: the product of <see cref="Shape"/>.</summary>
    public long Length { get; }
    /// <summary>The ledger category the buffer is counted under; setting it moves the bytes to the new category.</summary>
    public MemoryCategory Category { get => _storage.Category; set => _storage.Recategorize(value); }
    /// <summary>True once <see cref="Dispose"/> has been called on this tensor object.</summary>
    public bool IsDisposed => _disposed;

    Tensor(Storage storage, int[] shape)
    {
        _storage = storage;
        _shape = shape;
        Length = ShapeMath.Numel(shape);
    }

    /// <summary>Size of axis <paramref name="axis"/>; negative counts from the end.</summary>
    public int Dim(int axis) => _shape[axis < 0 ? axis + _shape.Length : axis];
    /// <summary>A copy of <see cref="Shape"/> as an array.</summary>
    public int[] ShapeArray() => (int[])_shape.Clone();
    /// <summary>The shape as text, e.g. <c>[2, 3, 4]</c>.</summary>
    public string ShapeString => ShapeMath.Format(_shape);

    // ---- creation -------------------------------------------------------------------------------

    /// <summary>A tensor with unspecified contents (a pooled buffer); use when every element is written.</summary>
    public static Tensor Empty(ReadOnlySpan<int> shape, Device? device = null, MemoryCategory category = MemoryCategory.Activation)
    {
        var s = ShapeMath.Validate(shape);
        device ??= Device.Default;
        return new Tensor(device.Allocate(ShapeMath.Numel(s), category), s);
    }

    /// <summary>A tensor of zeros.</summary>
    public static Tensor Zeros(ReadOnlySpan<int> shape, Device? device = null, MemoryCategory category = MemoryCategory.Activation)
    {
        var t = Empty(shape, device, category);
        t.Fill(0f);
        return t;
    }

    /// <summary>A tensor with every element set to <paramref name="value"/>.</summary>
    public static Tensor Full(ReadOnlySpan<int> shape, float value, Device? device = null, MemoryCategory category = MemoryCategory.Activation)
    {
        var t = Empty(shape, device, category);
        t.Fill(value);
        return t;
    }

    /// <summary>A tensor holding a copy of <paramref name="data"/> (row-major), whose length must equal the shape's element count.</summary>
    public static Tensor FromArray(float[] data, ReadOnlySpan<int> shape, Device? device = null, MemoryCategory category = MemoryCategory.Activation)
    {
        var s = ShapeMath.Validate(shape);
        if (ShapeMath.Numel(s) != data.Length)
            throw new ArgumentException($"Shape {ShapeMath.Format(s)} needs {ShapeMath.Numel(s)} elements but the array has {data.Length}.");
        var t = Empty(s, device, category);
        t.CopyFrom(data);
        return t;
    }

    /// <summary>A rank-0 tensor holding one value.</summary>
    public static Tensor Scalar(float value, Device? device = null) => FromArray([value], [], device);

    // ---- data access ----------------------------------------------------------------------------

    internal Storage Storage { get { ThrowIfDisposed(); return _storage; } }

    /// <summary>The elements as a span (cpu device only; GPU tensors must be copied with <see cref="ToArray"/>).</summary>
    public Span<float> Span
    {
        get
        {
            ThrowIfDisposed();
            ThrowIfBFloat16("Span");
            if (_storage.Host == null) throw new InvalidOperationException($"Span is only available on the cpu device; this tensor is on {Device.Id}. Use ToArray().");
            return _storage.Host.AsSpan(0, checked((int)Length));
        }
    }

    /// <summary>The pinned backing array (cpu only); elements [0, Length) belong to this tensor.</summary>
    internal float[] HostArray { get { ThrowIfDisposed(); ThrowIfBFloat16("This op"); return _storage.Host!; } }

    /// <summary>The ILGPU view of the elements (ILGPU devices only).</summary>
    internal ArrayView<float> View
    {
        get
        {
            ThrowIfDisposed();
            ThrowIfBFloat16("This op");
            if (_storage.Buffer == null) throw new InvalidOperationException($"This tensor is on {Device.Id}, which has no ILGPU view.");
            return _storage.Buffer.View.SubView(0, Length);
        }
    }

    internal IlgpuDevice Gpu => (IlgpuDevice)Device;

    /// <summary>The elements copied into a new host array, row-major (copies back from the device on GPU backends).</summary>
    public float[] ToArray()
    {
        ThrowIfDisposed();
        if (DType == DType.BFloat16) return WidenToArray();
        var result = new float[Length];
        if (_storage.Host != null) Array.Copy(_storage.Host, result, Length);
        else if (Length > 0)
        {
            // The host array is pinned for the whole copy, and the copy is waited for before the pin ends: a
            // ref into an unpinned managed array may move under a copy the accelerator finishes later (seen on
            // ILGPU's CPU simulator as rare all-zero results). Queued kernels finish first.
            Device.Synchronize();
            unsafe
            {
                fixed (float* p = result)
                {
                    View.CopyToCPU(ref *p, Length);
                    Device.Synchronize();
                }
            }
        }
        return result;
    }

    /// <summary>The value of a one-element tensor.</summary>
    public float Item()
    {
        if (Length != 1) throw new InvalidOperationException($"Item() needs a one-element tensor; this one has shape {ShapeString}.");
        return ToArray()[0];
    }

    /// <summary>Overwrites every element from host data, row-major; the length must equal <see cref="Length"/>.</summary>
    public void CopyFrom(ReadOnlySpan<float> data)
    {
        ThrowIfDisposed();
        if (data.Length != Length) throw new ArgumentException($"CopyFrom: tensor {ShapeString} holds {Length} elements, the source has {data.Length}.");
        if (_storage.Host != null) data.CopyTo(_storage.Host);
        else if (Length > 0)
        {
            Device.Synchronize();
            unsafe
            {
                fixed (float* p = data)
                {
                    View.CopyFromCPU(ref *p, Length);
                    Device.Synchronize();
                }
            }
        }
    }

    /// <summary>Copies another tensor's elements into this one (same length, any devices).</summary>
    public void CopyFrom(Tensor source)
    {
        ThrowIfDisposed();
        if (source.Length != Length) throw new ArgumentException($"CopyFrom: shapes {source.ShapeString} and {ShapeString} differ in size.");
        if (source.DType == DType.BFloat16) { CopyFrom(source.ToArray()); return; }
        if (source.Device == Device && _storage.Buffer != null) { source.View.CopyTo(View); return; }
        if (source.Device == Device) { source.Span.CopyTo(Span); return; }
        CopyFrom(source.ToArray());
    }

    /// <summary>Sets every element to <paramref name="value"/>.</summary>
    public void Fill(float value)
    {
        ThrowIfDisposed();
        if (_storage.Host != null) Span.Fill(value);
        else Ops.FillGpu(this, value);
    }

    /// <summary>A copy on another device (or the same one), of the same element type.</summary>
    public Tensor To(Device device, MemoryCategory? category = null)
    {
        if (DType == DType.BFloat16)
        {
            using var wide = ToFloat32(category);
            using var moved = wide.To(device, category ?? Category);
            return moved.ToBFloat16();
        }
        var t = Empty(_shape, device, category ?? Category);
        t.CopyFrom(this);
        return t;
    }

    /// <summary>A copy on the same device, in <paramref name="category"/> or this tensor's own category.</summary>
    public Tensor Clone(MemoryCategory? category = null) => To(Device, category);

    /// <summary>A view with a new shape and the same elements (no copy); one axis may be -1.</summary>
    public Tensor Reshape(params int[] shape)
    {
        ThrowIfDisposed();
        var s = ShapeMath.ResolveReshape(_shape, shape);
        _storage.Retain();
        return new Tensor(_storage, s);
    }

    void ThrowIfDisposed()
    {
        if (_disposed) throw new ObjectDisposedException(nameof(Tensor), $"A tensor of shape {ShapeMath.Format(_shape)} was used after Dispose().");
    }

    /// <summary>Drops this tensor's reference to its buffer; the buffer goes back to the pool when its last view (see <see cref="Reshape"/>) is disposed.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _storage.ReleaseReference();
    }

    /// <summary>The shape and device, e.g. <c>Tensor[2, 3] on cpu</c>.</summary>
    public override string ToString() => $"Tensor{ShapeString} on {Device.Id}";
}
