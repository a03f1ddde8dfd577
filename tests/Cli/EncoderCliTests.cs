using System.Text.Json;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Cli;

/// <summary>embed (with and without a LoRA adapter) and convert, run in-process.</summary>
public class EncoderCliTests(MiniLmFixture mini) : IClassFixture<MiniLmFixture>
{
    static float[][] ParseLines(string output) =>
        output.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonSerializer.Deserialize<float[]>(l)!).ToArray();

    [Fact]
    public void Embed_writes_one_normalized_vector_a_line_in_input_order()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        string[] lines = ["Perl module for parsing dates", "", "a considerably longer line about the GNU C library and its many functions"];
        File.WriteAllLines(Path.Combine(dir, "in.txt"), lines);
        var (code, output, err) = CliTests.Run("embed", "--input", Path.Combine(dir, "in.txt"), "--batch-size", "2");
        Assert.True(code == 0, err);
        var vectors = ParseLines(output);
        Assert.Equal(3, vectors.Length);
        var expected = SentenceEmbedder.Embed(mini.Model, mini.Tokenizer, lines);
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(384, vectors[i].Length);
            Assert.Equal(1.0, Math.Sqrt(vectors[i].Sum(x => (double)x * x)), 5);
            for (int j = 0; j < 384; j++) Assert.True(Math.Abs(expected[i][j] - vectors[i][j]) <= 1e-6, $"line {i}, element {j}: {vectors[i][j]} vs {expected[i][j]}");
        }
        Assert.DoesNotContain("embedded", output);   // progress never reaches stdout
    }

    [Fact]
    public void Embed_refuses_bad_input_with_one_line()
    {
        var (code, _, err) = CliTests.Run("embed", "--input", "/nonexistent/sentences.txt");
        Assert.Equal(1, code);
        Assert.Contains("--input /nonexistent/sentences.txt", err);
        (code, _, err) = CliTests.Run("embed", "--input", Path.GetTempPath(), "--batch-size", "0");
        Assert.Equal(1, code);
        Assert.Contains("--batch-size", err);
        Assert.Single(err.Trim().Split('\n'));
    }

    [Fact]
    public void A_lora_adapter_trained_on_the_encoder_is_saved_in_peft_layout_and_applied_by_embed()
    {
        var dir = Directory.CreateTempSubdirectory().FullName;
        var (model, tokenizer) = PretrainedBert.LoadMiniLm(Device.Get("cpu"));
        using (model)
        {
            var lora = LoraModel.Inject(model, new LoraConfig { R = 4, Alpha = 8, TargetModules = ["query", "value"], TaskType = "FEATURE_EXTRACTION" }, "debian");
            Assert.Equal(6 * 2 * 4 * (384 + 384), model.ParameterCount(trainableOnly: true));
            var rng = new Random(3);
            foreach (var layer in lora.Layers.Values)
                foreach (var adapter in layer.Adapters.Values)
                    adapter.B.Data.CopyFrom(Enumerable.Range(0, (int)adapter.B.Data.Length).Select(_ => (float)(rng.NextDouble() - 0.5) * 0.1f).ToArray());
            AdapterFiles.Save(lora, "debian", Path.Combine(dir, "adapter"));
            var weights = Safetensors.Read(Path.Combine(dir, "adapter", AdapterFiles.WeightsFile));
            Assert.Contains(weights.Entries, e => e.Name == "base_model.model.encoder.layer.3.attention.self.query.lora_A.weight");
            string[] text = ["Python 3 bindings for the GTK toolkit"];
            var adapted = SentenceEmbedder.Embed(model, tokenizer, text)[0];
            File.WriteAllLines(Path.Combine(dir, "in.txt"), text);
            var (code, output, err) = CliTests.Run("embed", "--input", Path.Combine(dir, "in.txt"), "--adapter", Path.Combine(dir, "adapter"));
            Assert.True(code == 0, err);
            var fromCli = ParseLines(output)[0];
            var plain = SentenceEmbedder.Embed(mini.Model, mini.Tokenizer, text)[0];
            for (int j = 0; j < 384; j++) Assert.True(Math.Abs(adapted[j] - fromCli[j]) <= 1e-6, $"element {j}: {fromCli[j]} vs {adapted[j]}");
            Assert.True(adapted.Zip(plain, (a, b) => Math.Abs(a - b)).Max() > 1e-3, "the adapter changed nothing");
        }
    }

    [Fact]
    public void Convert_writes_a_folder_that_embed_reads_back_and_never_overwrites()
    {
        var dir = Path.Combine(Directory.CreateTempSubdirectory().FullName, "minilm-hf");
        var (code, _, err) = CliTests.Run("convert", "--out", dir);
        Assert.True(code == 0, err);
        foreach (var f in new[] { "config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json" }) Assert.True(File.Exists(Path.Combine(dir, f)), f);
        File.WriteAllLines(Path.Combine(dir, "..", "in.txt"), ["a tiny tool"]);
        var (code2, output, err2) = CliTests.Run("embed", "--model", dir, "--input", Path.Combine(dir, "..", "in.txt"));
        Assert.True(code2 == 0, err2);
        Assert.Equal(SentenceEmbedder.Embed(mini.Model, mini.Tokenizer, ["a tiny tool"])[0], ParseLines(output)[0]);
        (code, _, err) = CliTests.Run("convert", "--out", dir);
        Assert.Equal(1, code);
        Assert.Contains("not empty", err);
    }
}
