using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;
using ILGPU.Runtime.OpenCL;

namespace Nanolora.Tensors;

/// <summary>Which backend a <see cref="Device"/> is.</summary>
public enum DeviceKind
{
    /// <summary>The managed CPU backend (<see cref="CpuDevice"/>): vectorized .NET code.</summary>
    Cpu,
    /// <summary>ILGPU's CPU simulator running the GPU kernels: slow, for testing the kernels without a GPU.</summary>
    IlgpuCpu,
    /// <summary>An NVIDIA GPU through ILGPU's CUDA backend.</summary>
    Cuda,
    /// <summary>A GPU through ILGPU's OpenCL backend.</summary>
    OpenCL,
}

/// <summary>
/// Where tensors live and ops run. <see cref="CpuDevice"/> runs vectorized managed code;
/// <see cref="IlgpuDevice"/> runs the ILGPU kernels (CUDA, OpenCL, or ILGPU's CPU simulator).
/// Selection: <c>NANOLORA_DEVICE</c> if set, else CUDA, else OpenCL, else CPU.
/// </summary>
public abstract class Device : IDisposable
{
    /// <summary>A human-readable description of the hardware (GPU name, or CPU threads and SIMD width).</summary>
    public abstract string Name { get; }
    /// <summary>Which backend this is.</summary>
    public abstract DeviceKind Kind { get; }
    /// <summary>Live, peak and reserved bytes of this device's tensors, by category.</summary>
    public MemoryLedger Ledger { get; } = new();
    /// <summary>True for the managed CPU backend (<see cref="CpuDevice"/>), whose tensors are host arrays.</summary>
    public bool IsCpu => Kind == DeviceKind.Cpu;

    /// <summary>Short name used by NANOLORA_DEVICE and the CLI: cpu, ilgpu-cpu, cuda, opencl.</summary>
    public string Id => Kind switch
    {
        DeviceKind.Cpu => "cpu", DeviceKind.IlgpuCpu => "ilgpu-cpu", DeviceKind.Cuda => "cuda", _ => "opencl",
    };

    internal abstract Storage Allocate(long elements, MemoryCategory category);
    internal abstract void Release(Storage storage);

    /// <summary>Blocks until queued work has finished (a no-op on the CPU backend).</summary>
    public virtual void Synchronize() { }

    /// <summary>Frees cached buffers that no tensor uses.</summary>
    public abstract void EmptyCache();

    /// <summary>Releases cached buffers of sizes not used since the previous call (a training loop calls it now and then); returns the bytes released.</summary>
    public abstract long TrimIdleCache();

    /// <summary>Frees the cached buffers and, for ILGPU devices, the accelerator; tensors on it must not be used afterwards.</summary>
    public abstract void Dispose();
    /// <summary>The <see cref="Id"/> and <see cref="Name"/>, e.g. <c>cpu (managed CPU, 16 threads, AVX2)</c>.</summary>
    public override string ToString() => $"{Id} ({Name})";

    static readonly object Gate = new();
    static readonly Dictionary<string, Device> Opened = new();
    static Device? _default;

    /// <summary>The managed CPU device, opened once and shared.</summary>
    public static CpuDevice Cpu => (CpuDevice)Get("cpu");

    /// <summary>The device new tensors go to when none is named: NANOLORA_DEVICE, else the best found.</summary>
    public static Device Default
    {
        get
        {
            lock (Gate)
            {
                if (_default != null) return _default;
                var env = Environment.GetEnvironmentVariable("NANOLORA_DEVICE");
                _default = string.IsNullOrWhiteSpace(env) ? Get(BestAvailable()) : Get(env.Trim());
                return _default;
            }
        }
        set { lock (Gate) _default = value; }
    }

    /// <summary>Opens (once) and returns a device by id: cpu, ilgpu-cpu, cuda, opencl (optionally cuda:1).</summary>
    public static Device Get(string id)
    {
        id = id.ToLowerInvariant();
        lock (Gate)
        {
            if (Opened.TryGetValue(id, out var d)) return d;
            var parts = id.Split(':');
            int index = parts.Length > 1 && int.TryParse(parts[1], out var i) ? i : 0;
            d = parts[0] switch
            {
                "cpu" => new CpuDevice(),
                "ilgpu-cpu" => IlgpuDevice.OpenSimulator(),
                "cuda" => IlgpuDevice.Open(DeviceKind.Cuda, index),
                "opencl" => IlgpuDevice.Open(DeviceKind.OpenCL, index),
                _ => throw new ArgumentException($"Unknown device '{id}': expected cpu, ilgpu-cpu, cuda or opencl (optionally with :index)."),
            };
            Opened[id] = d;
            return d;
        }
    }

