using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Faults;

/// <summary>NaN/Inf weights are neither written nor loaded, and a loss far above its recent mean stops the run.</summary>
public class NonFiniteTests
{
    [Fact]
    public void ScanFindsTheFirstNonFiniteValueInTheVectorBodyAndTheTail()
    {
        foreach (int length in new[] { 1, 7, 33, 1000 })
        {
            var data = Enumerable.Range(0, length).Select(i => i * 0.5f - 3f).ToArray();
            Assert.Equal(-1, NonFinite.FirstIndex(data));
            foreach (int at in new[] { 0, length / 2, length - 1 })
                foreach (float bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
                {
                    var copy = (float[])data.Clone();
                    copy[at] = bad;
                    if (at + 1 < length) copy[length - 1] = float.NaN; // a later one must not be reported instead
                    Assert.True(NonFinite.FirstIndex(copy) == at, $"length {length}, {bad} at {at}: found {NonFinite.FirstIndex(copy)}");
                }
        }
        Assert.Equal(-1, NonFinite.FirstIndex([float.MaxValue, float.MinValue, float.Epsilon]));
    }

    [Fact]
    public void NonFiniteWeightsAreRefusedOnSaveAndOnLoadNamingTheTensor()
    {
        var dir = TinyRun.NewDirectory();
        var file = Path.Combine(dir, Checkpoint.WeightsFile);
        using var model = new Seq2SeqTransformer(TinyRun.Config(), Device.Cpu);
        var (name, p) = model.NamedParameters().Last();
        var original = p.Data.ToArray();
        var poisoned = (float[])original.Clone();
        poisoned[1] = float.NaN;
        p.Data.CopyFrom(poisoned);
        var e = Assert.Throws<InvalidDataException>(() => Checkpoint.SaveWeights(model, file));
        Assert.Contains(name, e.Message);
        Assert.False(File.Exists(file), "nothing is written");

        // A file with an Inf (written behind our back) is refused at load, and the model keeps its weights.
        Safetensors.Write(file, model.NamedParameters().Select(n => (n.Name, n.Parameter.Data.ShapeArray(),
            n.Name == name ? original.Select((v, i) => i == 2 ? float.NegativeInfinity : v).ToArray() : n.Parameter.Data.ToArray())));
        p.Data.CopyFrom(original);
        e = Assert.Throws<InvalidDataException>(() => Checkpoint.LoadWeights(model, file));
        Assert.Contains($"tensor '{name}' holds -Inf at element 2", e.Message);
        Assert.Equal(original, p.Data.ToArray());
    }

    [Fact]
    public void ALossFarAboveTheRecentMeanIsASpike()
    {
        var steady = Enumerable.Repeat(2f, 20).ToList();
        Assert.Null(Trainer.SpikeOf(30f, steady, 20f, 20));
        Assert.Contains("× the mean 2 of the previous 20 steps", Trainer.SpikeOf(3.5e13f, steady, 20f, 20));
        Assert.Null(Trainer.SpikeOf(3.5e13f, steady, 0f, 20));          // 0: off
        Assert.Null(Trainer.SpikeOf(3.5e13f, steady.Take(5).ToList(), 20f, 20)); // too little history to judge
    }

    [Fact]
    public void TrainingStopsOnASpikeBeforeCheckpointingIt()
    {
        // A learning rate of 3 without clipping diverges; a 1.05× limit over a 1-step window catches the first rise.
        var dir = TinyRun.NewDirectory();
        var e = Assert.Throws<InvalidOperationException>(() => TinyRun.Train(TinyRun.Options(dir, steps: 40) with
            { LearningRate = 3f, ClipNorm = 0, WarmupSteps = 0, MaxLossRatio = 1.05f, LossWindow = 1, CheckpointEvery = 1 }));
        Assert.Contains("jumped", e.Message);
        int step = int.Parse(System.Text.RegularExpressions.Regex.Match(e.Message, @"at step (\d+)").Groups[1].Value);
        Assert.Equal(step - 1, TrainingCheckpoint.FindLatest(dir).Step); // the step before the spike is the last checkpoint
    }
}

/// <summary>An adapter with a NaN weight is refused at load, naming the tensor, and the model is left without it.</summary>
public class NonFiniteAdapterTests
{
    [Fact]
    public void NaNAdapterWeightsAreRefusedNamingTheTensor()
    {
        using var m = new Seq2SeqTransformer(TinyRun.Config(), Device.Cpu);
        var lora = Nanolora.Lora.LoraModel.Inject(m, new Nanolora.Lora.LoraConfig { R = 2, Alpha = 4, TargetModules = ["q_proj"] }, "task");
        var (path, weights) = lora.AdapterWeights("task").First();
        var values = weights.B.Data.ToArray();
        values[0] = float.NaN;
        weights.B.Data.CopyFrom(values);
        var dir = TinyRun.NewDirectory();
        // Saving refuses it, naming the tensor, and writes nothing.
        var saving = Assert.Throws<InvalidDataException>(() => Nanolora.Lora.AdapterFiles.Save(lora, "task", dir));
        Assert.Contains($"{path}.lora_B.weight' holds NaN", saving.Message);
        Assert.False(File.Exists(Path.Combine(dir, Nanolora.Lora.AdapterFiles.WeightsFile)));
        // A NaN file made elsewhere is refused on load, and the model is left without it.
        values[0] = 0f;
        weights.B.Data.CopyFrom(values);
        Nanolora.Lora.AdapterFiles.Save(lora, "task", dir);
        var file = Safetensors.Read(Path.Combine(dir, Nanolora.Lora.AdapterFiles.WeightsFile));
        var tensors = file.Entries.Select(t => (t.Name, t.Shape.ToArray(), Data: file.ReadFloats(t.Name))).ToList();
        tensors.First(t => t.Name.EndsWith($"{path}.lora_B.weight")).Data[0] = float.NaN;
        Safetensors.Write(Path.Combine(dir, Nanolora.Lora.AdapterFiles.WeightsFile), tensors, file.Metadata);
        var e = Assert.Throws<InvalidDataException>(() => Nanolora.Lora.AdapterFiles.Load(lora, dir, "loaded"));
        Assert.Contains($"{path}.lora_B.weight' holds NaN", e.Message);
        Assert.False(lora.Adapters.ContainsKey("loaded"), "the refused adapter was not added");
    }
}
