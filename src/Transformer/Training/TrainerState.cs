namespace Nanolora.Transformer;

/// <summary>
/// Where a run stands, so a resumed run continues the same schedule, data order and dropout masks.
/// <see cref="RandomState"/> is the model's seed counters; <see cref="Options"/> what the run was started with. On disk it is
/// trainer_state.json in Hugging Face Trainer's layout (<see cref="TrainerStateFile"/>); the errors name that file's fields.
/// </summary>
public sealed record TrainerState(int Step, int Epoch, int BatchInEpoch, List<float> Losses, List<ValidationPoint>? ValidationLosses = null)
{
    /// <summary>The model's seed counters (<see cref="SeedSequence.State"/>), so dropout resumes where it stopped.</summary>
    public ulong[]? RandomState { get; init; }
    /// <summary>The options the run was started with.</summary>
    public RunOptions? Options { get; init; }

    /// <summary>
    /// Refuses a state that cannot be the one a run wrote: every field is checked against its range and against the others,
    /// so a resume never starts from a position that does not exist. <paramref name="path"/> names the file in the error.
    /// </summary>
    public void Validate(string path, int batchesPerEpoch, int randomStateLength)
    {
        string Field(string name, object? value, string expected) => $"{path}: field '{name}' is {value ?? "null"}, expected {expected}.";
        if (Step < 0) throw new InvalidDataException(Field("global_step", Step, "a step ≥ 0"));
        if (Epoch < 0) throw new InvalidDataException(Field("epoch_index", Epoch, "an epoch ≥ 0"));
        if (BatchInEpoch < 0 || BatchInEpoch > batchesPerEpoch)
            throw new InvalidDataException(Field("batch_in_epoch", BatchInEpoch, $"a batch position in [0, {batchesPerEpoch}] (the data has {batchesPerEpoch} batches an epoch)"));
        if (Losses == null) throw new InvalidDataException(Field("log_history", null, $"a list of {Step} losses"));
        if (Losses.Count != Step) throw new InvalidDataException(Field("log_history", $"a list of {Losses.Count} losses", $"one loss per step done ({Step})"));
        int bad = Losses.FindIndex(l => !float.IsFinite(l));
        if (bad >= 0) throw new InvalidDataException(Field($"log_history (loss of step {bad + 1})", Losses[bad], "a finite loss"));
        foreach (var v in ValidationLosses ?? [])
            if (v == null || v.Step < 1 || v.Step > Step || !float.IsFinite(v.Loss))
                throw new InvalidDataException(Field("log_history (eval_loss)", v, $"points with steps in [1, {Step}] and finite losses"));
        if (RandomState == null || RandomState.Length != randomStateLength)
            throw new InvalidDataException(Field("random_state", RandomState == null ? null : $"{RandomState.Length} numbers", $"the model's {randomStateLength} seed counters"));
        if (Options == null) throw new InvalidDataException(Field("args", null, "the run's options (lr, warm-up, batch size, seed, schedule)"));
    }
}

/// <summary>A validation loss and the step after which it was measured.</summary>
public sealed record ValidationPoint(int Step, float Loss);

/// <summary>
/// The options that decide a run's trajectory. A resume with different ones would not continue the same run, so it is
/// refused unless forced. (How often it validates or checkpoints does not change the trajectory and is not here.)
/// <c>ParameterGroups</c> is what trains, per optimizer group ("name: N values at X×" joined by "; "); checkpoints
/// written before it was recorded have none, and then it is not compared. <c>StartsFrom</c> (<see cref="TrainOptions.StartsFrom"/>)
/// likewise.
/// </summary>
public sealed record RunOptions(int Steps, float LearningRate, int WarmupSteps, bool CosineDecay, float WeightDecay, float ClipNorm,
    float LabelSmoothing, int BatchSize, ulong DataSeed, int Examples, string? ParameterGroups = null,
    [property: System.Text.Json.Serialization.JsonIgnore(Condition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull)] string? StartsFrom = null)
{
    /// <summary>The trajectory-deciding options of a run with these settings on these batches, training these groups.</summary>
    public static RunOptions Of(TrainOptions o, BatchLoader train, IReadOnlyList<Nanolora.Autograd.ParameterGroup>? groups = null) =>
        new(o.Steps, o.LearningRate, o.WarmupSteps, o.CosineDecay, o.WeightDecay, o.ClipNorm, o.LabelSmoothing, train.BatchSize, train.Seed, train.Count,
            groups == null ? null : string.Join("; ", groups.Select(g => $"{g.Name}: {g.Parameters.Sum(p => (long)p.Data.Length):N0} values at {g.LearningRateScale:G}×")),
            o.StartsFrom);

    /// <summary>"name: checkpoint A, now B" for each option that differs.</summary>
    public IReadOnlyList<string> Differences(RunOptions now)
    {
        var list = new List<string>();
        void Compare<T>(string name, T saved, T current)
        {
            if (!EqualityComparer<T>.Default.Equals(saved, current)) list.Add($"{name}: checkpoint {saved}, now {current}");
        }
        Compare("steps", Steps, now.Steps);
        Compare("learning rate", LearningRate, now.LearningRate);
        Compare("warm-up steps", WarmupSteps, now.WarmupSteps);
        Compare("schedule", CosineDecay ? "cosine" : "linear", now.CosineDecay ? "cosine" : "linear");
        Compare("weight decay", WeightDecay, now.WeightDecay);
        Compare("clip norm", ClipNorm, now.ClipNorm);
        Compare("label smoothing", LabelSmoothing, now.LabelSmoothing);
        Compare("batch size", BatchSize, now.BatchSize);
        Compare("data seed", DataSeed, now.DataSeed);
        Compare("training examples", Examples, now.Examples);
        if (ParameterGroups != null && now.ParameterGroups != null) Compare("trained parameters", ParameterGroups, now.ParameterGroups);
        if (StartsFrom != null && now.StartsFrom != null) Compare("starts from", StartsFrom, now.StartsFrom);
        return list;
    }
}
