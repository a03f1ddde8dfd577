using Nanolora.Autograd;
using Nanolora.Lora;
using Nanolora.Tensors;
using Nanolora.Tests.Transformer;
using Nanolora.Transformer;

namespace Nanolora.Tests.Lora;

/// <summary>A tiny model with a fixed batch: the seq2seq transformer (logits) or a BertModel (last hidden state).</summary>
internal sealed class TinySubject : IDisposable
{
    public static readonly string[] Kinds = ["seq2seq", "bert"];
    public static IEnumerable<object[]> Both() => Kinds.Select(k => new object[] { k });

    public static readonly BertConfig BertTiny = new()
    {
        VocabSize = 30, HiddenSize = 16, Layers = 2, Heads = 2, IntermediateSize = 32, MaxPositions = 16, HiddenDropout = 0, AttentionDropout = 0,
    };

    readonly Func<Variable> _forward;
    public Module Model { get; }
    public string Kind { get; }

    TinySubject(string kind, Module model, Func<Variable> forward) { Kind = kind; Model = model; _forward = forward; }

    /// <summary>
    /// Same kind, same seed: the same base weights every time. <paramref name="smooth"/> gives the seq2seq model GELU
    /// instead of ReLU (BERT has GELU already): for finite differences, which are wrong wherever a ReLU input lies within
    /// the step of its kink.
    /// </summary>
    public static TinySubject Make(string kind, bool smooth = false)
    {
        if (kind == "bert")
        {
            var bert = new BertModel(BertTiny, Device.Cpu, pooler: false);
            var batch = EncoderBatch.Pad([[2, 5, 7, 9, 11], [3, 4, 6]], multiple: 1);
            return new TinySubject(kind, bert, () => bert.Forward(batch));
        }
        var model = new Seq2SeqTransformer(smooth ? TinyModels.Config with { Activation = "gelu" } : TinyModels.Config, Device.Cpu);
        var b = TinyModels.CopyBatch(new Random(3), 4);
        return new TinySubject(kind, model, () =>
        {
            var (memory, mask) = model.Encode(b.SourceIds, b.BatchSize, b.SourceLength);
            using (mask) return model.Logits(model.Decode(b.TargetInput, b.BatchSize, b.TargetLength, memory, mask));
        });
    }

    /// <summary>The model's output as a flat array (no graph kept).</summary>
    public float[] Output()
    {
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        return _forward().Data.ToArray();
    }

    /// <summary>A scalar in which every output element matters.</summary>
    public Variable Loss() => TinyModels.WeightedSum(_forward());

    /// <summary><paramref name="steps"/> AdamW steps on the trainable parameters; returns the optimizer's state bytes.</summary>
    public long Train(int steps, float lr = 5e-2f)
    {
        using var optimizer = new AdamW(Model.TrainableParameters(), lr);
        for (int i = 0; i < steps; i++)
        {
            using var scope = new GraphScope();
            Loss().Backward();
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        return optimizer.StateBytes;
    }

    public void Dispose() => Model.Dispose();
}

/// <summary>
/// The checks every PEFT method shares (PEFT's test_only_params_are_updated, disable, save/load, named instances),
/// run against one method through its view factory and two configs.
/// </summary>
internal static class PeftMethodChecks
{
    public static void Bitwise(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}: index {i}: {expected[i]} vs {actual[i]}");
    }

