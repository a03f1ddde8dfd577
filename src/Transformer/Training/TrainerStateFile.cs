using System.Text.Json;
using System.Text.Json.Nodes;

namespace Nanolora.Transformer;

/// <summary>
/// trainer_state.json in Hugging Face Trainer's layout, so that its tools read it: <c>global_step</c>, <c>max_steps</c>,
/// <c>epoch</c> (fractional), <c>num_train_epochs</c>, <c>train_batch_size</c>, <c>logging_steps</c>, and <c>log_history</c>
/// with one <c>{"epoch", "loss", "step"}</c> entry per step and an <c>{"epoch", "eval_loss", "step"}</c> entry per
/// validation. What a bit-exact resume needs beyond that (the data position, the dropout seed counters, the options that
/// fix the trajectory) sits where Trainer keeps callback state, under
/// <c>stateful_callbacks.NanoloraTrainer</c> (<c>args</c>: the options; <c>attributes</c>: epoch_index, batch_in_epoch,
/// random_state), so <c>TrainerState.load_from_json</c> accepts the file. Files written before (PascalCase <c>Step</c>,
/// <c>Losses</c>, …) still read.
/// </summary>
public static class TrainerStateFile
{
    /// <summary>The key of Nanolora's resume state under <c>stateful_callbacks</c>.</summary>
    public const string CallbackName = "NanoloraTrainer";

    static readonly JsonSerializerOptions Snake = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower };

    /// <summary>The state as Hugging Face Trainer's trainer_state.json, indented.</summary>
    public static string Serialize(TrainerState state)
    {
        int perEpoch = state.Options is { } o ? Math.Max(1, (o.Examples + o.BatchSize - 1) / o.BatchSize) : 0;
        double EpochAt(int step) => perEpoch == 0 ? state.Epoch : Math.Round((double)step / perEpoch, 6);
        var history = new JsonArray();
        var validation = (state.ValidationLosses ?? []).ToLookup(v => v.Step);
        for (int i = 0; i < state.Losses.Count; i++)
        {
            int step = i + 1;
            history.Add(new JsonObject { ["epoch"] = EpochAt(step), ["loss"] = state.Losses[i], ["step"] = step });
            foreach (var v in validation[step]) history.Add(new JsonObject { ["epoch"] = EpochAt(step), ["eval_loss"] = v.Loss, ["step"] = step });
        }
        var root = new JsonObject
        {
            ["global_step"] = state.Step,
            ["max_steps"] = state.Options?.Steps,
            ["epoch"] = perEpoch == 0 ? state.Epoch : state.Epoch + (double)state.BatchInEpoch / perEpoch,
            ["num_train_epochs"] = state.Options is { } run && perEpoch > 0 ? (run.Steps + perEpoch - 1) / perEpoch : null,
            ["train_batch_size"] = state.Options?.BatchSize,
            ["logging_steps"] = 1,
            ["log_history"] = history,
            ["stateful_callbacks"] = new JsonObject
            {
                [CallbackName] = new JsonObject
                {
                    ["args"] = state.Options == null ? null : JsonSerializer.SerializeToNode(state.Options, Snake),
                    ["attributes"] = new JsonObject
                    {
                        ["epoch_index"] = state.Epoch,
                        ["batch_in_epoch"] = state.BatchInEpoch,
                        ["random_state"] = state.RandomState == null ? null : new JsonArray(state.RandomState.Select(x => (JsonNode)JsonValue.Create(x)).ToArray()),
                    },
                },
            },
        };
        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>
    /// Reads either layout. A field of the wrong type is refused naming the file and the field; the ranges and the
    /// consistency of the values are <see cref="TrainerState.Validate"/>'s to check.
    /// </summary>
    public static TrainerState Read(string path)
    {
        string text = File.ReadAllText(path);
        JsonNode? root;
        try { root = JsonNode.Parse(text); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: does not parse as a trainer state ({e.Message})"); }
        if (root == null) throw new InvalidDataException($"{path}: is null, expected a trainer state object.");
        if (root is not JsonObject obj) throw new InvalidDataException($"{path}: is {root.GetValueKind()}, expected a trainer state object.");
        if (!obj.ContainsKey("global_step")) return ReadLegacy(path, text);

        string Field(string name, JsonNode? value, string expected) => $"{path}: field '{name}' is {value?.ToJsonString() ?? "null"}, expected {expected}.";
        T Get<T>(JsonNode? parent, string name, string expected)
        {
            var node = parent?[name];
            try { return node == null ? throw new InvalidDataException(Field(name, null, expected)) : node.GetValue<T>(); }
            catch (Exception e) when (e is InvalidOperationException or FormatException) { throw new InvalidDataException(Field(name, node, expected)); }
        }
        int step = Get<int>(obj, "global_step", "an integer step");
        if (obj["log_history"] is not JsonArray history) throw new InvalidDataException(Field("log_history", obj["log_history"], "a list of logged steps"));
        var losses = new List<float>();
        var validation = new List<ValidationPoint>();
        foreach (var entry in history)
        {
            if (entry is not JsonObject e) throw new InvalidDataException(Field("log_history[]", entry, "objects with step and loss or eval_loss"));
            int at = Get<int>(e, "step", "an integer step");
            if (e.ContainsKey("loss"))
            {
                if (at != losses.Count + 1) throw new InvalidDataException(Field("log_history[].step", e["step"], $"{losses.Count + 1}: one loss per step, in order"));
                losses.Add(Get<float>(e, "loss", "a number"));
            }
            if (e.ContainsKey("eval_loss")) validation.Add(new ValidationPoint(at, Get<float>(e, "eval_loss", "a number")));
        }
        var callback = obj["stateful_callbacks"]?[CallbackName];
        if (callback is not JsonObject) throw new InvalidDataException(Field($"stateful_callbacks.{CallbackName}", callback, "Nanolora's resume state (args, attributes)"));
        var attributes = callback["attributes"];
        int epoch = Get<int>(attributes, "epoch_index", "an integer epoch");
        int batch = Get<int>(attributes, "batch_in_epoch", "an integer batch position");
        ulong[]? random = attributes?["random_state"] is JsonArray r ? r.Select(x => Get<ulong>(new JsonObject { ["v"] = x?.DeepClone() }, "v", "an unsigned integer")).ToArray() : null;
        RunOptions? options;
        try { options = callback["args"]?.Deserialize<RunOptions>(Snake); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: field 'args' does not parse as the run's options ({e.Message})"); }
        return new TrainerState(step, epoch, batch, losses, validation) { RandomState = random, Options = options };
    }

    static TrainerState ReadLegacy(string path, string text)
    {
        try { return JsonSerializer.Deserialize<TrainerState>(text) ?? throw new InvalidDataException($"{path}: is null, expected a trainer state object."); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: does not parse as a trainer state ({e.Message})"); }
    }
}
