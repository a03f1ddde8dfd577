using System.Security.Cryptography;
using System.Text.Json;
using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Transformer;

/// <summary>A complete, verified training checkpoint found in a run folder, and the newer ones passed over (with why).</summary>
public sealed record ResumePoint(string Directory, int Step, IReadOnlyList<string> Skipped);

/// <summary>
/// A run folder's resumable checkpoints, each one unit: <c>checkpoints/step-00000040/</c> holds the weights, tokenizer,
/// optimizer state and trainer state, plus <c>manifest.json</c> (every file's size and SHA-256, and the step) written
/// last. The unit is built under a temporary name and renamed into place, so a kill at any moment leaves either the
/// new complete checkpoint or none; the previous one is deleted only after that. The run folder's top level is a
/// plain checkpoint of the latest step (weights, tokenizer, trainer state) for eval and plots, never resumed from.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>The checkpoints folder of a run folder, the manifest's file name and the format it declares.</summary>
    public const string Folder = "checkpoints", ManifestFile = "manifest.json", ManifestFormat = "nanolora-checkpoint/1";

    static readonly string[] UnitFiles = [Checkpoint.WeightsFile, Checkpoint.TokenizerFile, Checkpoint.OptimizerFile, Checkpoint.StateFile];
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>The unit directory of a step: RUN/checkpoints/step-NNNNNNNN (eight digits, so names sort by step).</summary>
    public static string StepDirectory(string runDirectory, int step) => Path.Combine(runDirectory, Folder, $"step-{step:D8}");

    /// <summary>
    /// True when the folder holds a training run: a step directory or a top-level trainer state. A run killed before its
    /// first checkpoint completed left only temporaries, so it can be started again.
    /// </summary>
    public static bool HoldsRun(string runDirectory) => HasCheckpoints(runDirectory) || File.Exists(Path.Combine(runDirectory, Checkpoint.StateFile));

    /// <summary>True when a step directory (complete or not) exists: a new run there would mix with the old one.</summary>
    public static bool HasCheckpoints(string runDirectory) => StepDirectories(runDirectory).Any();

    /// <summary>Writes the checkpoint of <paramref name="state"/>'s step as one unit, then exports it to the top level and drops older ones.</summary>
    public static void Save(string runDirectory, Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer, Optimizer optimizer, TrainerState state)
    {
        var root = Path.Combine(runDirectory, Folder);
        Directory.CreateDirectory(root);
        RemoveLeftovers(runDirectory);
        var final = StepDirectory(runDirectory, state.Step);
        var building = Path.Combine(root, $".step-{state.Step:D8}.{Environment.ProcessId}.tmp");
        try
        {
            Directory.CreateDirectory(building);
            Checkpoint.Save(building, model, tokenizer, optimizer, state); // refuses non-finite weights before writing them
            var manifest = new CheckpointManifest(ManifestFormat, state.Step,
                UnitFiles.Select(f => new ManifestEntry(f, new FileInfo(Path.Combine(building, f)).Length, Sha256(Path.Combine(building, f)))).ToList());
            AtomicFile.WriteAllText(Path.Combine(building, ManifestFile), JsonSerializer.Serialize(manifest, Json));
            if (Directory.Exists(final))
            {
                // The same step saved again (a finished run resumed): move the old unit aside before the new one takes its name.
                var aside = Path.Combine(root, $".step-{state.Step:D8}.{Environment.ProcessId}.old.tmp");
                Directory.Move(final, aside);
                Directory.Move(building, final);
                Directory.Delete(aside, recursive: true);
            }
            else Directory.Move(building, final);
        }
        catch
        {
            try { if (Directory.Exists(building)) Directory.Delete(building, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
        // The top level is a convenience copy; each file is replaced atomically, and resume never reads it.
        foreach (var f in new[] { Checkpoint.WeightsFile, Checkpoint.ConfigFile, Checkpoint.TokenizerFile, Checkpoint.StateFile })
            if (File.Exists(Path.Combine(final, f))) CopyAtomically(Path.Combine(final, f), Path.Combine(runDirectory, f));
        foreach (var older in StepDirectories(runDirectory).Where(d => d.Step < state.Step))
            Directory.Delete(older.Path, recursive: true);
    }

    /// <summary>
    /// The newest checkpoint whose manifest, files, sizes, hashes and step all agree. Newer ones that do not are listed in
    /// <see cref="ResumePoint.Skipped"/> (the caller says so); when none is complete the error lists every problem.
    /// </summary>
    public static ResumePoint FindLatest(string runDirectory)
    {
        if (File.Exists(runDirectory)) throw new ArgumentException($"--resume: '{runDirectory}' is a file, not a run folder.");
        if (!Directory.Exists(Path.Combine(runDirectory, Folder)))
        {
            if (File.Exists(Path.Combine(runDirectory, Checkpoint.OptimizerFile)))
                throw new InvalidDataException($"--resume: '{runDirectory}' holds a run written without checkpoint manifests ({Checkpoint.OptimizerFile} at its top level); it cannot be checked for a mixed state, so it is not resumed. Start a new run.");
            throw new FileNotFoundException($"--resume: '{runDirectory}' holds no resumable checkpoint ({Folder}/step-N/{ManifestFile}, with {Checkpoint.StateFile}); start the run with --checkpoint-every first.");
        }
        var problems = new List<string>();
        foreach (var (step, dir) in StepDirectories(runDirectory).OrderByDescending(d => d.Step))
        {
            var problem = Verify(dir, step);
            if (problem == null) return new ResumePoint(dir, step, problems);
            problems.Add(problem);
        }
        throw new InvalidDataException(problems.Count == 0
            ? $"--resume: '{Path.Combine(runDirectory, Folder)}' holds no complete checkpoint (the run was stopped before its first checkpoint finished); start it again without --resume."
            : $"--resume: no complete checkpoint in '{runDirectory}': {string.Join("; ", problems)}");
    }

    /// <summary>
    /// Restores weights, optimizer state, random state and data position from a verified checkpoint into the model and
    /// optimizer, checking every field; refuses a run whose trajectory options differ unless <paramref name="force"/>.
    /// </summary>
    public static TrainerState Restore(ResumePoint point, Seq2SeqTransformer model, Optimizer optimizer, RunOptions now, bool force, int batchesPerEpoch)
    {
        var statePath = Path.Combine(point.Directory, Checkpoint.StateFile);
        var state = TrainerStateFile.Read(statePath);
        if (state.Step != point.Step) throw new InvalidDataException($"{statePath}: field 'global_step' is {state.Step}, but the checkpoint is for step {point.Step}.");
        state.Validate(statePath, batchesPerEpoch, model.RandomState.Length);
        var differences = state.Options!.Differences(now);
        if (differences.Count > 0 && !force)
            throw new InvalidOperationException($"--resume: the run in '{point.Directory}' was started with other options ({string.Join("; ", differences)}); resuming would not continue the same run. Use the same options, or --force-resume to continue anyway.");
        if (differences.Count == 0 && (long)state.Epoch * batchesPerEpoch + state.BatchInEpoch != state.Step)
            throw new InvalidDataException($"{statePath}: fields 'epoch_index' {state.Epoch} and 'batch_in_epoch' {state.BatchInEpoch} ({batchesPerEpoch} batches an epoch) do not add up to 'global_step' {state.Step}.");
        if (state.Step > now.Steps)
            throw new InvalidOperationException($"--resume: the checkpoint is at step {state.Step}, beyond this run's {now.Steps} steps.");

        Checkpoint.LoadSeq2SeqWeights(model, Seq2SeqTokenizers.Load(Path.Combine(point.Directory, Checkpoint.TokenizerFile)), point.Directory);
        var optPath = Path.Combine(point.Directory, Checkpoint.OptimizerFile);
        var file = Safetensors.Read(optPath);
        var entries = file.Entries.Select(e => (e.Name, e.Shape, Data: file.ReadFloats(e.Name))).ToList();
        foreach (var (name, _, data) in entries) NonFinite.Require(optPath, name, data, "Refusing to resume from");
        try { optimizer.LoadStateDict(entries, requireComplete: true); }
        catch (InvalidDataException e) { throw new InvalidDataException($"{optPath}: {e.Message}"); }
        if (optimizer.StepCount != state.Step)
            throw new InvalidDataException($"{optPath}: tensor 'step' is {optimizer.StepCount}, but {Checkpoint.StateFile} is at step {state.Step}.");
        model.RandomState = state.RandomState!;
        return state;
    }

    /// <summary>Deletes what a killed run left: half-built units and the temporary files of atomic writes.</summary>
    public static void RemoveLeftovers(string runDirectory)
    {
        var root = Path.Combine(runDirectory, Folder);
        if (Directory.Exists(root))
            foreach (var dir in Directory.EnumerateDirectories(root, ".step-*.tmp")) Directory.Delete(dir, recursive: true);
        if (Directory.Exists(runDirectory))
            foreach (var f in Directory.EnumerateFiles(runDirectory, ".*.tmp"))
                if (UnitFiles.Concat(["loss.png"]).Any(name => Path.GetFileName(f).StartsWith($".{name}.", StringComparison.Ordinal))) File.Delete(f);
    }

    static IEnumerable<(int Step, string Path)> StepDirectories(string runDirectory)
    {
        var root = Path.Combine(runDirectory, Folder);
        if (!Directory.Exists(root)) yield break;
        foreach (var dir in Directory.EnumerateDirectories(root, "step-*"))
            if (int.TryParse(Path.GetFileName(dir)["step-".Length..], out int step) && step >= 0) yield return (step, dir);
    }

    /// <summary>Null when the unit is complete and unchanged since it was written; else what is wrong with it.</summary>
    static string? Verify(string dir, int step)
    {
        var manifestPath = Path.Combine(dir, ManifestFile);
        if (!File.Exists(manifestPath)) return $"{dir} has no {ManifestFile} (incomplete)";
        CheckpointManifest? manifest;
        try { manifest = JsonSerializer.Deserialize<CheckpointManifest>(File.ReadAllText(manifestPath)); }
        catch (JsonException e) { return $"{manifestPath} does not parse ({e.Message})"; }
        if (manifest == null || manifest.Format != ManifestFormat) return $"{manifestPath}: field 'Format' is {manifest?.Format ?? "null"}, expected {ManifestFormat}";
        if (manifest.Step != step) return $"{manifestPath}: field 'Step' is {manifest.Step}, but the folder is for step {step}";
        foreach (var name in UnitFiles)
        {
            var entry = manifest.Files?.FirstOrDefault(f => f?.Name == name);
            var path = Path.Combine(dir, name);
            if (entry == null) return $"{manifestPath} does not list {name}";
            if (!File.Exists(path)) return $"{path} is missing";
            long length = new FileInfo(path).Length;
            if (length != entry.Bytes) return $"{path} is {length} bytes, the manifest says {entry.Bytes}";
            if (!string.Equals(Sha256(path), entry.Sha256, StringComparison.OrdinalIgnoreCase)) return $"{path} does not match its SHA-256 in the manifest (changed or mixed)";
        }
        return null;
    }

    static string Sha256(string path)
    {
        using var fs = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }

    static void CopyAtomically(string from, string to)
    {
        var tmp = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(to))!, $".{Path.GetFileName(to)}.{Environment.ProcessId}.tmp");
        File.Copy(from, tmp, overwrite: true);
        File.Move(tmp, to, overwrite: true);
    }
}

/// <summary>manifest.json of a checkpoint unit: its format, its step and every file it holds.</summary>
public sealed record CheckpointManifest(string Format, int Step, List<ManifestEntry> Files);

/// <summary>One file of a checkpoint unit: its name, its size in bytes and its SHA-256 (hex).</summary>
public sealed record ManifestEntry(string Name, long Bytes, string Sha256);
