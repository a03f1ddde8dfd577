using Nanolora.Tensors;

namespace Nanolora.Tests.Tensors;

/// <summary>The tensor type, the caching pool, the memory ledger, and the errors bad input gets.</summary>
public class TensorCoreTests
{
    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void RoundTripsReshapesAndCopiesAcrossDevices(string device)
    {
        var d = Device.Get(device);
        var data = Reference.Random(24, 1);
        using var t = Tensor.FromArray(data, [2, 3, 4], d);
        Assert.Equal(data, t.ToArray());
        using var view = t.Reshape(6, -1);
        Assert.Equal([6, 4], view.ShapeArray());
        Assert.Equal(data, view.ToArray());
        using var onCpu = t.To(Device.Cpu);
        Assert.Equal(data, onCpu.ToArray());
        using var back = onCpu.To(d);
        Assert.Equal(data, back.ToArray());
        using var scalar = Tensor.Scalar(2.5f, d);
        Assert.Equal(2.5f, scalar.Item());
        Assert.Equal(DType.Float32, t.DType);
    }

    [Fact]
    public void ViewsShareStorageUntilTheLastIsDisposed()
    {
        using var d = new CpuDevice();
        var t = Tensor.FromArray([1f, 2f, 3f, 4f], [4], d);
        var view = t.Reshape(2, 2);
        t.Dispose();
        Assert.Equal([1f, 2f, 3f, 4f], view.ToArray());     // storage alive through the view
        Assert.Equal(16, d.Ledger.LiveBytes);
        view.Dispose();
        Assert.Equal(0, d.Ledger.LiveBytes);
        Assert.Throws<ObjectDisposedException>(() => view.ToArray());
    }

    [Fact]
    public void LedgerTracksLiveAndPeakByCategoryAndResets()
    {
        using var d = new CpuDevice();
        var p = Tensor.Zeros([100], d, MemoryCategory.Parameter);
        var a = Tensor.Zeros([50], d);
        Assert.Equal(400, d.Ledger.Live(MemoryCategory.Parameter));
        Assert.Equal(200, d.Ledger.Live(MemoryCategory.Activation));
        a.Category = MemoryCategory.OptimizerState;
        Assert.Equal(0, d.Ledger.Live(MemoryCategory.Activation));
        Assert.Equal(200, d.Ledger.Live(MemoryCategory.OptimizerState));
        a.Dispose();
        Assert.Equal(400, d.Ledger.LiveBytes);
        Assert.Equal(600, d.Ledger.PeakBytes);
        d.Ledger.ResetPeaks();
        Assert.Equal(400, d.Ledger.PeakBytes);
        var snap = d.Ledger.Snapshot();
        Assert.Equal(400, snap.LiveByCategory[MemoryCategory.Parameter]);
        p.Dispose();
        Assert.Equal(0, d.Ledger.LiveBytes);
    }

    [Fact]
    public void LedgerKeepsWhatWasLiveWhenTheTotalPeaked()
    {
        using var d = new CpuDevice();
        var p = Tensor.Zeros([100], d, MemoryCategory.Parameter);
        var a = Tensor.Zeros([50], d);
        a.Dispose();
        var g = Tensor.Zeros([40], d, MemoryCategory.Gradient);   // after a is gone: the gradient bytes were not live at the total peak (600 B)
        var snap = d.Ledger.Snapshot();
        Assert.Equal(600, snap.PeakBytes);
        Assert.Equal(200, snap.PeakByCategory[MemoryCategory.Activation]);
        Assert.Equal(160, snap.PeakByCategory[MemoryCategory.Gradient]);
        Assert.Equal(400, snap.AtPeakByCategory![MemoryCategory.Parameter]);
        Assert.Equal(200, snap.AtPeakByCategory[MemoryCategory.Activation]);
        Assert.Equal(0, snap.AtPeakByCategory[MemoryCategory.Gradient]);
        Assert.Equal(snap.PeakBytes, snap.AtPeakByCategory.Values.Sum());
        var more = Tensor.Zeros([60], d, MemoryCategory.Gradient);   // a new total peak: 400 + 160 + 240
        snap = d.Ledger.Snapshot();
        Assert.Equal(800, snap.PeakBytes);
        Assert.Equal(400, snap.AtPeakByCategory![MemoryCategory.Gradient]);
        Assert.Equal(0, snap.AtPeakByCategory[MemoryCategory.Activation]);
        d.Ledger.ResetPeaks();
        Assert.Equal(d.Ledger.LiveBytes, d.Ledger.Snapshot().AtPeakByCategory!.Values.Sum());
        p.Dispose(); g.Dispose(); more.Dispose();
    }

    [Fact]
    public void PoolReusesFreedBuffersBySizeClass()
    {
        using var d = new CpuDevice();
        Tensor.Zeros([1000], d).Dispose();
        long reserved = d.Ledger.ReservedBytes;
        for (int i = 0; i < 10; i++) Tensor.Zeros([990 + i], d).Dispose(); // same size class
        Assert.Equal(reserved, d.Ledger.ReservedBytes);
        d.EmptyCache();
        Assert.Equal(0, d.Ledger.ReservedBytes);
    }

    [Fact]
    public void MixedDevicesAreRefusedNamingBoth()
    {
        using var a = Tensor.Zeros([3], Device.Cpu);
        using var b = Tensor.Zeros([3], Device.Get("ilgpu-cpu"));
        var e = Assert.Throws<ArgumentException>(() => Ops.Add(a, b));
        Assert.Contains("cpu", e.Message);
        Assert.Contains("ilgpu-cpu", e.Message);
    }

    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void ShapeMismatchesNameBothShapes(string device)
    {
        var d = Device.Get(device);
        using var a = Tensor.Zeros([3, 4], d);
        using var b = Tensor.Zeros([5, 6], d);
        var add = Assert.Throws<ArgumentException>(() => Ops.Add(a, b));
        Assert.Contains("[3, 4]", add.Message);
        Assert.Contains("[5, 6]", add.Message);
        var mm = Assert.Throws<ArgumentException>(() => Ops.Matmul(a, b));
        Assert.Contains("[3, 4]", mm.Message);
        Assert.Throws<ArgumentException>(() => a.Reshape(5, 5));
        Assert.Throws<ArgumentException>(() => Tensor.FromArray(new float[5], [2, 3], d));
    }

    [Fact]
    public void UseAfterDisposeAndBadIndicesThrow()
    {
        var t = Tensor.Zeros([2, 2], Device.Cpu);
        t.Dispose();
        Assert.Throws<ObjectDisposedException>(() => Ops.Exp(t));
        Assert.Throws<ObjectDisposedException>(() => t.Reshape(4));
        using var w = Tensor.Zeros([5, 3], Device.Cpu);
        var e = Assert.Throws<ArgumentException>(() => Ops.Embedding(w, [1, 7], [2]));
        Assert.Contains("7", e.Message);
        Assert.Throws<ArgumentException>(() => Ops.CrossEntropy(w, [0, 1, 9, 2, 3], -100, 0f, out _));
        Assert.Throws<ArgumentException>(() => Device.Get("tpu"));
    }

    [Fact]
    public void RandomNumbersAreTheSameOnEveryBackend()
    {
        using var a = TensorRandom.Normal([257], 0f, 1f, 42, Device.Cpu);
        using var b = TensorRandom.Normal([257], 0f, 1f, 42, Device.Get("ilgpu-cpu"));
        Assert.Equal(a.ToArray(), b.ToArray());
        using var c = TensorRandom.Normal([257], 0f, 1f, 43, Device.Cpu);
        Assert.NotEqual(a.ToArray(), c.ToArray());
    }
}
