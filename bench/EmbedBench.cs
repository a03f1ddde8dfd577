using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Bench;

/// <summary>
/// Sentence embeddings per second of all-MiniLM-L6-v2: Nanolora's encoder (what `nanolora embed` runs) against ONNX
/// Runtime on the package's own model.onnx, same sentences, same tokenizer, same length-sorted batches of 32, mean
/// pooling and normalization included for both; ONNX Runtime with 2 intra-op threads and full graph optimization.
/// Usage: Nanolora.Bench.dll embed-quick [device] (median of 5 timed passes after a warm-up pass each).
/// </summary>
public static class EmbedQuick
{
    public static void Run(string deviceId)
    {
        var device = Device.Get(deviceId);
        var (model, tokenizer) = PretrainedBert.LoadMiniLm(device);
        var sentences = JsonlDataset.Load(DataPaths.Find("debian-descriptions.jsonl.gz"), "test", 256)
            .SelectMany(e => new[] { e.Source, e.Target }).ToList();
        var lengths = sentences.Select(s => tokenizer.Encode(s).Length).ToArray();
        Console.WriteLine($"{sentences.Count} sentences (Debian test descriptions and synopses), {lengths.Average():F1} word pieces on average, max {lengths.Max()}; " +
                          $"{Environment.ProcessorCount} logical CPUs, device {device.Id}");

        double ours = Median(() => SentenceEmbedder.Embed(model, tokenizer, sentences, 32));
        using var session = new InferenceSession(MiniLmPackage.ReadResources().Onnx,
            new SessionOptions { IntraOpNumThreads = 2, InterOpNumThreads = 1, GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL });
        double ort = Median(() => OnnxRuntimeEmbed(session, tokenizer, sentences, 32));

        // The two must agree before their speeds mean anything.
        var a = SentenceEmbedder.Embed(model, tokenizer, sentences, 32);
        var b = OnnxRuntimeEmbed(session, tokenizer, sentences, 32);
        double worst = 1;
        for (int i = 0; i < a.Length; i++) worst = Math.Min(worst, a[i].Zip(b[i], (x, y) => (double)x * y).Sum());
        Console.WriteLine($"worst cosine between the two: {worst:F7}");
        Console.WriteLine($"| engine | sentences/s (median of 5) |");
        Console.WriteLine($"|---|---:|");
        Console.WriteLine($"| Nanolora ({device.Id}) | {sentences.Count / ours:F1} |");
        Console.WriteLine($"| ONNX Runtime 1.31.1 (CPU, 2 threads) | {sentences.Count / ort:F1} |");
        Console.WriteLine($"ratio Nanolora / ONNX Runtime: {ort / ours:F2}x");
        model.Dispose();
    }

    static double Median(Action pass)
    {
        pass();   // warm-up: JIT, kernels, buffer pool
        var times = new List<double>();
        for (int i = 0; i < 5; i++)
        {
            var sw = Stopwatch.StartNew();
            pass();
            times.Add(sw.Elapsed.TotalSeconds);
        }
        times.Sort();
        Console.WriteLine($"  passes (s): {string.Join(", ", times.Select(t => t.ToString("F3")))}");
        return times[2];
    }

    /// <summary>sentence-transformers' pipeline over ONNX Runtime: length-sorted batches, mean pooling over the mask, L2 normalization.</summary>
    static float[][] OnnxRuntimeEmbed(InferenceSession session, BertWordPieceTokenizer tokenizer, IReadOnlyList<string> texts, int batchSize)
    {
        var encoded = texts.Select(t => tokenizer.Encode(t)).ToArray();
        var order = Enumerable.Range(0, texts.Count).OrderByDescending(i => encoded[i].Length).ToArray();
        var result = new float[texts.Count][];
        foreach (var chunk in order.Chunk(batchSize))
        {
            var batch = EncoderBatch.Pad(chunk.Select(i => (IReadOnlyList<int>)encoded[i]).ToList(), tokenizer.PadId);
            DenseTensor<long> Long(int[] v) => new(v.Select(x => (long)x).ToArray(), [batch.BatchSize, batch.Length]);
            using var outputs = session.Run(
            [
                NamedOnnxValue.CreateFromTensor("input_ids", Long(batch.Ids)),
                NamedOnnxValue.CreateFromTensor("attention_mask", Long(batch.AttentionMask)),
                NamedOnnxValue.CreateFromTensor("token_type_ids", Long(batch.TypeIds)),
            ], ["last_hidden_state"]);
            var hidden = outputs.First().AsTensor<float>().ToArray();
            int c = hidden.Length / (batch.BatchSize * batch.Length);
            for (int r = 0; r < chunk.Length; r++)
            {
                var v = new float[c];
                int count = 0;
                for (int t = 0; t < batch.Length; t++)
                {
                    if (batch.AttentionMask[r * batch.Length + t] == 0) continue;
                    count++;
                    for (int j = 0; j < c; j++) v[j] += hidden[(r * batch.Length + t) * c + j];
                }
                float norm = MathF.Sqrt(v.Sum(x => (x / count) * (x / count)));
                for (int j = 0; j < c; j++) v[j] = v[j] / count / Math.Max(norm, 1e-12f);
                result[chunk[r]] = v;
            }
        }
        return result;
    }
}
