using BenchmarkDotNet.Attributes;
using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Transformer;

namespace Nanolora.Bench;

/// <summary>Random-token batches and models shared by the LoRA and training-step benchmarks.</summary>
public static class BenchModels
{
    /// <summary>Batch of uniformly random regular tokens (no padding): SourceIds [B, S], TargetInput = [Bos, y…], TargetOutput = [y…, Eos].</summary>
    public static Batch RandomBatch(int vocab, int batch, int sourceLength, int targetLength, int seed)
    {
        var rng = new Random(seed);
        int Token() => rng.Next(4, vocab);
        var src = Enumerable.Range(0, batch * sourceLength).Select(_ => Token()).ToArray();
        var tin = new int[batch * targetLength];
        var tout = new int[batch * targetLength];
        for (int b = 0; b < batch; b++)
        {
            var y = Enumerable.Range(0, targetLength - 1).Select(_ => Token()).ToArray();
            tin[b * targetLength] = SubwordTokenizer.Bos;
            Array.Copy(y, 0, tin, b * targetLength + 1, targetLength - 1);
            Array.Copy(y, 0, tout, b * targetLength, targetLength - 1);
            tout[b * targetLength + targetLength - 1] = SubwordTokenizer.Eos;
        }
        return new Batch(src, tin, tout, batch, sourceLength, targetLength, Enumerable.Repeat(sourceLength, batch).ToArray());
    }

    /// <summary>LoRA r = 8 (α = 16) on every attention projection: q, k, v, o (self and cross).</summary>
    public static LoraConfig AttentionLora => new() { R = 8, Alpha = 16, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] };

    /// <summary>Gives every LoRA B a random N(0, 0.02) value so the adapter changes the output (B starts at zero).</summary>
    public static void RandomizeB(LoraModel lora, int seed)
    {
        var rng = new Random(seed);
        foreach (var layer in lora.Layers.Values)
            foreach (var adapter in layer.Adapters.Values)
            {
                var b = adapter.B.Data;
                b.CopyFrom(Enumerable.Range(0, (int)b.Length).Select(_ => (float)(0.02 * Normal(rng))).ToArray());
            }
    }

    static double Normal(Random rng) => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());

    /// <summary>One training step in its own graph scope: loss, backward, AdamW step, zero grads. Returns the loss.</summary>
    public static float TrainStep(Seq2SeqTransformer model, Optimizer optimizer, Batch batch) => Trainer.StepOnce(model, optimizer, batch);

    public static string Mb(long bytes) => $"{bytes / 1048576.0:F1} MiB";
}

/// <summary>y = x·Wᵀ, x [4096, 512] (needs dx), W [512, 512] frozen or trainable; forward + backward of Σy.</summary>
public sealed class LinearBackwardCase : IDisposable
{
    public const int Rows = 4096, Width = 512;
    readonly Variable _x;
    readonly Parameter _w;
    readonly Device _device;
    public bool Trainable { get; }
    /// <summary>Multiply-adds ×2: forward, dx, and dW when trainable.</summary>
    public double Flops => (Trainable ? 3 : 2) * 2.0 * Rows * Width * Width;

    public LinearBackwardCase(bool trainable, Device device)
    {
        Trainable = trainable;
        _device = device;
        _x = new Variable(TensorRandom.Uniform([Rows, Width], -1f, 1f, 21, device, MemoryCategory.Activation), requiresGrad: true);
        _w = new Parameter("w", TensorRandom.Uniform([Width, Width], -0.1f, 0.1f, 22, device), trainable);
        // Validate: with dy = 1, dx[r, i] = Σ_o W[o, i] and dW[o, i] = Σ_r x[r, i].
        using (new GraphScope()) F.Sum(F.Linear(_x, _w, null)).Backward();
        var xs = _x.Data.ToArray(); var ws = _w.Data.ToArray(); var dx = _x.Grad!.ToArray();
        for (int i = 0; i < Width; i += 37)
        {
            double e = 0;
            for (int o = 0; o < Width; o++) e += ws[o * Width + i];
            Check("dx", e, dx[5 * Width + i]);
        }
        if (trainable)
        {
            var dw = _w.Grad!.ToArray();
            for (int i = 0; i < Width; i += 37)
            {
                double e = 0;
                for (int r = 0; r < Rows; r++) e += xs[r * Width + i];
                Check("dW", e, dw[3 * Width + i]);
            }
        }
        else if (_w.Grad != null) throw new InvalidOperationException("A frozen weight received a gradient.");
        _x.ZeroGrad(); _w.ZeroGrad();
    }

