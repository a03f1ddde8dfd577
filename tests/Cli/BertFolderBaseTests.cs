using Nanolora.Autograd;
using Nanolora.Cli;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>
/// BERT2BERT on the BERT of a Hugging Face folder (<c>pretrain --init DIR</c>): the same warm start as on the packaged
/// all-MiniLM-L6-v2, and checkpoints that store every weight when the model is not on MiniLM itself.
/// </summary>
public sealed class BertFolderBaseTests
{
    static readonly Device Cpu = Device.Get("cpu");
    const string Text = "Command-line tool to convert PNG images to PDF, with libpng support.";

    /// <summary>
    /// A small random BERT with MiniLM's vocabulary (as bert-base-uncased has) but another shape, written as a Hugging Face
    /// folder: the case where the vocabulary alone would wrongly say "on MiniLM".
    /// </summary>
    static string SmallBertFolder(string root, ulong seed = 5)
    {
        var config = new BertConfig { HiddenSize = 32, Heads = 2, Layers = 3, IntermediateSize = 48, MaxPositions = 96, Seed = seed };
        var (_, tokenizer) = PretrainedBert.LoadMiniLm(Cpu);
        using var bert = new BertModel(config, Cpu);
        var dir = Path.Combine(root, $"small-bert-{seed}");
        PretrainedBert.SaveFolder(bert, tokenizer, dir);
        return dir;
    }

    static Bert2BertPretrainOptions Options(string init, int? stopAfter = null, bool resume = false) => new()
    {
        Init = init, DecoderLayers = 2, Steps = 2, BatchSize = 2, GapExamples = 8, ManpageRepeats = 0, EncoderRank = 4, CheckpointEvery = 1,
        LearningRate = 1e-2f, StopAfterStep = stopAfter, Resume = resume,
    };

