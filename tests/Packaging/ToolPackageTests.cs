using System.Diagnostics;
using Nanolora.Transformer;

namespace Nanolora.Tests.Packaging;

/// <summary>
/// The nanolora .NET tool as a user gets it: packed from the build the tests run on, installed into a temporary tool path
/// from a local folder (the only package source, so nothing is fetched), then run. About a minute, most of it zipping the
/// bundled all-MiniLM-L6-v2 and SkiaSharp's native libraries.
/// </summary>
public class ToolPackageTests
{
    static (int Code, string Output) Run(string file, string arguments, string workingDirectory)
    {
        var start = new ProcessStartInfo(file, arguments) { WorkingDirectory = workingDirectory, RedirectStandardOutput = true, RedirectStandardError = true };
        start.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        start.Environment["DOTNET_NOLOGO"] = "1";
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(5)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {arguments} ran over 5 minutes");
        }
        return (process.ExitCode, stdout.Result + stderr.Result);
    }

    [Fact]
    [Trait("Category", "Packaging")]
    public void PacksInstallsAndRunsAsADotnetTool()
    {
        string repository = Path.GetDirectoryName(Path.GetDirectoryName(DataPaths.Find("debian-descriptions.jsonl.gz")))!;
        // The configuration the tests were built in (bin/Release/… or bin/Debug/…): pack that build, do not build again.
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
        var temp = Directory.CreateTempSubdirectory("nanolora-tool-").FullName;
        try
        {
            string packages = Path.Combine(temp, "packages"), tools = Path.Combine(temp, "tools");
            var (code, output) = Run("dotnet", $"pack src/Cli/Nanolora.Cli.csproj -c {configuration} --no-build -o \"{packages}\"", repository);
            Assert.True(code == 0, output);
            var package = Assert.Single(Directory.GetFiles(packages, "nanolora.*.nupkg"), p => !p.EndsWith(".snupkg"));
            string version = Path.GetFileNameWithoutExtension(package)["nanolora.".Length..];

            File.WriteAllText(Path.Combine(temp, "nuget.config"),
                $"<configuration><packageSources><clear /><add key=\"local\" value=\"{packages}\" /></packageSources></configuration>");
            (code, output) = Run("dotnet", $"tool install nanolora --tool-path \"{tools}\" --configfile \"{Path.Combine(temp, "nuget.config")}\" --version {version}", temp);
            Assert.True(code == 0, output);

            // Run from a folder outside the checkout: the tool must not depend on the current directory.
            string shim = Path.Combine(tools, OperatingSystem.IsWindows() ? "nanolora.exe" : "nanolora");
            (code, output) = Run(shim, "devices", temp);
            Assert.True(code == 0, output);
            Assert.Contains("cpu", output);
            Assert.Contains("default:", output);
            (code, output) = Run(shim, "params --preset tiny", temp);
            Assert.True(code == 0, output);
            Assert.Contains("trainable params:", output);
        }
        finally { Directory.Delete(temp, recursive: true); }
    }
}
