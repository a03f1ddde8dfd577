using System.Diagnostics;
using ILGPU;
using Nanolora.Tensors;

namespace Nanolora.Tests.Tensors;

/// <summary>
/// The OpenCL path through a real compiler (POCL, opt-in by NANOLORA_OPENCL_CPU=1, as CI sets it): the
/// device is found, never becomes the default, and a kernel the compiler rejects fails with its build log.
/// The kernels themselves run on it through <see cref="Reference.Devices"/> like on every other device.
/// </summary>
public class OpenClDeviceTests
{
    static bool Enabled => Environment.GetEnvironmentVariable(IlgpuDevice.OpenClCpuVariable)?.Trim() == "1";

    static string? CpuOpenClId() =>
        Device.Discover().Where(d => d.Id.StartsWith("opencl") && d.Description.Contains("OpenCL CPU device")).Select(d => d.Id).FirstOrDefault();

    [Fact]
    public void OptInFindsTheCpuDeviceButNeverMakesItTheDefault()
    {
        if (!Enabled) return; // nothing to find: the variable is the opt-in (CI sets it and installs POCL)
        var id = CpuOpenClId();
        Assert.True(id != null, $"{IlgpuDevice.OpenClCpuVariable}=1 but no OpenCL CPU device was found (is pocl-opencl-icd installed?): " +
            string.Join(", ", Device.Discover().Select(d => d.Id)));
        Assert.DoesNotContain(id!, Device.BestAvailable());
        Assert.Contains(id!, Reference.Devices().Select(d => (string)d[0]));
    }

    [Fact]
    public void WithoutTheOptInNoCpuDeviceIsListed()
    {
        var saved = Environment.GetEnvironmentVariable(IlgpuDevice.OpenClCpuVariable);
        try
        {
            Environment.SetEnvironmentVariable(IlgpuDevice.OpenClCpuVariable, null);
            Assert.Null(CpuOpenClId());
        }
        finally
        {
            Environment.SetEnvironmentVariable(IlgpuDevice.OpenClCpuVariable, saved);
        }
    }

    [Fact]
    public void ARejectedKernelFailsWithTheCompilerLog()
    {
        if (!Enabled) return;
        var id = CpuOpenClId();
        Assert.True(id != null, "no OpenCL CPU device found");
        // At O1 ILGPU emits __generic pointers, which POCL (no generic address space) rejects: the error
        // must carry POCL's log, not only "Exception of type CLException".
        using var device = IlgpuDevice.Open(DeviceKind.OpenCL, int.Parse(id!.Split(':')[1]), OptimizationLevel.O1);
        using var x = Tensor.FromArray([1f, 2f, 3f], [3], device);
        var e = Assert.Throws<InvalidOperationException>(() => { using var y = Ops.Exp(x); });
        Assert.Contains("Compiler log", e.Message);
        Assert.Contains("__generic", e.Message);
    }

    [Fact]
    public void BuildLogCaptureKeepsWhatWasTracedDuringTheLoad()
    {
        Trace.WriteLine("traced before the load"); // must not leak into the error
        var e = Assert.Throws<InvalidOperationException>(() => IlgpuWorkarounds.LoadWithBuildLog<int>(() =>
        {
            Trace.WriteLine("error: use of undeclared identifier 'frob'");
            throw new InvalidCastException("Exception of type CLException");
        }, "test-device"));
        Assert.Contains("test-device", e.Message);
        Assert.Contains("use of undeclared identifier 'frob'", e.Message);
        Assert.DoesNotContain("traced before", e.Message);
        Assert.IsType<InvalidCastException>(e.InnerException);
        Assert.Equal(7, IlgpuWorkarounds.LoadWithBuildLog(() => 7, "test-device"));
    }
}
