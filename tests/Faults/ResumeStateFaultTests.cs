using System.Text.Json.Nodes;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Faults;

/// <summary>
/// A corrupted resume state is refused with the file and the field, never resumed or restarted. The manifest's hashes
/// catch any edit first; these tests restore from the edited folder directly to reach the field checks behind them.
/// </summary>
public class ResumeStateFaultTests
{
    static readonly Lazy<string> Stopped = new(() =>
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, stopAfter: 4));
        return TrainingCheckpoint.StepDirectory(dir, 4);
    });

    /// <summary>A copy of the step-4 checkpoint with trainer_state.json edited, restored without the hash check.</summary>
    static Exception RestoreEdited(Func<JsonNode?, JsonNode?>? editState = null, Action<string>? editFolder = null)
    {
        var dir = TinyRun.NewDirectory();
        foreach (var f in Directory.GetFiles(Stopped.Value)) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)));
        var statePath = Path.Combine(dir, Checkpoint.StateFile);
        if (editState != null) File.WriteAllText(statePath, editState(JsonNode.Parse(File.ReadAllText(statePath)))?.ToJsonString() ?? "null");
        editFolder?.Invoke(dir);
        using var model = new Seq2SeqTransformer(TinyRun.Config(), Device.Cpu);
        using var optimizer = new AdamW(model.Parameters().ToList());
        return Assert.ThrowsAny<Exception>(() => TrainingCheckpoint.Restore(new ResumePoint(dir, 4, []), model, optimizer,
            RunOptions.Of(TinyRun.Options(dir), TinyRun.Loader()), force: false, TinyRun.Loader().BatchesPerEpoch));
    }

    /// <summary>Sets a field by its dotted path (<c>stateful_callbacks.NanoloraTrainer.attributes.epoch_index</c>).</summary>
    static JsonNode Set(JsonNode? state, string path, JsonNode? value)
    {
        var parts = path.Split('.');
        var parent = parts[..^1].Aggregate(state!, (node, key) => node[key]!);
        parent[parts[^1]] = value;
        return state!;
    }

    const string Attributes = "stateful_callbacks." + TrainerStateFile.CallbackName + ".attributes.";

    [Theory]
    [InlineData(Attributes + "epoch_index", "-1", "'epoch_index' is -1")]
    [InlineData(Attributes + "batch_in_epoch", "99", "'batch_in_epoch' is 99")]
    [InlineData(Attributes + "batch_in_epoch", "-3", "'batch_in_epoch' is -3")]
    [InlineData("global_step", "-2", "'global_step' is -2")]
    [InlineData("global_step", "\"four\"", "'global_step' is \"four\", expected an integer step")]
    [InlineData("log_history", "null", "'log_history' is null")]
    [InlineData("log_history", "[{\"loss\": 1, \"step\": 1}, {\"loss\": 2, \"step\": 2}]", "'log_history' is a list of 2 losses")]
    [InlineData("log_history", "[{\"loss\": 1, \"step\": 2}]", "'log_history[].step' is 2, expected 1")]
    [InlineData(Attributes + "random_state", "null", "'random_state' is null")]
    [InlineData(Attributes + "random_state", "[1]", "'random_state' is 1 numbers")]
    [InlineData("stateful_callbacks." + TrainerStateFile.CallbackName + ".args", "null", "'args' is null")]
    [InlineData("stateful_callbacks", "{}", "'stateful_callbacks.NanoloraTrainer' is null")]
    [InlineData(Attributes + "epoch_index", "1", "do not add up")]
    public void CorruptedTrainerStateIsRefusedNamingTheField(string field, string json, string expected)
    {
        var e = RestoreEdited(s => Set(s, field, JsonNode.Parse(json)));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains(Checkpoint.StateFile, e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void NullOrInvalidTrainerStateIsRefused()
    {
        var e = RestoreEdited(_ => null);
        Assert.Contains("is null", e.Message);
        e = RestoreEdited(editFolder: d => File.WriteAllText(Path.Combine(d, Checkpoint.StateFile), "{\"global_step\": 4,"));
        Assert.IsType<InvalidDataException>(e);
        Assert.Contains("does not parse", e.Message);
    }

    [Fact]
    public void IncompleteOrInconsistentOptimizerStateIsRefused()
    {
        static void Rewrite(string dir, Func<IEnumerable<(string Name, int[] Shape, float[] Data)>, IEnumerable<(string, int[], float[])>> edit)
        {
            var path = Path.Combine(dir, Checkpoint.OptimizerFile);
            var file = Safetensors.Read(path);
            Safetensors.Write(path, edit(file.Entries.Select(e => (e.Name, e.Shape, file.ReadFloats(e.Name)))).ToList());
        }
        var e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Where(x => x.Name != "3.exp_avg_sq")));
        Assert.Contains("no '3.exp_avg_sq'", e.Message);
        Assert.Contains(Checkpoint.OptimizerFile, e.Message);
        e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Where(x => x.Name != "step")));
        Assert.Contains("no 'step'", e.Message);
        e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Select(x => x.Name == "step" ? (x.Name, x.Shape, new[] { 3f }) : x)));
        Assert.Contains("tensor 'step' is 3", e.Message);
        e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Select(x => x.Name == "step" ? (x.Name, x.Shape, new[] { -1f }) : x)));
        Assert.Contains("'step' is -1", e.Message);
        e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Append(("999.exp_avg", [1], [0f]))));
        Assert.Contains("'999.exp_avg' does not name one of the", e.Message);
        e = RestoreEdited(editFolder: d => Rewrite(d, es => es.Select(x => x.Name == "0.exp_avg" ? (x.Name, x.Shape, Enumerable.Repeat(float.NaN, x.Data.Length).ToArray()) : x)));
        Assert.Contains("'0.exp_avg' holds NaN", e.Message);
    }
}
