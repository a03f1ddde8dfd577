using Nanolora.Lora;
using Nanolora.Transformer;

namespace Nanolora.Cli;

/// <summary>
/// Checks on an --out folder made before any work starts: a model, adapter or run already there is not replaced unless
/// asked (--overwrite), and a folder that cannot be written fails now rather than after an hour of training.
/// </summary>
internal static class RunFolders
{
    static readonly string[] OurFiles = [Checkpoint.WeightsFile, Checkpoint.StateFile, AdapterFiles.WeightsFile, AdapterFiles.ConfigFile];

    public static void RequireFresh(string directory, bool overwrite, string command, string option = "--out")
    {
        if (File.Exists(directory)) throw new ArgumentException($"{command}: {option} '{directory}' is a file; give a folder.");
        var held = OurFiles.Where(f => File.Exists(Path.Combine(directory, f))).ToList();
        if (Directory.Exists(Path.Combine(directory, TrainingCheckpoint.Folder))) held.Add(TrainingCheckpoint.Folder + "/");
        if (held.Count > 0)
        {
            if (!overwrite)
                throw new ArgumentException($"{command}: {option} '{directory}' already holds {string.Join(", ", held)}; choose another {option}, or pass --overwrite to replace it.");
            // A new run must not find the old run's checkpoints (a resume would pick the newest of either).
            var checkpoints = Path.Combine(directory, TrainingCheckpoint.Folder);
            if (Directory.Exists(checkpoints)) Directory.Delete(checkpoints, recursive: true);
            var state = Path.Combine(directory, Checkpoint.StateFile);
            if (File.Exists(state)) File.Delete(state);
        }
        RequireWritable(directory, option);
    }

    /// <summary>Creates the folder and writes (then removes) a probe file in it.</summary>
    public static void RequireWritable(string directory, string option = "--out")
    {
        if (File.Exists(directory)) throw new ArgumentException($"{option} '{directory}' is a file; give a folder.");
        var probe = Path.Combine(directory, $".write-probe.{Environment.ProcessId}.tmp");
        try
        {
            Directory.CreateDirectory(directory);
            File.WriteAllText(probe, "");
            File.Delete(probe);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"{option} '{directory}' cannot be written ({e.Message}); nothing was trained.", e);
        }
    }
}
