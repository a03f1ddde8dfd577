using System.Text.Json.Nodes;
using Nanolora.Tensors;
using Nanolora.Tests.Faults;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>The file names Hugging Face users know: trainer_state.json in Trainer's layout, config.json beside the weights.</summary>
public class CheckpointFilesTests
{
    static readonly Lazy<string> Run = new(() =>
    {
        var dir = TinyRun.NewDirectory();
        TinyRun.Train(TinyRun.Options(dir, steps: 8) with { ValidateEvery = 4, ValidationBatches = 1 }, validation: TinyRun.Loader());
        return dir;
    });

    [Fact]
    public void TrainerStateHasHuggingFaceTrainersLayout()
    {
        var root = JsonNode.Parse(File.ReadAllText(Path.Combine(Run.Value, Checkpoint.StateFile)))!.AsObject();
        Assert.Equal(8, (int)root["global_step"]!);
        Assert.Equal(8, (int)root["max_steps"]!);
        Assert.Equal(4, (int)root["train_batch_size"]!);
        Assert.Equal(8.0 / 6, (double)root["epoch"]!, 6);   // 6 batches an epoch: 1⅓ epochs done
        var history = root["log_history"]!.AsArray();
        var losses = history.Where(e => e!["loss"] != null).ToList();
        Assert.Equal(Enumerable.Range(1, 8), losses.Select(e => (int)e!["step"]!));
        Assert.Equal(0.5, (double)losses[2]!["epoch"]!, 6);
        Assert.Equal([4, 8], history.Where(e => e!["eval_loss"] != null).Select(e => (int)e!["step"]!));
        var attributes = root["stateful_callbacks"]![TrainerStateFile.CallbackName]!["attributes"]!;
        Assert.Equal((1, 2), ((int)attributes["epoch_index"]!, (int)attributes["batch_in_epoch"]!));
        Assert.Equal(3e-3f, (float)root["stateful_callbacks"]![TrainerStateFile.CallbackName]!["args"]!["learning_rate"]!);
        // Every name is snake_case, as Trainer writes them.
        static IEnumerable<string> Names(JsonNode? n) => n switch
        {
            JsonObject o => o.SelectMany(p => new[] { p.Key }.Concat(Names(p.Value))),
            JsonArray a => a.SelectMany(Names),
            _ => [],
        };
        Assert.All(Names(root).Where(n => n != TrainerStateFile.CallbackName), n => Assert.Equal(n.ToLowerInvariant(), n));
    }

    [Fact]
    public void TrainerStateRoundTripsAndTheOldLayoutStillReads()
    {
        var path = Path.Combine(TrainingCheckpoint.StepDirectory(Run.Value, 8), Checkpoint.StateFile);
        var state = TrainerStateFile.Read(path);
        var again = Path.Combine(TinyRun.NewDirectory(), Checkpoint.StateFile);
        File.WriteAllText(again, TrainerStateFile.Serialize(state));
        var back = TrainerStateFile.Read(again);
        Assert.Equal((state.Step, state.Epoch, state.BatchInEpoch, state.Options), (back.Step, back.Epoch, back.BatchInEpoch, back.Options));
        Assert.Equal(state.Losses, back.Losses);
        Assert.Equal(state.ValidationLosses, back.ValidationLosses);
        Assert.Equal(state.RandomState, back.RandomState);

        // The shipped base's file predates the layout (PascalCase Step/Losses): it reads as it did.
        var shipped = TrainerStateFile.Read(Path.Combine(Nanolora.Tests.Cli.CliTests.ShippedBase(), Checkpoint.StateFile));
        Assert.Equal(3000, shipped.Step);
        Assert.Equal(3000, shipped.Losses.Count);
    }

    [Fact]
    public void ConfigJsonSitsBesideTheWeightsAndMustAgreeWithThem()
    {
        var dir = Run.Value;
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, Checkpoint.ConfigFile)))!.AsObject();
        Assert.Equal(CheckpointConfig.ModelType, (string)config["model_type"]!);
        Assert.Equal(16, (int)config["d_model"]!);
        Assert.Equal(TinyRun.Config(), Checkpoint.ReadConfig(dir));

        var copy = TinyRun.NewDirectory();
        foreach (var f in new[] { Checkpoint.WeightsFile, Checkpoint.TokenizerFile, Checkpoint.ConfigFile }) File.Copy(Path.Combine(dir, f), Path.Combine(copy, f));
        config["d_ff"] = 64;
        File.WriteAllText(Path.Combine(copy, Checkpoint.ConfigFile), config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.ReadConfig(copy));
        Assert.Contains("disagree", e.Message);

        // A checkpoint from before config.json (PascalCase metadata only) loads as before.
        var (model, _) = Checkpoint.Load(Nanolora.Tests.Cli.CliTests.ShippedBase(), Device.Cpu);
        using (model) Assert.Equal(128, model.Config.DModel);
    }
}
