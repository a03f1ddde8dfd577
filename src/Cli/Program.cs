namespace Nanolora.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        Console.WriteLine("nanolora: commands arrive with the CLI issue");
        return 0;
    }
}
