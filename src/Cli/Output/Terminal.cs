using Spectre.Console;

namespace Nanolora.Cli.Output;

/// <summary>
/// Where the command's text goes. Results go to stdout: a Spectre.Console table on a terminal (as wide as <c>COLUMNS</c>
/// when that is set), plain full-width rows in a pipe or file. Progress and status go to stderr, so that
/// <c>nanolora eval &gt; out</c> leaves only results in <c>out</c>.
/// </summary>
internal static class Terminal
{
    /// <summary>True when stdout is a terminal (not a pipe, not a file).</summary>
    public static bool StdoutIsTerminal => !Console.IsOutputRedirected;

    /// <summary>True when stderr is a terminal: progress bars animate there, and are replaced by a few lines otherwise.</summary>
    public static bool StderrIsTerminal => !Console.IsErrorRedirected;

    /// <summary>The width <c>COLUMNS</c> asks for, if it is a positive integer; null otherwise.</summary>
    public static int? RequestedColumns(string? value = null)
    {
        value ??= Environment.GetEnvironmentVariable("COLUMNS");
        return int.TryParse(value, out int n) && n > 0 ? n : null;
    }

    /// <summary>
    /// A Spectre.Console console on <paramref name="writer"/>, made afresh each time so that it writes to the writer that is
    /// current now (tests swap Console.Out; AnsiConsole's static console keeps the one it first saw).
    /// </summary>
    public static IAnsiConsole ConsoleOn(TextWriter writer, bool terminal) => ConsoleOn(writer, terminal, RequestedColumns());

    /// <summary>The same, <paramref name="width"/> columns wide when given (else as detected).</summary>
    public static IAnsiConsole ConsoleOn(TextWriter writer, bool terminal, int? width)
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(writer),
            Ansi = terminal ? AnsiSupport.Detect : AnsiSupport.No,
            ColorSystem = terminal ? ColorSystemSupport.Detect : ColorSystemSupport.NoColors,
            Interactive = terminal ? InteractionSupport.Detect : InteractionSupport.No,
        });
        if (width is int w) console.Profile.Width = w;
        return console;
    }

    /// <summary>The console progress bars draw on: stderr.</summary>
    public static IAnsiConsole Stderr() => ConsoleOn(Console.Error, StderrIsTerminal);

    /// <summary>Writes a result table to stdout, in the form that suits where stdout goes.</summary>
    public static void Write(TextTable table) => Write(table, Console.Out, StdoutIsTerminal);

    /// <summary>Writes <paramref name="table"/> to <paramref name="writer"/>: a drawn table on a terminal, plain rows otherwise.</summary>
    public static void Write(TextTable table, TextWriter writer, bool terminal, int? width = null)
    {
        if (terminal) ConsoleOn(writer, true, width ?? RequestedColumns()).Write(table.ToSpectre());
        else writer.Write(table.ToPlainText());
    }

    /// <summary>A status line (what is being done, where a file was written): stderr, never mixed into results.</summary>
    public static void Status(string line) => Console.Error.WriteLine(line);
}
