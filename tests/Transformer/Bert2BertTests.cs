using Nanolora.Tensors;
using Nanolora.Transformer;
using Xunit;

namespace Nanolora.Tests.Transformer;

/// <summary>The seq2seq model warm-started from all-MiniLM-L6-v2 and its WordPiece seq2seq tokenizer.</summary>
public sealed class Bert2BertTests
{
    static readonly Device Cpu = Device.Get("cpu");
    const string Text = "Command-line tool to convert PNG images to PDF (version 2.0), with $HOME support.";

    [Fact]
    public void EncoderComputesExactlyWhatMiniLmComputes()
    {
        var (model, tokenizer) = Bert2Bert.FromMiniLm(decoderLayers: 1, device: Cpu);
        var (bert, bertTokenizer) = PretrainedBert.LoadMiniLm(Cpu);
        using (model) using (bert)
        {
            model.Eval(); bert.Eval();
            var compact = tokenizer.EncodeSource(Text, 64);
            var bertIds = bertTokenizer.Encode(Text, 64);
            Assert.Equal(bertIds, compact.Select(tokenizer.BertIdOf).ToArray());
            var (memory, mask) = model.Encode(compact, 1, compact.Length);
            using (mask)
            {
                var ours = memory.Data.ToArray();
                var theirs = bert.Forward(EncoderBatch.Pad([bertIds], multiple: 1)).Data.ToArray();
                Assert.Equal(theirs.Length, ours.Length);
                double worst = theirs.Zip(ours, (a, b) => Math.Abs(a - b)).Max();
                Assert.True(worst < 1e-4, $"max |Δ| {worst}");
            }
        }
    }

    [Fact]
    public void SpecialsAreSwappedIntoTheSeq2SeqIdsAndTextRoundTrips()
    {
        var (model, tokenizer) = Bert2Bert.FromMiniLm(decoderLayers: 1, device: Cpu);
        model.Dispose();
        Assert.Equal(0, tokenizer.BertIdOf(SubwordTokenizer.Pad));
        Assert.Equal(tokenizer.Bert.ClsId, tokenizer.BertIdOf(SubwordTokenizer.Bos));
        Assert.Equal(tokenizer.Bert.SepId, tokenizer.BertIdOf(SubwordTokenizer.Eos));
        Assert.Equal(100, tokenizer.BertIdOf(SubwordTokenizer.Unk));
        Assert.Equal(3, tokenizer.BertIdOf(100));   // [unused2] moves to [UNK]'s old place
        Assert.Equal(1, tokenizer.BertIdOf(101));   // [unused0] to [CLS]'s
        var source = tokenizer.EncodeSource(Text, 12);
        Assert.Equal(12, source.Length);
        Assert.Equal(SubwordTokenizer.Bos, source[0]);
        Assert.Equal(SubwordTokenizer.Eos, source[^1]);
        var target = tokenizer.EncodeTarget(Text, 100);
        Assert.DoesNotContain(SubwordTokenizer.Eos, target);
        Assert.Equal("command-line tool to convert png images to pdf (version 2.0), with $ home support.", tokenizer.Decode(target));
        Assert.Equal("command-line", tokenizer.Decode([.. target.Take(3), SubwordTokenizer.Eos, .. target]));
        Assert.Equal(3, tokenizer.EncodeTarget(Text, 3).Length);
    }

    [Fact]
    public void CheckpointStoresOnlyWhatDiffersFromMiniLmAndLoadsBackTheSameModel()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"nanolora-b2b-{Guid.NewGuid():N}");
        try
        {
            var (model, tokenizer) = Bert2Bert.FromMiniLm(decoderLayers: 2, seed: 7, device: Cpu);
            using (model)
            {
                Checkpoint.Save(dir, model, tokenizer);
                var stored = Safetensors.Read(Path.Combine(dir, Checkpoint.WeightsFile)).Entries.Select(e => e.Name).ToHashSet();
                // Untrained: only what MiniLM does not supply is stored (cross-attention and the logits bias).
                Assert.Contains("decoder.layers.1.cross_attn.q_proj.weight", stored);
                Assert.Contains("logits_bias", stored);
                Assert.DoesNotContain(stored, n => n.StartsWith("encoder.") || n == "shared.weight" || n.Contains(".self_attn."));
                var (loaded, loadedTokenizer) = Checkpoint.Load(dir, Cpu);
                using (loaded)
                {
                    Assert.IsType<WordPieceSeq2SeqTokenizer>(loadedTokenizer);
                    var before = model.NamedParameters().ToDictionary(p => p.Name, p => p.Parameter.Data.ToArray());
                    foreach (var (name, p) in loaded.NamedParameters()) Assert.Equal(before[name], p.Data.ToArray());
                }
                // A changed encoder weight is stored, in F16 when asked (and read back rounded to F16).
                var q = model.NamedParameters().First(p => p.Name == "encoder.layers.0.self_attn.q_proj.weight").Parameter;
                var w = q.Data.ToArray(); w[0] += 0.5f; q.Data.CopyFrom(w);
                var halfDir = dir + "-half";
                Checkpoint.Save(halfDir, model, tokenizer, halfPrecision: true);
                var file = Safetensors.Read(Path.Combine(halfDir, Checkpoint.WeightsFile));
                Assert.All(file.Entries, e => Assert.Equal("F16", e.DType));
                Assert.Equal((float)(Half)w[0], file.ReadFloats("encoder.layers.0.self_attn.q_proj.weight")[0]);
                Directory.Delete(halfDir, true);
            }
        }
        finally { if (Directory.Exists(dir)) Directory.Delete(dir, true); }
    }
}
