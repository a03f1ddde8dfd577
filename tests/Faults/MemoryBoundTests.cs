using Nanolora.Tensors;

namespace Nanolora.Tests.Faults;

/// <summary>The caching pool stays bounded: a cap on cached free bytes, and idle size classes released.</summary>
public class MemoryBoundTests
{
    sealed class Counted
    {
        public int Released;
        public BufferPool<float[]> Pool(long cacheLimit) => new(n => new float[n], _ => Released++) { CacheLimitBytes = cacheLimit };
    }

    [Fact]
    public void FreeBuffersBeyondTheCacheLimitAreReleased()
    {
        var c = new Counted();
        var pool = c.Pool(cacheLimit: 1000);
        var rented = Enumerable.Range(0, 10).Select(_ => pool.Rent(64, out long _)).ToList();   // 10 × 256 B
        Assert.Equal(2560, pool.ReservedBytes);
        foreach (var b in rented) pool.Return(b, 64);
        Assert.Equal(768, pool.CachedBytes);       // three fit under 1000 B
        Assert.Equal(7, c.Released);
        Assert.Equal(768, pool.ReservedBytes);     // the reservation shrank with them
        pool.Rent(64, out long _);
        Assert.Equal(512, pool.CachedBytes);       // reuse still works
        Assert.Equal(7, c.Released);
    }

    [Fact]
    public void SizeClassesUnusedSinceTheLastTrimAreReleased()
    {
        var c = new Counted();
        var pool = c.Pool(cacheLimit: long.MaxValue);
        var small = pool.Rent(64, out long smallClass);
        var large = pool.Rent(10_000, out long largeClass);
        pool.Return(small, smallClass);
        pool.Return(large, largeClass);
        Assert.Equal(0, pool.TrimIdle());          // both were rented in this interval
        pool.Return(pool.Rent(64, out long _), smallClass);
        long released = pool.TrimIdle();           // the large class sat unused for a whole interval
        Assert.Equal(largeClass * sizeof(float), released);
        Assert.Equal(1, c.Released);
        Assert.Equal(smallClass * sizeof(float), pool.ReservedBytes);
    }

    [Fact]
    public void ACachedBufferUpToTwiceTheSizeServesASmallerRequest()
    {
        // Batches change length every step; without this the pool missed and allocated on most activations.
        var c = new Counted();
        var pool = c.Pool(cacheLimit: long.MaxValue);
        var big = pool.Rent(10_000, out long bigClass);
        pool.Return(big, bigClass);
        var reused = pool.Rent(6_000, out long reusedCapacity);      // a smaller class, within 2×: served from the cache
        Assert.Same(big, reused);
        Assert.Equal(bigClass, reusedCapacity);                       // the caller returns it to its real class
        Assert.Equal(bigClass * sizeof(float), pool.ReservedBytes);
        pool.Return(reused, reusedCapacity);
        var fresh = pool.Rent(4_000, out long freshCapacity);         // under half the cached size: allocated anew
        Assert.NotSame(big, fresh);
        Assert.Equal(BufferPool<float[]>.SizeClass(4_000), freshCapacity);
        Assert.Equal((bigClass + freshCapacity) * sizeof(float), pool.ReservedBytes);
    }

    [Fact]
    public void TheLedgerReportsThePeakReservationBesideTheTensorPeak()
    {
        var d = Device.Cpu;
        d.EmptyCache();
        d.Ledger.ResetPeaks();
        using (var t = Tensor.Zeros([1000, 100], d)) { }
        var m = d.Ledger.Snapshot();
        Assert.True(m.PeakReservedBytes >= m.PeakBytes, $"pool reserved peak {m.PeakReservedBytes} < tensor peak {m.PeakBytes}");
        Assert.True(m.PeakReservedBytes >= 400_000, $"pool reserved peak {m.PeakReservedBytes}");
    }
}
