using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Nanolora.Tensors;

/// <summary>
/// A device whose ops run as ILGPU kernels: a CUDA or OpenCL GPU, or ILGPU's CPU simulator.
/// Kernels are compiled on first use and the delegates cached per device (<see cref="Kernel{T}"/>).
/// </summary>
public sealed class IlgpuDevice : Device
{
    readonly Context _context;
    readonly BufferPool<MemoryBuffer1D<float, Stride1D.Dense>> _pool;
    readonly Dictionary<object, Delegate> _kernels = new();
    readonly DeviceKind _kind;
    public Accelerator Accelerator { get; }
    public override string Name => Accelerator.Name;
    public override DeviceKind Kind => _kind;

    /// <summary>Threads launched by grid-stride kernels: enough to fill the device, capped by the work.</summary>
    internal int GridStrideThreads { get; }

    IlgpuDevice(Context context, Accelerator accelerator, DeviceKind kind)
    {
        _context = context;
        Accelerator = accelerator;
        _kind = kind;
        // A buffer released past the cache limit may still be read by queued kernels: wait for them first.
        _pool = new(n => accelerator.Allocate1D<float>(n), b => { accelerator.Synchronize(); b.Dispose(); });
        GridStrideThreads = kind == DeviceKind.IlgpuCpu
            ? accelerator.MaxNumThreadsPerGroup * accelerator.NumMultiprocessors
            : accelerator.NumMultiprocessors * accelerator.MaxNumThreadsPerMultiprocessor;
    }

    /// <summary>
    /// The simulator with 1 processor, warps of 4 threads and 64 warps: groups of up to 256 threads
    /// (the tiled kernels use 16×16) while keeping the OS-thread count of a launch small.
    /// </summary>
    internal static IlgpuDevice OpenSimulator()
    {
        var device = new CPUDevice(numThreadsPerWarp: 4, numWarpsPerMultiprocessor: 64, numMultiprocessors: 1);
        var context = Context.Create(b => b.CPU(device).EnableAlgorithms().Math(MathMode.Default));
        // Parallel mode: every simulated thread is an OS thread. (Sequential mode measured 100× slower
        // here on kernels with group barriers.)
        return new IlgpuDevice(context, context.CreateCPUAccelerator(0, CPUAcceleratorMode.Parallel), DeviceKind.IlgpuCpu);
    }

    internal static IlgpuDevice Open(DeviceKind kind, int index)
    {
        var context = Context.Create(b => (kind == DeviceKind.Cuda ? b.Cuda() : b.OpenCL()).EnableAlgorithms().Math(MathMode.Fast32BitOnly));
        var devices = context.Devices.Where(d => kind == DeviceKind.Cuda
            ? d.AcceleratorType == AcceleratorType.Cuda
            : d.AcceleratorType == AcceleratorType.OpenCL).ToList();
        if (index >= devices.Count)
        {
            context.Dispose();
            throw new InvalidOperationException($"Device {kind.ToString().ToLowerInvariant()}:{index} was asked for, but {devices.Count} such device(s) were found. Run 'nanolora devices' to list them.");
        }
        return new IlgpuDevice(context, devices[index].CreateAccelerator(context), kind);
    }

    /// <summary>Returns the kernel compiled for this device, compiling it on first use.</summary>
    internal T GetKernel<T>(Kernel<T> slot) where T : Delegate
    {
        lock (_kernels)
        {
            if (_kernels.TryGetValue(slot, out var d)) return (T)d;
            var loaded = slot.Load(Accelerator);
            _kernels[slot] = loaded;
            return loaded;
        }
    }

    internal override Storage Allocate(long elements, MemoryCategory category)
    {
        var buffer = _pool.Rent(elements, out long capacity);
        Ledger.SetReserved(_pool.ReservedBytes);
        return new Storage(this, elements, capacity, category, null, buffer);
    }

    internal override void Release(Storage s)
    {
        _pool.Return(s.Buffer!, s.Capacity);
        Ledger.SetReserved(_pool.ReservedBytes);
    }

    public override long TrimIdleCache() { Accelerator.Synchronize(); long n = _pool.TrimIdle(); Ledger.SetReserved(_pool.ReservedBytes); return n; }

    public override void Synchronize() => Accelerator.Synchronize();
    public override void EmptyCache() { Accelerator.Synchronize(); _pool.Trim(); Ledger.SetReserved(_pool.ReservedBytes); }

    public override void Dispose()
    {
        EmptyCache();
        Accelerator.Dispose();
        _context.Dispose();
    }
}

/// <summary>
/// A kernel slot: how to load one kernel. Each op file declares its kernels as static slots and calls
/// <c>slot.On(device)</c>; compilation happens once per accelerator.
/// </summary>
internal sealed class Kernel<T> where T : Delegate
{
    internal readonly Func<Accelerator, T> Load;
    public Kernel(Func<Accelerator, T> load) => Load = load;
    public T On(IlgpuDevice device) => device.GetKernel(this);
}
