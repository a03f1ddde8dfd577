using Nanolora.Autograd;
using Nanolora.Cli;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>The BERT2BERT base's pretraining with the encoder trained through adapters, and its low-rank shipped form.</summary>
public sealed class Bert2BertPretrainingTests
{
    static readonly Device Cpu = Device.Get("cpu");

    static Bert2BertPretrainOptions Options(int? stopAfter = null, bool resume = false) => new()
    {
        // A large rate, so that two steps move the encoder far more than F16 rounding does.
        DecoderLayers = 1, Steps = 2, BatchSize = 2, GapExamples = 8, ManpageRepeats = 0, EncoderRank = 4, CheckpointEvery = 1, LearningRate = 1e-2f,
        StopAfterStep = stopAfter, Resume = resume,
    };

    internal static float[] Logits(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer)
    {
        model.Eval();
        using var noGrad = Graph.NoGrad();
        var source = tokenizer.EncodeSource("Command-line tool to convert PNG images to PDF, with libpng support.", 32);
        int[] target = [SubwordTokenizer.Bos, .. tokenizer.EncodeTarget("tool to convert images", 16)];
        var (memory, mask) = model.Encode(source, 1, source.Length);
        using (mask) return model.Logits(model.Decode(target, 1, target.Length, memory, mask)).Data.ToArray();
    }

    static float[] EncoderOutput(Seq2SeqTransformer model, ISeq2SeqTokenizer tokenizer)
    {
        model.Eval();
        using var noGrad = Graph.NoGrad();
        var source = tokenizer.EncodeSource("Command-line tool to convert PNG images to PDF, with libpng support.", 32);
        var (memory, mask) = model.Encode(source, 1, source.Length);
        using (mask) return memory.Data.ToArray();
    }

    internal static double WorstDifference(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        return a.Zip(b, (x, y) => Math.Abs((double)x - y)).Max();
    }

