using System.CommandLine;
using System.Text.Json;

namespace Nanolora.Cli;

/// <summary>The nanolora command: every subcommand is defined in Commands/*.cs.</summary>
public static class Program
{
    /// <summary>--verbose: an error also prints its stack trace.</summary>
    static bool _verbose;

    /// <summary>Runs the command line; returns the process exit code.</summary>
    public static int Main(string[] args)
    {
        // Numbers print the same under every locale (tables, JSON, predictions files).
        System.Globalization.CultureInfo.DefaultThreadCurrentCulture = System.Globalization.CultureInfo.InvariantCulture;
        System.Globalization.CultureInfo.CurrentCulture = System.Globalization.CultureInfo.InvariantCulture;
        var root = new RootCommand("nanolora: parameter-efficient fine-tuning (LoRA) of an encoder-decoder transformer, from scratch in C#.");
        var device = new Option<string?>("--device")
            { Description = "where to compute: cpu, ilgpu-cpu, cuda[:N] or opencl[:N] (default: NANOLORA_DEVICE, else cuda, else opencl, else cpu; see `nanolora devices`)" };
        var verbose = new Option<bool>("--verbose") { Description = "on an error, print the stack trace too", Recursive = true };
        root.Options.Add(verbose);
        foreach (var command in new[] { InfoCommands.Devices(), InfoCommands.Params(), InfoCommands.Inspect(), InfoCommands.RougeCommand(), ScoreCommand.Create() })
            root.Subcommands.Add(command);
        // --device only where something is computed: the commands that count or read files never touch a device.
        foreach (var command in new[]
        {
            TrainCommands.Pretrain(device), TrainCommands.Train(device), TrainCommands.FineTune(device), ModelCommands.Eval(device),
            ModelCommands.Generate(device), ModelCommands.Merge(device), ExperimentCommand.Create(device),
            EncoderCommands.Embed(device), EncoderCommands.Convert(device),
        })
        {
            command.Options.Add(device);
            root.Subcommands.Add(command);
        }
        return Guard(() =>
        {
            var parse = root.Parse(args);
            _verbose = parse.GetValue(verbose);
            // A bad command line gets one line per problem (the option, the value, what is allowed), not the help page.
            if (parse.Errors.Count > 0 && args.Length > 0 && parse.Action is not System.CommandLine.Help.HelpAction)
            {
                foreach (var error in parse.Errors)
                    Console.Error.WriteLine($"error: {string.Join(' ', error.Message.Split(['\r', '\n', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))}");
                return 1;
            }
            return parse.Invoke();
        });
    }

    /// <summary>
    /// Runs a command body: any failure is one error line and exit code 1, never a stack trace (unless --verbose). A bad
    /// input's exception says what was wrong with it; any other kind is a bug, and the line says so with its type.
    /// </summary>
    internal static int Guard(Func<int> body)
    {
        try { return body(); }
        catch (Exception e)
        {
            bool badInput = e is ArgumentException or InvalidDataException or InvalidOperationException or IOException or UnauthorizedAccessException
                or KeyNotFoundException or NotSupportedException or JsonException or FormatException or OverflowException;
            string message = e.Message.ReplaceLineEndings(" ");
            Console.Error.WriteLine(badInput ? $"error: {message}" : $"error: internal error ({e.GetType().Name}): {message}{(_verbose ? "" : " (--verbose shows where)")}");
            if (_verbose) Console.Error.WriteLine(e);
            return 1;
        }
    }
}
