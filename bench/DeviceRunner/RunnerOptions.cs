using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Nanolora.Tensors;

namespace Nanolora.DeviceRunner;

/// <summary>A command line the runner cannot act on (printed as one error line with the usage).</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The mode and its <c>--name value</c> options; every option is checked against the mode's list.</summary>
public sealed class RunnerOptions
{
    public const string Usage =
        "usage: Nanolora.DeviceRunner devices | check --device D [--small] | gemm --device D [--sizes 1024,2048,4096,8192] [--runs 5] | " +
        "bandwidth --device D [--small] | train-step --device D --preset small|transformer-base --method full|lora [--steps 10] [--small] | " +
        "hf-export --device D --out DIR; every mode takes --json FILE";

    static readonly Dictionary<string, string[]> Allowed = new()
    {
        ["devices"] = ["json"],
        ["check"] = ["device", "json", "small"],
        ["gemm"] = ["device", "json", "sizes", "runs"],
        ["bandwidth"] = ["device", "json", "small"],
        ["train-step"] = ["device", "json", "preset", "method", "steps", "small"],
        ["hf-export"] = ["device", "json", "out"],
    };
    static readonly string[] Flags = ["small"];

    public string Mode { get; }
    readonly Dictionary<string, string> _values;

    RunnerOptions(string mode, Dictionary<string, string> values) { Mode = mode; _values = values; }

    public static RunnerOptions Parse(string[] args)
    {
        if (args.Length == 0) throw new UsageException("no mode given");
        var mode = args[0];
        if (!Allowed.TryGetValue(mode, out var allowed)) throw new UsageException($"unknown mode '{mode}'");
        var values = new Dictionary<string, string>();
        for (int i = 1; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--")) throw new UsageException($"unexpected argument '{args[i]}'");
            var name = args[i][2..];
            if (!allowed.Contains(name)) throw new UsageException($"{mode} has no option --{name}");
            if (Flags.Contains(name)) { values[name] = "true"; continue; }
            if (i + 1 >= args.Length) throw new UsageException($"--{name} needs a value");
            values[name] = args[++i];
        }
        return new RunnerOptions(mode, values);
    }

    public string? Get(string name) => _values.GetValueOrDefault(name);
    public bool Flag(string name) => _values.ContainsKey(name);
    public string Require(string name) => Get(name) ?? throw new UsageException($"{Mode} needs --{name}");
    public string JsonPath => Get("json") ?? $"{Mode}.json";

    public int Int(string name, int fallback, int min, int max)
    {
        var text = Get(name);
        if (text == null) return fallback;
        if (!int.TryParse(text, out int v) || v < min || v > max) throw new UsageException($"--{name} must be an integer from {min} to {max}, got '{text}'");
        return v;
    }

    public string OneOf(string name, params string[] choices)
    {
        var v = Require(name);
        return choices.Contains(v) ? v : throw new UsageException($"--{name} must be one of {string.Join(", ", choices)}, got '{v}'");
    }

    /// <summary>The device named by --device, opened (cpu, ilgpu-cpu, cuda[:N], opencl[:N]).</summary>
    public Device Device()
    {
        var id = Require("device");
        try { return Nanolora.Tensors.Device.Get(id); }
        catch (ArgumentException e) { throw new UsageException(e.Message.TrimEnd('.')); }
    }
}

/// <summary>The JSON results file every mode writes: its mode, device, machine facts and its own fields.</summary>
public static class Results
{
    public static JsonObject Start(string mode, Device? device) => new()
    {
        ["mode"] = mode,
        ["device"] = device?.Id,
        ["device_name"] = device?.Name,
        ["processors"] = Environment.ProcessorCount,
        ["framework"] = System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription,
        ["utc"] = DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ"),
    };

    public static void Write(string path, JsonObject results, bool passed)
    {
        results["passed"] = passed;
        var dir = Path.GetDirectoryName(Path.GetFullPath(path));
        if (dir != null) Directory.CreateDirectory(dir);
        File.WriteAllText(path, results.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        Console.WriteLine($"results: {path} ({(passed ? "passed" : "FAILED")})");
    }

    public static JsonObject Ledger(LedgerSnapshot s)
    {
        var peak = new JsonObject();
        foreach (var (category, bytes) in s.PeakByCategory) peak[category.ToString()] = bytes;
        return new JsonObject { ["peak_bytes"] = s.PeakBytes, ["peak_reserved_bytes"] = s.PeakReservedBytes, ["peak_by_category"] = peak };
    }

    public static string MiB(long bytes) => $"{bytes / 1048576.0:F1} MiB";
}

/// <summary>
/// Wall-clock timing of device work: each sample repeats the action until it has run at least
/// <c>minSeconds</c> (GPU launches of a millisecond or less are otherwise all overhead), the device is
/// synchronized inside every sample, and the median of the samples is the number reported.
/// </summary>
public static class DeviceTiming
{
    public static (double Median, double Best) Measure(Device device, Action action, int samples, double minSeconds, int warmups = 2)
    {
        for (int w = 0; w < warmups; w++) action();
        device.Synchronize();
        var clock = Stopwatch.StartNew();
        action();
        device.Synchronize();
        int reps = Math.Max(1, (int)Math.Ceiling(minSeconds / Math.Max(clock.Elapsed.TotalSeconds, 1e-7)));
        var times = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            clock.Restart();
            for (int i = 0; i < reps; i++) action();
            device.Synchronize();
            times[s] = clock.Elapsed.TotalSeconds / reps;
        }
        Array.Sort(times);
        return (samples % 2 == 1 ? times[samples / 2] : (times[samples / 2 - 1] + times[samples / 2]) / 2, times[0]);
    }
}

/// <summary><c>devices</c>: what this machine offers, as <c>nanolora devices</c> lists it.</summary>
public static class DevicesMode
{
    public static int Run(RunnerOptions o)
    {
        var results = Results.Start("devices", null);
        var list = new JsonArray();
        foreach (var (id, description) in Device.Discover())
        {
            Console.WriteLine($"{id,-10} {description}");
            list.Add(new JsonObject { ["id"] = id, ["description"] = description });
        }
        results["devices"] = list;
        Results.Write(o.JsonPath, results, true);
        return 0;
    }
}
