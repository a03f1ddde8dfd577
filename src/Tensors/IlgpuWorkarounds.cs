using System.Diagnostics;
using System.Reflection;
using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime.OpenCL;

namespace Nanolora.Tensors;

/// <summary>
/// The places where Nanolora works around ILGPU 1.5.3 itself, kept together so that each can be dropped
/// when ILGPU changes: the native-library names it loads, its OpenCL admission check, and kernel build
/// errors whose log it only writes to <see cref="Trace"/>. Not worked around, but avoided: atomics. ILGPU's
/// OpenCL <c>Atomic.Add</c> emits <c>(atomic_int*)</c> casts that POCL's compiler rejects, so no kernel
/// uses atomics (reductions go through shared memory and a second pass); CI compiles every kernel with
/// POCL, so one that did would fail there with the compiler's log.
/// </summary>
internal static class IlgpuWorkarounds
{
    static int _resolverInstalled;

    /// <summary>
    /// ILGPU P/Invokes <c>OpenCL</c> and <c>cuda</c>, which .NET probes as <c>libOpenCL.so</c> and
    /// <c>libcuda.so</c>: names only the -dev packages install. Debian's ICD loader
    /// (<c>ocl-icd-libopencl1</c>) ships only <c>libOpenCL.so.1</c>, and a driver-only CUDA install only
    /// <c>libcuda.so.1</c>, so without this no OpenCL or CUDA device is ever found there. The plain name is
    /// tried first, so a machine that has it loads what it always did. Must run before the first ILGPU context.
    /// </summary>
    internal static void InstallNativeResolver()
    {
        if (Interlocked.Exchange(ref _resolverInstalled, 1) != 0) return;
        NativeLibrary.SetDllImportResolver(typeof(Context).Assembly, (name, assembly, searchPath) =>
        {
            string? soname = name switch { "OpenCL" => "libOpenCL.so.1", "cuda" => "libcuda.so.1", _ => null };
            if (soname == null || !OperatingSystem.IsLinux()) return IntPtr.Zero; // IntPtr.Zero: the default probing
            // The path overloads go straight to dlopen, which searches the usual library folders (the
            // assembly overloads would call this resolver again).
            if (NativeLibrary.TryLoad($"lib{name}.so", out var handle)) return handle;
            return NativeLibrary.TryLoad(soname, out handle) ? handle : IntPtr.Zero;
        });
    }

    /// <summary>
    /// ILGPU 1.5.3 refuses to create an accelerator for an OpenCL device that reports no generic address
    /// space (OpenCL 3.0 made it optional: POCL 3.1 and NVIDIA's OpenCL 3.0 driver report none), because
    /// at its default level (O1) it emits <c>__generic</c> pointers. Nanolora's OpenCL contexts compile at
    /// O2, where ILGPU infers every pointer's address space, so the check does not apply to them. The flag
    /// has only an internal setter and no public override exists, hence reflection, here and nowhere else.
    /// Any kernel that would still need <c>__generic</c> then fails to build with the compiler's log in the
    /// error (<see cref="LoadWithBuildLog{T}"/>), not silently.
    /// </summary>
    internal static void AdmitWithoutGenericAddressSpace(CLDevice device)
    {
        if (device.Capabilities.GenericAddressSpace) return;
        var setter = typeof(CLCapabilityContext).GetProperty(nameof(CLCapabilityContext.GenericAddressSpace))?.GetSetMethod(nonPublic: true)
            ?? throw new InvalidOperationException("This ILGPU version has no CLCapabilityContext.GenericAddressSpace setter; revisit IlgpuWorkarounds.AdmitWithoutGenericAddressSpace.");
        setter.Invoke(device.Capabilities, [true]);
    }

    static readonly object TraceGate = new();

    /// <summary>
    /// Runs a kernel load and, if it throws, rethrows with what ILGPU traced meanwhile: when the OpenCL C
    /// compiler (or the CUDA driver's PTX JIT) rejects a kernel, ILGPU writes the compiler's log to
    /// <see cref="Trace"/> and throws an exception that says only "Exception of type CLException".
    /// </summary>
    internal static T LoadWithBuildLog<T>(Func<T> load, string deviceName)
    {
        // One listener at a time: Trace.Listeners is process-wide, and a second device loading in parallel
        // would otherwise see this one's log in its error.
        lock (TraceGate)
        {
            using var log = new StringWriter();
            using var listener = new TextWriterTraceListener(log);
            Trace.Listeners.Add(listener);
            try
            {
                return load();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                listener.Flush();
                string text = log.ToString().Trim();
                throw new InvalidOperationException(
                    $"Compiling a kernel for {deviceName} failed: {e.Message}" +
                    (text.Length > 0 ? $"\nCompiler log (from ILGPU's trace):\n{text}" : "\n(ILGPU traced no compiler log.)"), e);
            }
            finally
            {
                Trace.Listeners.Remove(listener);
            }
        }
    }
}
