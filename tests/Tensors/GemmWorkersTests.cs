using Nanolora.Tensors;

namespace Nanolora.Tests.Tensors;

public class GemmWorkersTests
{
    [Fact]
    public void EveryIndexRunsExactlyOncePerJob()
    {
        for (int job = 0; job < 200; job++)
        {
            int count = 1 + job % 37;
            var hits = new int[count];
            GemmWorkers.For(count, i => Interlocked.Increment(ref hits[i]));
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    // For returns only when the workers' last tasks have finished too, not when the indices run out.
    [Fact]
    public void ReturnsOnlyAfterTheLastTaskFinished()
    {
        for (int job = 0; job < 5; job++)
        {
            var hits = new int[8];
            GemmWorkers.For(hits.Length, i => { Thread.Sleep(5); Interlocked.Increment(ref hits[i]); });
            Assert.All(hits, h => Assert.Equal(1, h));
        }
    }

    // The workers really take tasks, also after they have gone to sleep between jobs: two tasks that each wait for the
    // other can only both finish if two threads run them at once (the caller alone would time out at the barrier).
    [Fact]
    public void WorkersWakeAndRunTasksBesideTheCaller()
    {
        if (Environment.ProcessorCount < 2) return;
        for (int job = 0; job < 3; job++)
        {
            Thread.Sleep(5);                      // past the workers' 50 µs spin: they are blocked now
            using var both = new Barrier(2);
            var met = new bool[2];
            GemmWorkers.For(2, i => met[i] = both.SignalAndWait(TimeSpan.FromSeconds(10)));
            Assert.True(met[0] && met[1], $"job {job}: the two tasks did not run at the same time");
        }
    }

    // A GEMM task that itself calls For (nothing does today) must not publish over the running job: it runs on Parallel.For.
    [Fact]
    public void NestedCallsRunTheirWholeJob()
    {
        var outer = new int[4];
        var inner = new int[4, 16];
        GemmWorkers.For(4, i =>
        {
            GemmWorkers.For(16, j => Interlocked.Increment(ref inner[i, j]));
            Interlocked.Increment(ref outer[i]);
        });
        Assert.All(outer, h => Assert.Equal(1, h));
        Assert.All(inner.Cast<int>(), h => Assert.Equal(1, h));
    }

    // GEMMs started from several threads at once (tests, user code): one job owns the workers, the others take
    // Parallel.For; none may lose or repeat an index.
    [Fact]
    public void ConcurrentCallersEachGetTheirWholeJob()
    {
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, caller =>
        {
            for (int job = 0; job < 100; job++)
            {
                var hits = new int[64];
                GemmWorkers.For(hits.Length, i => { Interlocked.Increment(ref hits[i]); Thread.SpinWait(50); });
                Assert.All(hits, h => Assert.Equal(1, h));
            }
        });
    }

    [Fact]
    public void AnExceptionReachesTheCallerAndTheWorkersCarryOn()
    {
        var e = Assert.Throws<AggregateException>(() => GemmWorkers.For(16, i => { if (i == 11) throw new InvalidOperationException("task 11"); }));
        Assert.Equal("task 11", e.InnerException!.Message);
        var hits = new int[16];
        GemmWorkers.For(16, i => Interlocked.Increment(ref hits[i]));
        Assert.All(hits, h => Assert.Equal(1, h));
    }
}
