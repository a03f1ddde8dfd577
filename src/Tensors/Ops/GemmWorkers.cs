using System.Diagnostics;

namespace Nanolora.Tensors;

/// <summary>
/// The GEMM's own worker threads: one fewer than the processors (the caller is the last worker), started once, each
/// taking task indices from a shared counter. After a job a worker spins for <see cref="SpinMicroseconds"/> before it
/// blocks, so the next GEMM finds it awake, as OpenBLAS's threads do.
/// Parallel.For lent the GEMM whichever pool threads were free, sometimes more than there are cores, and a thread that
/// lost its core in a block's middle held the whole product up. One job at a time: a caller that finds the workers busy
/// (GEMMs started from several threads at once) runs its job on Parallel.For instead.
/// </summary>
internal static class GemmWorkers
{
    const long SpinMicroseconds = 50;

    sealed class Job(int count, Action<int> body)
    {
        public readonly int Count = count;
        public readonly Action<int> Body = body;
        public int Next = -1, Finished;
        public Exception? Error;

        /// <summary>Takes indices until none are left; the last finisher's increment tells the caller the job is done.</summary>
        public void Work()
        {
            int i;
            while ((i = Interlocked.Increment(ref Next)) < Count)
            {
                try { Body(i); }
                catch (Exception e) { Interlocked.CompareExchange(ref Error, e, null); }
                Interlocked.Increment(ref Finished);
            }
        }
    }

    [ThreadStatic] static int t_worker;

    /// <summary>
    /// The calling thread's number: 1 … n−1 on the GEMM's own threads, 0 on any other (the caller of <see cref="For"/>). A
    /// job can give each thread the same part of a product every call, so what that thread packed stays in its core's cache.
    /// </summary>
    public static int Current => t_worker;

    static readonly object Sleep = new();
    static Job? _job;
    static int _generation, _busy, _started;

    /// <summary>Runs body(0 … count-1) on the calling thread and the workers; returns when every index has run.</summary>
    public static void For(int count, Action<int> body)
    {
        // Not a Monitor: it is re-entrant, and a second job published over a running one would be lost.
        if (Interlocked.CompareExchange(ref _busy, 1, 0) != 0)
        {
            Parallel.For(0, count, body);
            return;
        }
        try
        {
            if (Interlocked.Exchange(ref _started, 1) == 0) Start();
            var job = new Job(count, body);
            Volatile.Write(ref _job, job);
            Interlocked.Increment(ref _generation);
            try { lock (Sleep) Monitor.PulseAll(Sleep); }
            finally
            {
                // Whatever happens above, the job is finished before the workers are released: its tasks write into
                // buffers the caller hands back to the pool as soon as this returns.
                job.Work();
                var wait = new SpinWait();
                while (Volatile.Read(ref job.Finished) < count) wait.SpinOnce(sleep1Threshold: -1);
            }
            if (job.Error != null) throw new AggregateException(job.Error);
        }
        finally { Volatile.Write(ref _busy, 0); }
    }

    static void Start()
    {
        for (int w = 1; w < Environment.ProcessorCount; w++)
        {
            int worker = w;
            new Thread(() => { t_worker = worker; Loop(); }) { IsBackground = true, Name = $"nanolora-gemm-{w}" }.Start();
        }
    }

    static void Loop()
    {
        int seen = 0;
        long spinTicks = SpinMicroseconds * Stopwatch.Frequency / 1_000_000;
        while (true)
        {
            long until = Stopwatch.GetTimestamp() + spinTicks;
            while (Volatile.Read(ref _generation) == seen)
            {
                if (Stopwatch.GetTimestamp() < until) { Thread.SpinWait(16); continue; }
                lock (Sleep)
                    while (Volatile.Read(ref _generation) == seen) Monitor.Wait(Sleep);
            }
            seen = Volatile.Read(ref _generation);
            Volatile.Read(ref _job)?.Work();
        }
    }
}
