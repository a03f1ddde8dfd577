using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Backends.OpenCL;
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
    /// <summary>The ILGPU accelerator kernels are launched on.</summary>
    public Accelerator Accelerator { get; }
    /// <inheritdoc/>
    public override string Name => Accelerator.Name;
    /// <inheritdoc/>
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

    /// <summary>Set to 1 to admit OpenCL CPU devices (POCL): <c>opencl:N</c> in tests and <c>nanolora devices</c>, never the default.</summary>
    public const string OpenClCpuVariable = "NANOLORA_OPENCL_CPU";

    /// <summary>
    /// Opt-in because a CPU OpenCL driver (POCL) is slower here than the managed CPU backend: a user who has
    /// it installed should not find it picked as the "GPU". Its worth is compiling the kernels with a real
    /// OpenCL C compiler in CI.
    /// </summary>
    internal static bool OpenClCpuEnabled => Environment.GetEnvironmentVariable(OpenClCpuVariable)?.Trim() == "1";

    /// <summary>
    /// Which OpenCL devices Nanolora uses: GPUs, plus CPU devices when <see cref="OpenClCpuVariable"/> is 1, with
    /// the OpenCL C version ILGPU needs. Unlike ILGPU's default filter it admits devices without generic
    /// address space (see <see cref="IlgpuWorkarounds.AdmitWithoutGenericAddressSpace"/>). Discovery and
    /// <see cref="Open(DeviceKind, int)"/> use the same filter, so <c>opencl:N</c> names the same device in both.
    /// </summary>
    internal static bool Admits(CLDevice d) =>
        d.CLStdVersion >= CLBackend.MinimumVersion &&
        (d.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_GPU) || (OpenClCpuEnabled && d.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_CPU)));

    /// <summary>
    /// O2 for both GPU backends. OpenCL: at O1 ILGPU emits <c>__generic</c> pointers, which compilers without
    /// generic address space (POCL) reject; O2 infers global/local/private. CUDA: the same inference turns
    /// generic PTX loads and stores (resolved to a state space by the hardware on each access) into
    /// ld/st.global. Measured without a GPU by `Nanolora.Bench ptx-levels` (sm_90 PTX): the tiled GEMM has 34
    /// generic global accesses at O1 and none at O2 (for 3 cvta at kernel entry), and 8% fewer instructions
    /// (751 → 692); LayerNorm and softmax likewise (5–9% fewer); shared accesses are .shared at both levels.
    /// Run time on a GPU is not measured yet. O2 also keeps one code path: its output is what CI compiles and checks through POCL. The
    /// price is O2's code placement, which may sink a shared-memory load past a barrier; the group
    /// reductions are written so that this cannot change a result (see <see cref="RowReduce"/>).
    /// </summary>
    internal const OptimizationLevel GpuOptimization = OptimizationLevel.O2;

    /// <summary>The ILGPU context builder for the GPU backends (also used by discovery, without opening anything).</summary>
    internal static Context.Builder GpuBackends(Context.Builder b, bool cuda, bool openCL, OptimizationLevel level = GpuOptimization)
    {
        IlgpuWorkarounds.InstallNativeResolver();
        if (cuda) b = b.Cuda();
        if (openCL) b = b.OpenCL(Admits);
        return b.EnableAlgorithms().Math(MathMode.Fast32BitOnly).Optimize(level);
    }

    internal static IlgpuDevice Open(DeviceKind kind, int index) => Open(kind, index, GpuOptimization);

    /// <summary>Opens a GPU device; <paramref name="level"/> other than O2 only for tests of the compile path.</summary>
    internal static IlgpuDevice Open(DeviceKind kind, int index, OptimizationLevel level)
    {
        var context = Context.Create(b => GpuBackends(b, cuda: kind == DeviceKind.Cuda, openCL: kind == DeviceKind.OpenCL, level));
        var devices = context.Devices.Where(d => kind == DeviceKind.Cuda
            ? d.AcceleratorType == AcceleratorType.Cuda
            : d.AcceleratorType == AcceleratorType.OpenCL).ToList();
        if (index >= devices.Count)
        {
            context.Dispose();
            string hint = kind == DeviceKind.OpenCL && !OpenClCpuEnabled ? $" (OpenCL CPU devices such as POCL count only with {OpenClCpuVariable}=1)" : "";
            throw new InvalidOperationException($"Device {kind.ToString().ToLowerInvariant()}:{index} was asked for, but {devices.Count} such device(s) were found{hint}. Run 'nanolora devices' to list them.");
        }
        if (devices[index] is CLDevice cl) IlgpuWorkarounds.AdmitWithoutGenericAddressSpace(cl);
        return new IlgpuDevice(context, devices[index].CreateAccelerator(context), kind);
    }

    /// <summary>Returns the kernel compiled for this device, compiling it on first use.</summary>
    internal T GetKernel<T>(Kernel<T> slot) where T : Delegate
    {
        lock (_kernels)
        {
            if (_kernels.TryGetValue(slot, out var d)) return (T)d;
            var loaded = IlgpuWorkarounds.LoadWithBuildLog(() => slot.Load(Accelerator), ToString());
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

    /// <inheritdoc/>
    public override long TrimIdleCache() { Accelerator.Synchronize(); long n = _pool.TrimIdle(); Ledger.SetReserved(_pool.ReservedBytes); return n; }

    /// <inheritdoc/>
    public override void Synchronize() => Accelerator.Synchronize();
    /// <summary>Waits for queued kernels, then frees every idle pooled buffer.</summary>
    public override void EmptyCache() { Accelerator.Synchronize(); _pool.Trim(); Ledger.SetReserved(_pool.ReservedBytes); }

    /// <summary>Frees the cached buffers, the kernels and the accelerator; tensors on this device must not be used afterwards.</summary>
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