    [Fact]
    public void EncoderAdaptersResumeExactlyAndShipAsALowRankChangeThatLoadsAsAPlainModel()
    {
        var root = Directory.CreateTempSubdirectory("nanolora-b2b-encoder-").FullName;
        try
        {
            string straight = Path.Combine(root, "straight"), chunked = Path.Combine(root, "chunked"), ship = Path.Combine(root, "ship");
            var whole = Bert2BertPretraining.Run(Options(), Cpu, straight);
            Assert.NotNull(whole.EncoderDelta);
            // Only adapters, LayerNorms and biases train on the encoder side; its weights and the embeddings stay MiniLM's.
            var trainable = whole.Model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList();
            Assert.Contains("encoder.layers.0.ffn.fc1.delta.lora_A", trainable);
            Assert.Contains("encoder.layers.5.self_attn_norm.weight", trainable);
            Assert.DoesNotContain(trainable, n => n.EndsWith("base_layer.weight") || n == "shared.weight");
            var reference = Logits(whole.Model, whole.Tokenizer);
            var encoded = EncoderOutput(whole.Model, whole.Tokenizer);
            var (miniLm, _) = Bert2Bert.FromMiniLm(decoderLayers: 1, device: Cpu);
            using (miniLm) Assert.True(WorstDifference(encoded, EncoderOutput(miniLm, whole.Tokenizer)) > 0.5, "the encoder barely moved: the test could not tell a dropped change");

            // Stopped after step 1 and resumed: the run checkpoints its adapters under their own names and continues bit for bit.
            Bert2BertPretraining.Run(Options(stopAfter: 1), Cpu, chunked).Model.Dispose();
            var resumed = Bert2BertPretraining.Run(Options(resume: true), Cpu, chunked);
            Assert.Equal(whole.Result.Losses, resumed.Result.Losses);
            Assert.Equal(reference, Logits(resumed.Model, resumed.Tokenizer));

            // A resume that would train other parameters, or at another rate, is refused by name.
            var another = Assert.Throws<InvalidOperationException>(() => Bert2BertPretraining.Run(Options(resume: true) with { EncoderLearningRateScale = 2f, Steps = 3 }, Cpu, chunked));
            Assert.Contains("trained parameters", another.Message);
            Assert.Contains("encoder", another.Message);

            Bert2BertPretraining.Finish(resumed, chunked, ship);
            resumed.Model.Dispose();
            whole.Model.Dispose();
            var shipped = Safetensors.Read(Path.Combine(ship, Checkpoint.WeightsFile));
            var names = shipped.Entries.Select(e => e.Name).ToHashSet();
            Assert.Contains("encoder.layers.3.ffn.fc2.weight" + Bert2Bert.DeltaUp, names);
            Assert.Equal([384, 4], shipped.Entries.First(e => e.Name == "encoder.layers.3.self_attn.v_proj.weight" + Bert2Bert.DeltaUp).Shape);
            Assert.Contains("encoder.layers.3.ffn.fc2.bias", names);
            Assert.DoesNotContain(names, n => n.EndsWith("proj.weight") && n.StartsWith("encoder.") || n.Contains("lora_") || n.Contains("base_layer"));

            // The run folder (F32) and the shipped base (F16) load as plain models computing what the trained one did.
            foreach (var (dir, tolerance) in new[] { (chunked, 1e-4), (ship, 0.05) })
            {
                var (model, tokenizer) = Checkpoint.Load(dir, Cpu);
                using (model)
                {
                    Assert.DoesNotContain(model.NamedParameters(), p => p.Name.Contains("lora_"));
                    double worst = WorstDifference(reference, Logits(model, tokenizer));
                    Assert.True(worst < tolerance, $"{dir}: max |Δ logit| {worst}");
                    worst = WorstDifference(encoded, EncoderOutput(model, tokenizer));
                    Assert.True(worst < tolerance, $"{dir}: max |Δ encoder output| {worst}");
                }
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void AFullyTrainedEncoderMovesItsWeightsNotTheEmbeddingsAndShipsWhole()
    {
        var root = Directory.CreateTempSubdirectory("nanolora-b2b-encoder-full-").FullName;
        try
        {
            string run = Path.Combine(root, "run"), ship = Path.Combine(root, "ship");
            var both = Assert.Throws<ArgumentException>(() => Bert2BertPretraining.Run(Options() with { EncoderFull = true }, Cpu, run));
            Assert.Contains("--encoder-rank 4", both.Message);
            Assert.Contains("--encoder-full", both.Message);
            var trained = Bert2BertPretraining.Run(Options() with { EncoderRank = 0, EncoderFull = true, LearningRate = 1e-3f }, Cpu, run);
            using (trained.Model)
            {
                Assert.Null(trained.EncoderDelta);
                var trainable = trained.Model.NamedParameters().Where(p => p.Parameter.Trainable).Select(p => p.Name).ToList();
                Assert.Contains("encoder.layers.0.ffn.fc1.weight", trainable);
                Assert.Contains("encoder.layers.5.self_attn.q_proj.weight", trainable);
                Assert.DoesNotContain(trainable, n => n == "shared.weight" || n.StartsWith("encoder.") && !n.StartsWith("encoder.layers."));
                var reference = Logits(trained.Model, trained.Tokenizer);
                var encoded = EncoderOutput(trained.Model, trained.Tokenizer);
                var (miniLm, _) = Bert2Bert.FromMiniLm(decoderLayers: 1, device: Cpu);
                using (miniLm) Assert.True(WorstDifference(encoded, EncoderOutput(miniLm, trained.Tokenizer)) > 0.05, "the encoder barely moved");
                Bert2BertPretraining.Finish(trained, run, ship);
                var names = Safetensors.Read(Path.Combine(ship, Checkpoint.WeightsFile)).Entries.Select(e => e.Name).ToHashSet();
                Assert.Contains("encoder.layers.3.ffn.fc2.weight", names);   // the whole changed weight, not a low-rank product
                Assert.DoesNotContain(names, n => n.EndsWith(Bert2Bert.DeltaUp) || n == "shared.weight");
                foreach (var (dir, tolerance) in new[] { (run, 1e-4), (ship, 0.05) })
                {
                    var (model, tokenizer) = Checkpoint.Load(dir, Cpu);
                    using (model) Assert.True(WorstDifference(reference, Logits(model, tokenizer)) < tolerance, $"{dir}: the loaded base computes something else");
                }
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void ALowRankChangeIsCheckedWhenWrittenAndWhenRead()
    {
        var dir = Directory.CreateTempSubdirectory("nanolora-b2b-delta-").FullName;
        try
        {
            var (model, tokenizer) = Bert2Bert.FromMiniLm(decoderLayers: 1, seed: 3, device: Cpu);
            using (model)
            {
                const string name = "encoder.layers.1.self_attn.k_proj.weight";
                var w = model.NamedParameters().First(p => p.Name == name).Parameter;
                var original = w.Data.ToArray();
                var rng = new Random(5);
                float[] up = Enumerable.Range(0, 384 * 2).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
                float[] down = Enumerable.Range(0, 2 * 384).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
                // A change that does not rebuild the weight is refused.
                var delta = new Dictionary<string, LowRankDelta> { [name] = new(up, down, 2) };
                var refused = Assert.Throws<ArgumentException>(() => Checkpoint.Save(dir, model, tokenizer, lowRank: delta));
                Assert.Contains(name, refused.Message);

                // Made by it, the weight is written as the two factors and read back as MiniLM's plus their product.
                var changed = (float[])original.Clone();
                for (int o = 0; o < 384; o++)
                    for (int i = 0; i < 384; i++)
                        changed[o * 384 + i] += (float)(up[o * 2] * (double)down[i] + up[o * 2 + 1] * (double)down[384 + i]);
                w.Data.CopyFrom(changed);
                Checkpoint.Save(dir, model, tokenizer, lowRank: delta);
                var file = Safetensors.Read(Path.Combine(dir, Checkpoint.WeightsFile));
                Assert.DoesNotContain(file.Entries, e => e.Name == name);
                var (loaded, _) = Checkpoint.Load(dir, Cpu);
                using (loaded) Assert.True(WorstDifference(changed, loaded.NamedParameters().First(p => p.Name == name).Parameter.Data.ToArray()) < 1e-5);

                // A factor without its partner is named.
                var all = file.Entries.Select(e => (e.Name, e.Shape, Data: file.ReadFloats(e.Name))).ToList();
                var entries = all.Where(e => e.Name != name + Bert2Bert.DeltaDown).ToList();
                Safetensors.Write(Path.Combine(dir, Checkpoint.WeightsFile), entries, file.Metadata);
                var lone = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir, Cpu));
                Assert.Contains($"'{name}{Bert2Bert.DeltaUp}' has no partner", lone.Message);

                // A weight stored both in full and as a change is ambiguous.
                var both = all.Append((name, new[] { 384, 384 }, changed)).ToList();
                Safetensors.Write(Path.Combine(dir, Checkpoint.WeightsFile), both, file.Metadata);
                var twice = Assert.Throws<InvalidDataException>(() => Checkpoint.Load(dir, Cpu));
                Assert.Contains($"'{name}' is stored both in full and as a change", twice.Message);

                // Factors that do not fit the weight are refused before anything is written.
                var misfit = new Dictionary<string, LowRankDelta> { [name] = new(up, down[..384], 2) };
                Assert.Contains("expected 384·r and r·384", Assert.Throws<ArgumentException>(() => Checkpoint.Save(dir + "-misfit", model, tokenizer, lowRank: misfit)).Message);
            }
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