    /// <summary>cuda if a CUDA GPU is present, else opencl if an OpenCL GPU is, else cpu. An OpenCL CPU device
    /// (admitted by NANOLORA_OPENCL_CPU) is never the default.</summary>
    public static string BestAvailable()
    {
        var found = DiscoverGpus();
        if (found.Any(f => f.Id.StartsWith("cuda"))) return "cuda";
        var gpu = found.FirstOrDefault(f => f.Id.StartsWith("opencl") && f.IsGpu);
        return gpu.Id ?? "cpu";
    }

    /// <summary>Every device this machine offers, without opening accelerators.</summary>
    public static IReadOnlyList<(string Id, string Description)> Discover()
    {
        var list = new List<(string, string)> { ("cpu", $"managed vectorized CPU ({Environment.ProcessorCount} threads, {SimdDescription()})") };
        list.AddRange(DiscoverGpus().Select(g => (g.Id, g.Description)));
        list.Add(("ilgpu-cpu", "ILGPU CPU simulator (runs the GPU kernels; slow, for testing)"));
        return list;
    }

    static List<(string Id, string Description, bool IsGpu)> DiscoverGpus()
    {
        var list = new List<(string, string, bool)>();
        try
        {
            using var context = Context.Create(b => IlgpuDevice.GpuBackends(b, cuda: true, openCL: true));
            int cuda = 0, cl = 0;
            foreach (var dev in context)
            {
                if (dev.AcceleratorType == AcceleratorType.Cuda) list.Add(($"cuda:{cuda++}", dev.Name, true));
                else if (dev is CLDevice cld)
                {
                    bool isGpu = cld.DeviceType.HasFlag(CLDeviceType.CL_DEVICE_TYPE_GPU);
                    list.Add(($"opencl:{cl++}", isGpu ? dev.Name : $"{dev.Name} (OpenCL CPU device, {cld.PlatformName}; admitted by {IlgpuDevice.OpenClCpuVariable}=1)", isGpu));
                }
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // No GPU driver is the normal case on CPU machines; discovery must not fail then.
        }
        return list;
    }

    internal static string SimdDescription() =>
        System.Runtime.Intrinsics.Vector512.IsHardwareAccelerated ? "AVX-512" :
        System.Runtime.Intrinsics.Vector256.IsHardwareAccelerated ? "AVX2" : "SSE";
}

/// <summary>The managed CPU backend: pinned float arrays from a caching pool.</summary>
public sealed class CpuDevice : Device
{
    /// <summary>
    /// NANOLORA_POISON_BUFFERS=1: every new tensor's values start as NaN instead of whatever the pool's buffer held, so
    /// an op that reads memory it never wrote shows as a NaN rather than as results that depend on what ran before.
    /// </summary>
    static readonly bool PoisonNewBuffers = Environment.GetEnvironmentVariable("NANOLORA_POISON_BUFFERS") == "1";
    readonly BufferPool<float[]> _pool = new(n => GC.AllocateUninitializedArray<float>(checked((int)n), pinned: true), _ => { });
    /// <inheritdoc/>
    public override string Name => $"managed CPU, {Environment.ProcessorCount} threads, {SimdDescription()}";
    /// <inheritdoc/>
    public override DeviceKind Kind => DeviceKind.Cpu;

    internal override Storage Allocate(long elements, MemoryCategory category)
    {
        if (elements > Array.MaxLength) throw new ArgumentException($"A CPU tensor holds at most {Array.MaxLength} elements; {elements} were asked for.");
        var array = _pool.Rent(elements, out long capacity);
        if (PoisonNewBuffers) array.AsSpan().Fill(float.NaN);   // the whole buffer: an op reading past its length shows too
        Ledger.SetReserved(_pool.ReservedBytes);
        return new Storage(this, elements, capacity, category, array, null);
    }

    internal override void Release(Storage s)
    {
        _pool.Return(s.Host!, s.Capacity);
        Ledger.SetReserved(_pool.ReservedBytes);
    }

    /// <summary>
    /// Drops idle buffers, then collects them: pinned arrays live on the pinned object heap, which only a full collection
    /// frees, and the GC puts those off while memory is plentiful — a 100-step fine-tuning of the 30M-parameter BERT2BERT
    /// base reached 16 GB of RSS on a 24 GB machine without this.
    /// </summary>
    public override long TrimIdleCache()
    {
        long n = _pool.TrimIdle();
        Ledger.SetReserved(_pool.ReservedBytes);
        GC.Collect();
        return n;
    }

    /// <summary>Drops every idle pooled array and runs a full collection so the pinned heap shrinks.</summary>
    public override void EmptyCache() { _pool.Trim(); Ledger.SetReserved(_pool.ReservedBytes); GC.Collect(); }
    /// <summary>Empties the cache; the CPU device itself holds nothing else.</summary>
    public override void Dispose() => EmptyCache();
}