    void Check(string what, double e, float a)
    {
        if (!(Math.Abs(e - a) <= 1e-3 + 1e-4 * Math.Abs(e)))
            throw new InvalidOperationException($"Linear backward ({what}) on {_device.Id} is wrong: expected {e}, got {a}.");
    }

    public void Run()
    {
        using (new GraphScope()) F.Sum(F.Linear(_x, _w, null)).Backward();
        _x.ZeroGrad(); _w.ZeroGrad();
        _device.Synchronize();
    }

    public void Dispose() { _x.Dispose(); _w.Dispose(); }
}

/// <summary>One training step of the "small" preset (vocab 8000, B 32, S 96, T 16): full fine-tuning or LoRA r=8 on q,k,v,o.</summary>
public sealed class TrainStepCase : IDisposable
{
    public Seq2SeqTransformer Model { get; }
    public AdamW Optimizer { get; }
    public long TrainableParameters { get; }
    public long TotalParameters { get; }
    readonly Batch _batch;
    readonly Device _device;
    public Batch Batch => _batch;
    public Device Device => _device;

    public TrainStepCase(bool lora, Device device, TransformerConfig? config = null, int batch = 32, int sourceLength = 96, int targetLength = 16, bool base16 = false)
    {
        _device = device;
        Model = new Seq2SeqTransformer(config ?? TransformerConfig.Preset("small", 8000), device);
        if (lora) LoraModel.Inject(Model, BenchModels.AttentionLora);
        if (base16) FrozenWeights.ToBFloat16(Model);
        TrainableParameters = Model.ParameterCount(trainableOnly: true);
        TotalParameters = Model.ParameterCount();
        Optimizer = new AdamW(Model.TrainableParameters(), lr: 1e-4f);
        _batch = BenchModels.RandomBatch(Model.Config.VocabSize, batch, sourceLength, targetLength, 5);
    }

    /// <summary>One step; throws if the loss is not finite (the validation available for a whole step).</summary>
    public float Run()
    {
        float loss = BenchModels.TrainStep(Model, Optimizer, _batch);
        _device.Synchronize();
        if (!float.IsFinite(loss)) throw new InvalidOperationException($"Training step produced loss {loss}.");
        return loss;
    }

    public void Dispose() { Optimizer.Dispose(); Model.Dispose(); }
}

/// <summary>
/// Inference forward (encode, teacher-forced decode, logits) under NoGrad in eval mode, "small" preset, B 32, S 96, T 16:
/// the base model, the model with an unmerged LoRA (random B), or that LoRA merged and unloaded.
/// </summary>
public sealed class InferenceCase : IDisposable
{
    public static readonly string[] Modes = ["base", "lora-unmerged", "lora-merged"];
    readonly Seq2SeqTransformer _model;
    readonly Batch _batch;
    readonly Device _device;

    public InferenceCase(string mode, Device device)
    {
        _device = device;
        _model = new Seq2SeqTransformer(TransformerConfig.Preset("small", 8000), device);
        _model.Eval();
        _batch = BenchModels.RandomBatch(8000, 32, 96, 16, 6);
        if (mode == "base") return;
        var lora = LoraModel.Inject(_model, BenchModels.AttentionLora);
        BenchModels.RandomizeB(lora, 9);
        if (mode == "lora-unmerged") return;
        if (mode != "lora-merged") throw new ArgumentException($"Unknown inference mode '{mode}'; expected one of {string.Join(", ", Modes)}.");
        var before = Logits();
        lora.MergeAndUnload();
        var after = Logits();
        for (int i = 0; i < before.Length; i += 97)
            if (!(Math.Abs(before[i] - after[i]) <= 2e-3 + 2e-3 * Math.Abs(before[i])))
                throw new InvalidOperationException($"Merged logits differ from unmerged at {i}: {before[i]} vs {after[i]}.");
    }

    float[] Logits()
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        return Forward().Data.ToArray();
    }

    Variable Forward()
    {
        var (memory, mask) = _model.Encode(_batch.SourceIds, _batch.BatchSize, _batch.SourceLength);
        using (mask) return _model.Logits(_model.Decode(_batch.TargetInput, _batch.BatchSize, _batch.TargetLength, memory, mask));
    }

    public void Run()
    {
        using var noGrad = Graph.NoGrad();
        using (new GraphScope()) Forward();
        _device.Synchronize();
    }

    public void Dispose() => _model.Dispose();
}

