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