    [Fact]
    public void MiniLmWrittenAsAFolderBuildsTheModelThePackageBuildsAndIsStoredAsChangesToIt()
    {
        var root = Directory.CreateTempSubdirectory("nanolora-bert-folder-").FullName;
        try
        {
            var (bert, bertTokenizer) = PretrainedBert.LoadMiniLm(Cpu);
            var dir = Path.Combine(root, "minilm");
            using (bert) PretrainedBert.SaveFolder(bert, bertTokenizer, dir);
            var (fromFolder, folderTokenizer) = Bert2Bert.FromBertFolder(dir, decoderLayers: 2, seed: 7, device: Cpu);
            var (fromPackage, _) = Bert2Bert.FromMiniLm(decoderLayers: 2, seed: 7, device: Cpu);
            using (fromFolder) using (fromPackage)
            {
                var expected = fromPackage.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
                Assert.Equal(expected.Keys.Order(), fromFolder.NamedParameters().Select(p => p.Name).Order());
                foreach (var (name, p) in fromFolder.NamedParameters()) Assert.True(expected[name].AsSpan().SequenceEqual(p.Data.ToArray()), name);
                Assert.True(Bert2Bert.IsOnMiniLm(fromFolder.Config, folderTokenizer));
                var saved = Path.Combine(root, "saved");
                Checkpoint.Save(saved, fromFolder, folderTokenizer);
                var file = Safetensors.Read(Path.Combine(saved, Checkpoint.WeightsFile));
                Assert.Equal(Bert2Bert.MiniLmInit, file.Metadata["init"]);
                Assert.DoesNotContain(file.Entries, e => e.Name.StartsWith("encoder.", StringComparison.Ordinal));
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [Fact]
    public void ABaseOnAnotherBertStartsAsThatBertResumesExactlyAndShipsEveryWeight()
    {
        var root = Directory.CreateTempSubdirectory("nanolora-bert-folder-").FullName;
        try
        {
            var folder = SmallBertFolder(root);

            // The warm start: the encoder computes what the folder's BertModel computes.
            var (fresh, freshTokenizer) = Bert2Bert.FromBertFolder(folder, decoderLayers: 2, device: Cpu);
            var (bert, bertTokenizer) = PretrainedBert.LoadFolder(folder, Cpu);
            using (fresh) using (bert)
            {
                Assert.Equal(32, fresh.Config.DModel);
                Assert.False(Bert2Bert.IsOnMiniLm(fresh.Config, freshTokenizer));   // MiniLM's vocabulary, not its shape
                fresh.Eval(); bert.Eval();
                using var noGrad = Graph.NoGrad();
                var compact = freshTokenizer.EncodeSource(Text, 32);
                var bertIds = bertTokenizer.Encode(Text, 32);
                Assert.Equal(bertIds, compact.Select(freshTokenizer.BertIdOf).ToArray());
                var (memory, mask) = fresh.Encode(compact, 1, compact.Length);
                using (mask)
                {
                    double worst = Bert2BertPretrainingTests.WorstDifference(bert.Forward(EncoderBatch.Pad([bertIds], multiple: 1)).Data.ToArray(), memory.Data.ToArray());
                    Assert.True(worst < 1e-4, $"max |Δ encoder output| {worst}");
                }
            }
            var tooDeep = Assert.Throws<ArgumentException>(() => Bert2Bert.FromBertFolder(folder, decoderLayers: 4, device: Cpu));
            Assert.Contains("has 3", tooDeep.Message);
            // The command refuses it in one line before it makes the run folder.
            var refusedOut = Path.Combine(root, "refused");
            var (code, _, err) = CliTests.Run("pretrain", "--init", folder, "--decoder-layers", "4", "--out", refusedOut, "--device", "cpu");
            Assert.Equal(1, code);
            Assert.Contains("--decoder-layers is 4; the BERT in", err);
            Assert.False(Directory.Exists(refusedOut));
            // So is a folder whose weights lack a tensor the model starts from (found by building it, before --out is made).
            var broken = Path.Combine(root, "broken-bert");
            Directory.CreateDirectory(broken);
            foreach (var f in new[] { "config.json", "vocab.txt" }) File.Copy(Path.Combine(folder, f), Path.Combine(broken, f));
            var whole16 = Safetensors.Read(Path.Combine(folder, "model.safetensors"));
            Safetensors.Write(Path.Combine(broken, "model.safetensors"), whole16.Entries.Where(e => e.Name != "encoder.layer.1.attention.self.key.weight")
                .Select(e => (e.Name, e.Shape, whole16.ReadFloats(e.Name))));
            (code, _, err) = CliTests.Run("pretrain", "--init", broken, "--out", refusedOut, "--device", "cpu");
            Assert.Equal(1, code);
            Assert.Contains("encoder.layer.1.attention.self.key.weight", err);
            Assert.False(Directory.Exists(refusedOut));

            // Pretrained with the encoder through adapters, stopped after step 1 and resumed: the same run to the bit.
            string straight = Path.Combine(root, "straight"), chunked = Path.Combine(root, "chunked"), ship = Path.Combine(root, "ship");
            var whole = Bert2BertPretraining.Run(Options(folder), Cpu, straight);
            var reference = Bert2BertPretrainingTests.Logits(whole.Model, whole.Tokenizer);
            whole.Model.Dispose();
            Bert2BertPretraining.Run(Options(folder, stopAfter: 1), Cpu, chunked).Model.Dispose();
            // A resume on another BERT of the same shape is refused by name, not continued on the wrong weights.
            var other = SmallBertFolder(root, seed: 6);
            var elsewhere = Assert.Throws<InvalidOperationException>(() => Bert2BertPretraining.Run(Options(other, resume: true), Cpu, chunked));
            Assert.Contains("starts from", elsewhere.Message);
            var resumed = Bert2BertPretraining.Run(Options(folder, resume: true), Cpu, chunked);
            Assert.Equal(whole.Result.Losses, resumed.Result.Losses);
            Assert.Equal(reference, Bert2BertPretrainingTests.Logits(resumed.Model, resumed.Tokenizer));

            // Finished: the adapters are merged and every weight is stored (the folder is not part of the checkpoint), in F16 when shipped.
            Bert2BertPretraining.Finish(resumed, chunked, ship);
            var expected = resumed.Model.NamedParameters().Select(p => p.Name).Order().ToList();
            resumed.Model.Dispose();
            var shipped = Safetensors.Read(Path.Combine(ship, Checkpoint.WeightsFile));
            Assert.False(shipped.Metadata.ContainsKey("init"));
            Assert.Equal(expected, shipped.Entries.Select(e => e.Name).Order());
            Assert.All(shipped.Entries, e => Assert.Equal("F16", e.DType));
            Assert.DoesNotContain(expected, n => n.Contains("lora_") || n.Contains("base_layer"));
            foreach (var (dir, tolerance) in new[] { (chunked, 1e-4), (ship, 0.05) })
            {
                var (model, tokenizer) = Checkpoint.Load(dir, Cpu);
                using (model)
                {
                    double worst = Bert2BertPretrainingTests.WorstDifference(reference, Bert2BertPretrainingTests.Logits(model, tokenizer));
                    Assert.True(worst < tolerance, $"{dir}: max |Δ logit| {worst}");
                }
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }
}
