using System.Globalization;

namespace Nanolora.DeviceRunner;

/// <summary>
/// One mode a command line; each prints plain text and writes a JSON results file (--json, default &lt;mode&gt;.json).
/// Exit codes: 0 all green, 1 a check or comparison failed, 2 a bad command line or a run that could not start.
/// </summary>
public static class RunnerProgram
{
    public static int Main(string[] args)
    {
        CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
        CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;
        try
        {
            var options = RunnerOptions.Parse(args);
            return options.Mode switch
            {
                "devices" => DevicesMode.Run(options),
                "check" => CheckMode.Run(options),
                "gemm" => GemmMode.Run(options),
                "bandwidth" => BandwidthMode.Run(options),
                "train-step" => TrainStepMode.Run(options),
                "hf-export" => HfExportMode.Run(options),
                _ => throw new UsageException($"unknown mode '{options.Mode}'"),
            };
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"error: {e.Message}. {RunnerOptions.Usage}");
            return 2;
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // One line for the summary; the type says where to look (a kernel build log is in the message).
            Console.Error.WriteLine($"error: {e.GetType().Name}: {e.Message}");
            if (Environment.GetEnvironmentVariable("NANOLORA_VERBOSE") == "1") Console.Error.WriteLine(e);
            return 2;
        }
    }
}
