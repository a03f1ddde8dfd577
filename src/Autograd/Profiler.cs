using System.Diagnostics;

namespace Nanolora.Autograd;

/// <summary>
/// Optional per-op timing (NANOLORA_PROFILE=1): forward time is the time since the previous recorded op
/// (ops run one after another), backward time is measured around each rule. Synchronous backends only
/// give meaningful numbers; on a GPU call Device.Synchronize in between or read the totals only.
/// </summary>
public static class Profiler
{
    /// <summary>Whether ops are timed; on when NANOLORA_PROFILE=1.</summary>
    public static bool Enabled { get; set; } = Environment.GetEnvironmentVariable("NANOLORA_PROFILE") == "1";
    static readonly Dictionary<string, (double Forward, double Backward, long Count)> OpTotals = new();
    static readonly Stopwatch Clock = Stopwatch.StartNew();
    static double _last;

    /// <summary>Marks the start of a forward pass, so the first op is not charged for what came before.</summary>
    public static void Mark() => _last = Clock.Elapsed.TotalMilliseconds;

    internal static void Forward(string op)
    {
        double now = Clock.Elapsed.TotalMilliseconds;
        lock (OpTotals)
        {
            var t = OpTotals.GetValueOrDefault(op);
            OpTotals[op] = (t.Forward + now - _last, t.Backward, t.Count + 1);
        }
        _last = now;
    }

    internal static void Backward(string op, double ms)
    {
        lock (OpTotals)
        {
            var t = OpTotals.GetValueOrDefault(op);
            OpTotals[op] = (t.Forward, t.Backward + ms, t.Count);
        }
    }

    /// <summary>One line per op, costliest first: calls and total forward/backward milliseconds.</summary>
    public static string Report()
    {
        lock (OpTotals)
        {
            var lines = OpTotals.OrderByDescending(kv => kv.Value.Forward + kv.Value.Backward)
                .Select(kv => $"{kv.Key,-16} calls {kv.Value.Count,8}  forward {kv.Value.Forward,10:F1} ms  backward {kv.Value.Backward,10:F1} ms");
            return string.Join(Environment.NewLine, lines);
        }
    }

    /// <summary>A copy of the totals: per op, forward and backward milliseconds and the call count.</summary>
    public static Dictionary<string, (double F, double B, long N)> Totals()
    {
        lock (OpTotals) return OpTotals.ToDictionary(kv => kv.Key, kv => (kv.Value.Forward, kv.Value.Backward, kv.Value.Count));
    }

    /// <summary>Clears the totals and restarts the forward clock.</summary>
    public static void Reset() { lock (OpTotals) OpTotals.Clear(); Mark(); }
}