/// <summary>
/// Greedy decoding of 8 random sources (S 32) for 32 tokens with the "small" preset, random init, KV cache on or off.
/// The EOS embedding row is zeroed so every row runs the full 32 steps (tokens = 8 · 32 per call).
/// </summary>
public sealed class DecodeCase : IDisposable
{
    public const int Batch = 8, SourceLength = 32, MaxLength = 32;
    public int Tokens => Batch * MaxLength;
    readonly Seq2SeqTransformer _model;
    readonly int[] _source;
    readonly DecodeOptions _options;

    public DecodeCase(bool useCache, Device device)
    {
        _model = new Seq2SeqTransformer(TransformerConfig.Preset("small", 8000), device);
        var shared = _model.NamedParameters().First(p => p.Name == "shared.weight").Parameter.Data;
        var w = shared.ToArray();
        Array.Clear(w, SubwordTokenizer.Eos * shared.Dim(1), shared.Dim(1));
        shared.CopyFrom(w);
        _source = BenchModels.RandomBatch(8000, Batch, SourceLength, 2, 7).SourceIds;
        _options = new DecodeOptions(MaxLength: MaxLength, UseCache: useCache);
        var outputs = Generate();
        if (outputs.Any(o => o.Length != MaxLength)) throw new InvalidOperationException("A decoded row stopped early.");
        // The cache must not change the result.
        var other = SequenceDecoder.Generate(_model, _source, Batch, SourceLength, _options with { UseCache = !useCache });
        for (int b = 0; b < Batch; b++)
            if (!outputs[b].SequenceEqual(other[b]))
                throw new InvalidOperationException($"Greedy decoding with and without the KV cache differs in row {b}.");
    }

    List<int[]> Generate() => SequenceDecoder.Generate(_model, _source, Batch, SourceLength, _options);

    public void Run() { Generate(); _model.Device.Synchronize(); }

    public void Dispose() => _model.Dispose();
}

/// <summary>
/// BenchmarkDotNet cases for LoRA: Linear backward with W frozen/trainable, a "small" training step full vs LoRA,
/// inference base / LoRA unmerged / merged, greedy decoding with and without the KV cache. Long on a CPU:
/// prefer `lora-quick` for a table. Run: dotnet run -c Release --project bench -- --filter '*LoraBench*' --job short
/// </summary>
public class LoraBench
{
    [Params("linear-bwd-frozen", "linear-bwd-trainable", "step-full", "step-lora", "infer-base", "infer-lora-unmerged",
        "infer-lora-merged", "decode-cache", "decode-nocache")]
    public string Case { get; set; } = "";

    [ParamsSource(nameof(Devices))]
    public string Device { get; set; } = "";

    public static IEnumerable<string> Devices() => OpCase.Devices();

    IDisposable _case = null!;
    Action _run = null!;

    [GlobalSetup]
    public void Setup()
    {
        var device = Nanolora.Tensors.Device.Get(Device);
        switch (Case)
        {
            case "linear-bwd-frozen" or "linear-bwd-trainable":
                var l = new LinearBackwardCase(Case.EndsWith("trainable"), device); _case = l; _run = l.Run; break;
            case "step-full" or "step-lora":
                var s = new TrainStepCase(Case == "step-lora", device); _case = s; _run = () => s.Run(); break;
            case "decode-cache" or "decode-nocache":
                var d = new DecodeCase(Case == "decode-cache", device); _case = d; _run = d.Run; break;
            default:
                var i = new InferenceCase(Case["infer-".Length..], device); _case = i; _run = i.Run; break;
        }
    }

    [Benchmark]
    public void Run() => _run();

    [GlobalCleanup]
    public void Cleanup() => _case.Dispose();
}