    public static void Close(float[] expected, float[] actual, double tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i] - actual[i]) <= tolerance, $"{what}: index {i}: {expected[i]} vs {actual[i]} (tolerance {tolerance})");
    }

    static void Differs(float[] a, float[] b, string what) =>
        Assert.True(a.Zip(b).Max(p => Math.Abs(p.First - p.Second)) > 1e-4, $"{what}: outputs did not change, so the comparison would be vacuous");

    /// <summary>
    /// One subject through the whole life of an instance: fresh = base (bit for bit, where the init promises it), 3 steps
    /// change exactly the instance's parameters with optimizer state only for them, disable = base bit for bit, save →
    /// load onto a fresh base gives the same outputs, a second instance trains apart and switching brings each back.
    /// <paramref name="freshIsBase"/> false is for methods whose fresh instance already changes the outputs (soft prompts):
    /// a fresh instance must then differ from the base instead.
    /// </summary>
    public static void Lifecycle<TConfig>(string kind, Func<Module, PeftMethod<TConfig>> view, TConfig first, TConfig second, bool freshIsBase = true) where TConfig : class
    {
        using var s = TinySubject.Make(kind);
        var baseOut = s.Output();
        var method = view(s.Model);
        method.Add("first", first);
        method.SetActive("first");
        if (freshIsBase) Bitwise(baseOut, s.Output(), $"{kind}: a fresh instance");
        else Differs(baseOut, s.Output(), $"{kind}: a fresh instance");

        // Only the instance's parameters train, and only they have optimizer state (AdamW: two slots of 4 bytes).
        var own = method.InstanceParameters("first").Select(p => p.Parameter).ToHashSet(ReferenceEqualityComparer.Instance);
        Assert.NotEmpty(own);
        Assert.True(s.Model.TrainableParameters().ToHashSet(ReferenceEqualityComparer.Instance).SetEquals(own), $"{kind}: trainable set is not the instance's parameters");
        var before = s.Model.NamedParameters().Select(p => (p.Name, p.Parameter, Data: p.Parameter.Data.ToArray())).ToList();
        long stateBytes = s.Train(3);
        Assert.Equal(2L * 4 * own.Sum(p => ((Parameter)p!).Count), stateBytes);
        int changed = 0;
        foreach (var (name, p, data) in before)
        {
            bool same = data.SequenceEqual(p.Data.ToArray());
            if (own.Contains(p)) changed += same ? 0 : 1;
            else Assert.True(same, $"{kind}: frozen parameter {name} changed");
        }
        Assert.True(changed > 0, $"{kind}: no parameter of the instance changed in 3 steps");
        var firstOut = s.Output();
        Differs(baseOut, firstOut, $"{kind}: trained");

        using (method.Disable()) Bitwise(baseOut, s.Output(), $"{kind}: disabled");
        Bitwise(firstOut, s.Output(), $"{kind}: re-enabled");

        // A second instance starts from the base, trains apart, and switching brings each one's outputs back.
        method.Add("second", second, seed: 2);
        Bitwise(firstOut, s.Output(), $"{kind}: adding an instance leaves the active one");
        method.SetActive("second");
        if (freshIsBase) Bitwise(baseOut, s.Output(), $"{kind}: a fresh second instance");
        else Differs(firstOut, s.Output(), $"{kind}: a fresh second instance");
        s.Train(3);
        var secondOut = s.Output();
        Differs(firstOut, secondOut, $"{kind}: second trained");
        method.SetActive("first");
        Bitwise(firstOut, s.Output(), $"{kind}: back to first");
        method.SetActive("second");
        Bitwise(secondOut, s.Output(), $"{kind}: back to second");

        // Save the parked "first" while "second" is live; load it onto a fresh base under another name.
        var dir = Directory.CreateTempSubdirectory("nanolora-peft-").FullName;
        try
        {
            method.Save("first", dir);
            Assert.True(File.Exists(Path.Combine(dir, AdapterFiles.ConfigFile)) && File.Exists(Path.Combine(dir, AdapterFiles.WeightsFile)));
            using var fresh = TinySubject.Make(kind);
            Bitwise(baseOut, fresh.Output(), $"{kind}: same seed, same base");
            var loaded = view(fresh.Model);
            var warnings = new List<string>();
            loaded.Load(dir, "restored", warnings.Add);
            Assert.Empty(warnings);
            loaded.SetActive("restored");
            Close(firstOut, fresh.Output(), 1e-6, $"{kind}: loaded");
        }
        finally { Directory.Delete(dir, recursive: true); }

        method.Delete("first");
        Assert.DoesNotContain("first", method.Instances);
        Assert.Throws<KeyNotFoundException>(() => method.SetActive("first"));
        Bitwise(secondOut, s.Output(), $"{kind}: second after deleting first");
        method.Delete("second");
        Bitwise(baseOut, s.Output(), $"{kind}: every instance deleted");
    }

    /// <summary>Changes every parameter of the instance a little (seeded), so a check does not run at the identity init.</summary>
    public static void Perturb(IPeftMethod method, string name, int seed = 40, float scale = 0.3f)
    {
        foreach (var (_, p) in method.InstanceParameters(name))
        {
            var noise = Reference.Random((int)p.Count, seed++, -scale, scale);
            var data = p.Data.ToArray();
            for (int i = 0; i < data.Length; i++) data[i] += noise[i];
            p.Data.CopyFrom(data);
        }
    }

    /// <summary>Finite differences against backward for a few entries of every parameter of the instance.</summary>
    public static void GradientsMatchFiniteDifferences(TinySubject s, IPeftMethod method, string name, double eps = 1e-2)
    {
        foreach (var (pname, p) in method.InstanceParameters(name))
        {
            int n = (int)p.Count;
            int[] indices = n <= 3 ? Enumerable.Range(0, n).ToArray() : [0, n / 3, n - 1];
            TinyModels.CheckParameterGradient(p, s.Loss, indices, eps);
        }
    }
}
