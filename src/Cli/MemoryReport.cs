using System.Diagnostics;
using Nanolora.Tensors;

namespace Nanolora.Cli;

/// <summary>
/// Memory as three numbers, since each alone misleads: the ledger's tensor peak (what the model needs), the pool's
/// peak reservation (what the device gave up, cached free buffers included) and the process's peak resident set.
/// </summary>
internal static class MemoryReport
{
    public static long PeakRssBytes()
    {
        using var self = Process.GetCurrentProcess();
        return self.PeakWorkingSet64;
    }

    public static string Line(LedgerSnapshot m) =>
        $"memory: tensor peak {Mb(m.PeakBytes)} MB, pool reserved peak {Mb(m.PeakReservedBytes)} MB, process peak RSS {Mb(PeakRssBytes())} MB";

    static string Mb(long bytes) => (bytes / 1048576.0).ToString("F1");
}
