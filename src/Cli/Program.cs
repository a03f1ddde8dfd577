using System.CommandLine;
using Spectre.Console;

namespace Nanolora.Cli;

/// <summary>The nanolora command: every subcommand is defined in Commands/*.cs.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        // Numbers print the same under every locale (tables, JSON, predictions files).
        System.Globalization.CultureInfo.DefaultThreadCurrentCulture = System.Globalization.CultureInfo.InvariantCulture;
        System.Globalization.CultureInfo.CurrentCulture = System.Globalization.CultureInfo.InvariantCulture;
        var root = new RootCommand("nanolora: parameter-efficient fine-tuning (LoRA) of an encoder-decoder transformer, from scratch in C#.");
        var device = new Option<string?>("--device") { Description = "cpu, ilgpu-cpu, cuda or opencl (default: NANOLORA_DEVICE, else the best found)", Recursive = true };
        root.Options.Add(device);
        foreach (var command in new[]
        {
            InfoCommands.Devices(), InfoCommands.Params(), InfoCommands.Inspect(), InfoCommands.RougeCommand(),
            TrainCommands.Pretrain(device), TrainCommands.Train(device), TrainCommands.FineTune(device), ModelCommands.Eval(device),
            ModelCommands.Generate(device), ModelCommands.Merge(device), ExperimentCommand.Create(device),
            EncoderCommands.Embed(device), EncoderCommands.Convert(device),
        })
            root.Subcommands.Add(command);
        try
        {
            return root.Parse(args).Invoke();
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or InvalidOperationException or FileNotFoundException or KeyNotFoundException)
        {
            // Bad input gets one clear line, not a stack trace.
            AnsiConsole.MarkupLine($"[red]error:[/] {Markup.Escape(e.Message)}");
            return 1;
        }
    }

    /// <summary>Runs a command body, turning expected failures into one error line and exit code 1.</summary>
    internal static int Guard(Func<int> body)
    {
        try { return body(); }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or InvalidOperationException or FileNotFoundException or KeyNotFoundException or DirectoryNotFoundException or IOException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }
}