/// <summary>
/// Stopwatch table of the LoRA cases, with parameter counts, optimizer state and peak ledger bytes by category.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll lora-quick [device]
/// </summary>
public static class LoraQuick
{
    public static void Run(string deviceId)
    {
        var device = Device.Get(deviceId);
        Console.WriteLine($"== Nanolora LoRA cases on {device}");

        Console.WriteLine($"-- a. Linear forward+backward, x [{LinearBackwardCase.Rows}, {LinearBackwardCase.Width}] (needs dx), W [512, 512]");
        foreach (bool trainable in new[] { true, false })
        {
            using var c = new LinearBackwardCase(trainable, device);
            var (median, best) = Timing.MedianBest(c.Run, 0.3);
            Console.WriteLine($"W {(trainable ? "trainable" : "frozen   ")}  median {median * 1e3,8:F2} ms  best {best * 1e3,8:F2} ms" +
                $"  ({c.Flops / 1e9:F2} GFLOP: {c.Flops / median / 1e9:F1} GFLOP/s median)");
        }

        Console.WriteLine("-- b. training step, preset small, vocab 8000, B 32, S 96, T 16, AdamW");
        foreach (bool lora in new[] { false, true })
        {
            using var c = new TrainStepCase(lora, device);
            device.Ledger.ResetPeaks();
            var (median, best) = Timing.MedianBest(() => c.Run(), 0, warmups: 2, samples: 5);
            var snap = device.Ledger.Snapshot();
            Console.WriteLine($"{(lora ? "LoRA r=8 q,k,v,o" : "full fine-tune  ")}  step median {median:F3} s  best {best:F3} s" +
                $"  trainable {c.TrainableParameters:N0} of {c.TotalParameters:N0}  optimizer state {BenchModels.Mb(c.Optimizer.StateBytes)}");
            Console.WriteLine($"    peak ledger: total {BenchModels.Mb(snap.PeakBytes)}; " +
                string.Join(", ", snap.PeakByCategory.Select(kv => $"{kv.Key} {BenchModels.Mb(kv.Value)}")));
        }

        Console.WriteLine("-- c. inference forward under NoGrad (eval), preset small, B 32, S 96, T 16");
        var times = new Dictionary<string, double>();
        foreach (var mode in InferenceCase.Modes)
        {
            using var c = new InferenceCase(mode, device);
            var (median, best) = Timing.MedianBest(c.Run, 0, warmups: 2, samples: 7);
            times[mode] = median;
            Console.WriteLine($"{mode,-14}  median {median * 1e3,8:F1} ms  best {best * 1e3,8:F1} ms" +
                (mode == "base" ? "" : $"  ({100 * (median / times["base"] - 1),+5:F1}% vs base)"));
        }

        Console.WriteLine($"-- d. greedy decoding, preset small (random init), {DecodeCase.Batch} sources × S {DecodeCase.SourceLength}, {DecodeCase.MaxLength} tokens each");
        foreach (bool cache in new[] { true, false })
        {
            using var c = new DecodeCase(cache, device);
            var (median, best) = Timing.MedianBest(c.Run, 0, warmups: 1, samples: 5);
            Console.WriteLine($"KV cache {(cache ? "on " : "off")}  median {c.Tokens / median,8:F1} tokens/s  best {c.Tokens / best,8:F1} tokens/s" +
                $"  ({median:F3} s per call)");
        }
    }
}

/// <summary>
/// The training-step comparison with bench/peers/torch_train_step.py: d_model 256, 4 heads, 3+3 layers, d_ff 1024,
/// vocab 8000, post-LN, dropout 0.1, B 32, S 96, T 16, AdamW, CE loss; seconds per step, median of 10 after 3 warm-ups.
/// Run: dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll train-step [device]
/// </summary>
public static class TrainStepQuick
{
    public static void Run(string deviceId)
    {
        var device = Device.Get(deviceId);
        var config = new TransformerConfig { VocabSize = 8000, DModel = 256, Heads = 4, DFF = 1024, EncoderLayers = 3, DecoderLayers = 3, Dropout = 0.1f, PreNorm = false };
        using var c = new TrainStepCase(lora: false, device, config);
        Console.WriteLine($"== Nanolora training step on {device}: {c.TotalParameters:N0} parameters (tied embedding), B 32, S 96, T 16");
        var losses = new List<float>();
        for (int w = 0; w < 3; w++) losses.Add(c.Run());
        var times = new List<double>();
        var clock = new System.Diagnostics.Stopwatch();
        for (int s = 0; s < 10; s++)
        {
            clock.Restart();
            losses.Add(c.Run());
            times.Add(clock.Elapsed.TotalSeconds);
        }
        times.Sort();
        Console.WriteLine($"nanolora train-step  median {(times[4] + times[5]) / 2:F3} s/step  best {times[0]:F3} s/step" +
            $"  (loss {losses[0]:F3} -> {losses[^1]:F3})");
    }
}
