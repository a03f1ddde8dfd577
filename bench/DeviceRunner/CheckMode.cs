using System.Diagnostics;
using System.Text.Json.Nodes;
using Nanolora.Tensors;

namespace Nanolora.DeviceRunner;

/// <summary>How one output of a check compared: the worst element and the first one out of tolerance.</summary>
public sealed record Comparison(string Label, double MaxAbsError, double MaxRelError, long FirstBadIndex, double Expected, double Actual)
{
    public bool Passed => FirstBadIndex < 0;

    /// <summary>
    /// |actual − expected| ≤ atol + rtol·|expected| at every element (NaN matches NaN, ±∞ matches itself), as the
    /// tests' Reference.Close. Relative error is over max(|expected|, 1e-6) so that zeros do not divide.
    /// </summary>
    public static Comparison Of(string label, float[] expected, float[] actual, double atol, double rtol)
    {
        if (expected.Length != actual.Length)
            return new(label, double.PositiveInfinity, double.PositiveInfinity, 0, expected.Length, actual.Length);
        double maxAbs = 0, maxRel = 0;
        long bad = -1;
        for (long i = 0; i < expected.Length; i++)
        {
            double e = expected[i], a = actual[i], d = Math.Abs(a - e);
            bool same = (double.IsNaN(e) && double.IsNaN(a)) || (double.IsInfinity(e) && e == a);
            bool ok = same || d <= atol + rtol * Math.Abs(e);
            if (!same)
            {
                if (!(d <= maxAbs)) maxAbs = d; // NaN against a number counts as an infinite error
                maxRel = Math.Max(maxRel, double.IsNaN(d) ? double.PositiveInfinity : d / Math.Max(Math.Abs(e), 1e-6));
            }
            if (!ok && bad < 0) bad = i;
        }
        if (double.IsNaN(maxAbs)) maxAbs = double.PositiveInfinity;
        return bad < 0 ? new(label, maxAbs, maxRel, -1, 0, 0) : new(label, maxAbs, maxRel, bad, expected[bad], actual[bad]);
    }
}

/// <summary>
/// <c>check --device D [--small]</c>: every op check of <see cref="OpChecks"/> on D against the cpu backend, one
/// PASS/FAIL line each with the largest error, and a per-family tally. A check that throws (a kernel the driver
/// rejects, say, with its build log) fails with the message and the run goes on. Exit code 1 if anything failed.
/// </summary>
public static class CheckMode
{
    public static int Run(RunnerOptions o)
    {
        var device = o.Device();
        bool small = o.Flag("small");
        var (passed, results) = RunAll(device, OpChecks.All(small), Console.Out);
        results["small"] = small;
        Results.Write(o.JsonPath, results, passed);
        return passed ? 0 : 1;
    }

    /// <summary>Runs the checks; returns whether all passed (and there was at least one) and the JSON record. tests/DeviceRunner calls it too.</summary>
    public static (bool Passed, JsonObject Results) RunAll(Device device, IEnumerable<OpCheck> checks, TextWriter log)
    {
        var cpu = Device.Cpu;
        log.WriteLine($"== check: {device} against {cpu.Id}");
        var records = new JsonArray();
        var tally = new SortedDictionary<string, (int Passed, int Failed)>(StringComparer.Ordinal);
        var total = Stopwatch.StartNew();
        foreach (var check in checks)
        {
            var clock = Stopwatch.StartNew();
            var record = new JsonObject { ["family"] = check.Family, ["name"] = check.Name, ["atol"] = check.Atol, ["rtol"] = check.Rtol };
            bool ok;
            string detail;
            try
            {
                var expected = Outputs(check, cpu);
                var actual = Outputs(check, device);
                if (expected.Count != actual.Count) throw new InvalidOperationException($"{expected.Count} outputs on cpu but {actual.Count} on {device.Id}");
                var comparisons = expected.Zip(actual, (e, a) => Comparison.Of(e.Label, e.Values, a.Values, check.Atol, check.Rtol)).ToList();
                var worst = comparisons.MaxBy(c => c.MaxAbsError)!;
                var firstBad = comparisons.FirstOrDefault(c => !c.Passed);
                ok = firstBad == null;
                record["max_abs_error"] = Finite(worst.MaxAbsError);
                record["max_rel_error"] = Finite(comparisons.Max(c => c.MaxRelError));
                record["worst_output"] = worst.Label;
                detail = $"max abs {worst.MaxAbsError:G3} ({worst.Label}), max rel {comparisons.Max(c => c.MaxRelError):G3}";
                if (firstBad != null)
                {
                    record["first_mismatch"] = new JsonObject
                    {
                        ["output"] = firstBad.Label, ["index"] = firstBad.FirstBadIndex, ["expected"] = Finite(firstBad.Expected), ["actual"] = Finite(firstBad.Actual),
                    };
                    detail += $"; first mismatch in {firstBad.Label} at {firstBad.FirstBadIndex}: cpu {firstBad.Expected:R}, {device.Id} {firstBad.Actual:R}";
                }
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                ok = false;
                detail = $"threw {e.GetType().Name}: {e.Message}";
                record["error"] = detail;
            }
            record["passed"] = ok;
            record["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 3);
            records.Add(record);
            var (p, f) = tally.GetValueOrDefault(check.Family);
            tally[check.Family] = ok ? (p + 1, f) : (p, f + 1);
            log.WriteLine($"{(ok ? "PASS" : "FAIL")}  {check.Family,-13} {check.Name,-62} {detail}  (tol {check.Atol:G2} + {check.Rtol:G2}·|x|)");
        }
        int failed = tally.Values.Sum(t => t.Failed), passedCount = tally.Values.Sum(t => t.Passed);
        log.WriteLine("-- by family: " + string.Join(", ", tally.Select(kv => $"{kv.Key} {kv.Value.Passed}/{kv.Value.Passed + kv.Value.Failed}")));
        log.WriteLine($"== {passedCount} passed, {failed} failed in {total.Elapsed.TotalSeconds:F1} s on {device}");
        var results = Results.Start("check", device);
        results["checks_passed"] = passedCount;
        results["checks_failed"] = failed;
        results["families"] = new JsonObject(tally.Select(kv => KeyValuePair.Create(kv.Key, (JsonNode?)new JsonObject { ["passed"] = kv.Value.Passed, ["failed"] = kv.Value.Failed })));
        results["checks"] = records;
        return (failed == 0 && passedCount > 0, results);
    }

    static List<(string Label, float[] Values)> Outputs(OpCheck check, Device device)
    {
        using var probe = new Probe(device);
        return check.Run(probe).ToList();
    }

    // JSON has no NaN or infinity; a failure record must still be written.
    static JsonNode Finite(double v) => double.IsFinite(v) ? JsonValue.Create(v) : JsonValue.Create(v.ToString("R"));
}
