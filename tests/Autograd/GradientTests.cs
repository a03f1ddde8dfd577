using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests.Autograd;

/// <summary>Every differentiable op and a few compositions, by finite differences on cpu; analytic gradients then agree on every kernel device.</summary>
public class GradientTests
{
    public static IEnumerable<object[]> Cases() => Names.Keys.Select(k => new object[] { k });
    public static IEnumerable<object[]> KernelCases() => Reference.KernelDevices().SelectMany(d => Names.Keys.Select(k => new object[] { d[0], k }));

    static readonly Dictionary<string, (Func<Variable[], Variable> F, int[][] Shapes)> Names = new()
    {
        ["add_broadcast"] = (v => F.Add(v[0], v[1]), [[3, 4], [4]]),
        // Add hands dy itself to one input: the same value on both sides, a residual stream read by two adds and a tanh.
        ["add_same_input"] = (v => F.Mul(F.Add(v[0], v[0]), v[1]), [[3, 4], [3, 4]]),
        ["add_residual_chain"] = (v => F.Mul(F.Add(F.Add(v[0], F.Tanh(v[0])), F.Mul(v[0], v[1])), v[1]), [[2, 5], [2, 5]]),
        ["sub_broadcast"] = (v => F.Sub(v[0], v[1]), [[3, 4], [3, 1]]),
        ["mul_broadcast"] = (v => F.Mul(v[0], v[1]), [[2, 3, 4], [3, 1]]),
        ["div"] = (v => F.Div(v[0], F.AddScalar(F.Mul(v[1], v[1]), 1f)), [[3, 4], [3, 4]]),
        ["maximum"] = (v => F.Maximum(v[0], v[1]), [[5, 3], [5, 3]]),
        ["tanh"] = (v => F.Tanh(v[0]), [[7]]),
        ["sigmoid"] = (v => F.Sigmoid(v[0]), [[7]]),
        ["gelu"] = (v => F.Gelu(v[0]), [[7]]),
        ["silu"] = (v => F.Silu(v[0]), [[7]]),
        ["exp_log"] = (v => F.Log(F.AddScalar(F.Exp(v[0]), 1f)), [[7]]),
        ["pow"] = (v => F.Pow(v[0], 2f), [[7]]),
        ["matmul"] = (v => F.Matmul(v[0], v[1]), [[3, 5], [5, 4]]),
        ["matmul_tA"] = (v => F.Matmul(v[0], v[1], transposeA: true), [[5, 3], [5, 4]]),
        ["matmul_tB"] = (v => F.Matmul(v[0], v[1], transposeB: true), [[3, 5], [4, 5]]),
        ["matmul_tAB"] = (v => F.Matmul(v[0], v[1], true, true), [[5, 3], [4, 5]]),
        ["matmul_batched"] = (v => F.Matmul(v[0], v[1]), [[2, 3, 5], [2, 5, 4]]),
        ["matmul_alpha_tB"] = (v => F.Matmul(v[0], v[1], false, true, 0.35f), [[2, 3, 5], [2, 4, 5]]),
        ["dropout_add"] = (v => F.Mul(F.DropoutAdd(v[0], F.Tanh(v[1]), 0.3f, 13UL, training: true), v[0]), [[4, 7], [4, 7]]),
        ["relu_dropout"] = (v => F.ReluDropout(v[0], 0.4f, 12UL, training: true), [[5, 9]]),
        ["matmul_shared_b"] = (v => F.Matmul(v[0], v[1]), [[2, 3, 5], [5, 4]]),
        ["linear"] = (v => F.Linear(v[0], v[1], v[2]), [[2, 3, 5], [4, 5], [4]]),
        ["softmax"] = (v => F.Softmax(v[0]), [[3, 6]]),
        ["softmax_causal"] = (v => F.Softmax(v[0], causal: true), [[2, 4, 4]]),
        ["log_softmax"] = (v => F.LogSoftmax(v[0]), [[3, 6]]),
        ["layer_norm"] = (v => F.LayerNorm(v[0], v[1], v[2]), [[4, 6], [6], [6]]),
        ["rms_norm"] = (v => F.RmsNorm(v[0], v[1]), [[4, 6], [6]]),
        ["permute"] = (v => F.Permute(v[0], 0, 2, 1, 3), [[2, 3, 4, 2]]),
        ["reshape_slice_concat"] = (v => F.Concat([F.Slice(F.Reshape(v[0], 4, 3), 0, 1, 2), v[1]], 0), [[2, 6], [1, 3]]),
        ["mean_sumlast"] = (v => F.Add(F.SumLastAxis(v[0]), F.Mean(v[0])), [[3, 5]]),
        ["mlp_2_layer"] = (v => F.Linear(F.Relu(F.Linear(v[0], v[1], v[2])), v[3], null), [[4, 5], [6, 5], [6], [3, 6]]),
        ["softmax_matmul"] = (v => F.Matmul(F.Softmax(F.Matmul(v[0], v[1], transposeB: true)), v[1]), [[3, 4], [5, 4]]),
        // Attention's softmax, written over the scores (which only it reads) and its dx over dy.
        ["softmax_over_scores"] = (v => F.Matmul(F.Softmax(F.Matmul(v[0], v[1], false, true, 0.5f), causal: true, inputUnread: true), v[2]),
            [[2, 4, 3], [2, 4, 3], [2, 4, 5]]),
        ["dropout_matmul"] = (v => F.DropoutMatmul(v[0], v[1], 0.3f, 17UL), [[2, 3, 6], [2, 6, 4]]),
        ["layernorm_linear"] = (v => F.Linear(F.LayerNorm(v[0], v[1], null), v[2], null), [[3, 6], [6], [2, 6]]),
        ["value_used_twice"] = (v => F.Mul(v[0], F.Tanh(v[0])), [[6]]),
        // LoRA's fused node (lives in src/Lora; checked here with the other rules).
        ["lora_linear"] = (v => Nanolora.Lora.LoraLinear.LowRankLinear(v[0], null, v[1], v[2], v[3], v[4], 0.5f), [[2, 3, 5], [4, 5], [4], [2, 5], [4, 2]]),
        ["lora_linear_with_dropout_input"] = (v => Nanolora.Lora.LoraLinear.LowRankLinear(v[0], F.Tanh(v[0]), v[1], null, v[2], v[3], 2f), [[3, 5], [4, 5], [2, 5], [4, 2]]),
    };

    static Variable Constant(Variable like, int seed, params int[] shape) =>
        Variable.Constant(Tensor.FromArray(Reference.Random((int)ShapeMath.Numel(shape), seed), shape, like.Device));

    /// <summary>fc2(dropout(act(fc1(x)))) with fc1 [9, 5] (a hidden width off the 32-bit mask words) and fc2 [5, 9] frozen.</summary>
    static Variable FrozenFeedForward(Variable x, bool gelu, bool dropout) =>
        F.FeedForward(x, Constant(x, 31, 9, 5), Constant(x, 32, 9), Constant(x, 33, 5, 9), dropout ? Constant(x, 34, 5) : null, gelu, 0.3f, 15UL, dropout);

    /// <summary>
    /// The frozen block's input gradient by finite differences (fc1, fc2 constants: x gets the gradient, through the hidden
    /// mask's bits and GELU's input); a step of 1e-3, as ReLU's kinks sit among the 9 hidden values of each row.
    /// </summary>
    [Theory]
    [InlineData(false, true)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void FrozenFeedForwardMatchesFiniteDifferences(bool gelu, bool dropout) =>
        GradCheck.Check("cpu", v => FrozenFeedForward(v[0], gelu, dropout), [[2, 3, 5]], eps: 1e-3);

    /// <summary>The block with every weight and bias trainable: each gradient by finite differences (the hidden values rebuilt from fc1's output after GELU, kept after ReLU).</summary>
    [Theory]
    [InlineData(false, true)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    [InlineData(true, false)]
    public void TrainableFeedForwardMatchesFiniteDifferences(bool gelu, bool dropout) =>
        GradCheck.Check("cpu", v => F.FeedForward(v[0], v[1], v[2], v[3], v[4], gelu, 0.3f, 15UL, dropout), [[2, 3, 5], [9, 5], [9], [5, 9], [5]], eps: 1e-3);

    [Fact]
    public void FrozenRecomputeRefusesATrainableWeight()
    {
        using var scope = new GraphScope();
        var x = new Variable(Tensor.FromArray(Reference.Random(2 * 5, 1), [2, 5]), true);
        var trainable = new Variable(Tensor.FromArray(Reference.Random(9 * 5, 4), [9, 5]), true);
        using var bits = Tensor.Zeros([1]);
        var error = Assert.Throws<ArgumentException>(() => F.FrozenReluFeedForwardUnread(x, trainable, Constant(x, 3, 5, 9), bits, 0f, false));
        Assert.Contains("frozen", error.Message);
        x.Dispose(); trainable.Dispose();
    }

    /// <summary>
    /// The fused block computes the values and every gradient of Linear → ReluDropout/Relu or Gelu(→ Dropout) → Linear bit
    /// for bit (on a GPU device, up to the sign of a zero: the ReLU kernel's backward multiplies by 0 where the fused one
    /// selects), whatever trains: nothing, everything, fc2 alone, fc1 alone, the biases alone, or the weights with x
    /// frozen; with the value unread, the same gradients. 360 rows take a frozen ReLU block's forward and backward in row
    /// blocks, as a checkpoint's recompute does (256 and 104: at hidden width 70 the second block's mask bits start at word
    /// 560, and the last block ends inside a word); 257 rows are one block (a last row alone would take the GEMM's unpacked
    /// path, which sums in another order).
    /// </summary>
    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void FeedForwardIsTheThreeNodesBitForBit(string device)
    {
        var d = Device.Get(device);
        Assert.Equal(28, F.HiddenGradientRows(28, 24, 70));
        Assert.Equal(256, F.HiddenGradientRows(300, 24, 70));
        Assert.Equal(768, F.HiddenGradientRows(3072, 256, 1024));   // the small preset's encoder: dh as wide as dy
        Assert.Equal([(0, 256), (256, 104)], F.RowBlocksOf(360, 256, 24, 70));
        Assert.Equal([(0, 257)], F.RowBlocksOf(257, 256, 24, 70));
        Assert.Equal([(0, 768), (768, 768), (1536, 768), (2304, 768)], F.RowBlocksOf(3072, 768, 256, 1024));
        // ILGPU's CPU simulator runs a kernel thread by thread: there, the short case with nothing or everything training
        // (the rest, which changes only what the host asks the kernels for, took it 2 minutes).
        bool simulator = device == "ilgpu-cpu";
        (int Batch, int Length)[] sizes = simulator ? [(4, 7)] : [(4, 7), (6, 60), (1, 257)];
        string[] cases = simulator ? ["none", "all"] : ["none", "all", "fc2", "fc1", "biases", "x-frozen"];
        foreach (string trains in cases)
        foreach (var (batch, length) in sizes)
        foreach (bool gelu in new[] { false, true })
            foreach (bool dropout in new[] { true, false })
            {
                string[] names = ["x", "w1", "b1", "w2", "b2"];
                float[][] Run(int how)   // 0: three nodes, 1: fused, 2: fused with the value unread; returns y, then each gradient
                {
                    using var scope = new GraphScope();
                    Variable Weight(int seed, bool grad, params int[] shape) => new(Tensor.FromArray(Reference.Random((int)ShapeMath.Numel(shape), seed), shape, d), grad);
                    bool all = trains is "all" or "x-frozen", biases = all || trains == "biases";
                    bool w1 = all || trains == "fc1", w2 = all || trains == "fc2";
                    Variable[] v = [Weight(41, trains != "x-frozen", batch, length, 24), Weight(42, w1, 70, 24), Weight(43, w1 || biases, 70),
                        Weight(44, w2, 24, 70), Weight(45, w2 || biases, 24)];
                    Variable Hidden(Variable pre) => gelu ? (dropout ? F.Dropout(F.Gelu(pre), 0.25f, 16UL, training: true) : F.Gelu(pre))
                        : dropout ? F.ReluDropout(pre, 0.25f, 16UL, training: true) : F.Relu(pre);
                    var y = how == 0 ? F.Linear(Hidden(F.Linear(v[0], v[1], v[2])), v[3], v[4])
                        : F.FeedForward(v[0], v[1], v[2], v[3], v[4], gelu, 0.25f, 16UL, dropout, valueUnread: how == 2, rowBlocks: true);
                    F.Sum(F.Mul(y, Constant(v[0], 46, batch, length, 24))).Backward();
                    var result = new[] { y.Data.ToArray() }.Concat(v.Select(p => p.Grad?.ToArray() ?? [])).ToArray();
                    foreach (var p in v) p.Dispose();
                    return result;
                }
                var plain = Run(0);
                var fused = Run(1);
                var unread = Run(2);
                string what = $"{device} trains={trains} rows={batch * length} gelu={gelu} dropout={dropout}";
                Assert.Equal(plain[0].Length, unread[0].Length);   // its values are not the block's: nothing reads them
                for (int i = 0; i < plain[0].Length; i++)
                    Assert.True(BitConverter.SingleToInt32Bits(plain[0][i]) == BitConverter.SingleToInt32Bits(fused[0][i]), $"{what}: y[{i}] {fused[0][i]:R}, expected {plain[0][i]:R}");
                for (int g = 1; g < plain.Length; g++)
                {
                    Assert.Equal(plain[g].Length, fused[g].Length);
                    for (int i = 0; i < plain[g].Length; i++)
                        foreach (var other in new[] { fused[g], unread[g] })
                            Assert.True(device == "cpu" ? BitConverter.SingleToInt32Bits(plain[g][i]) == BitConverter.SingleToInt32Bits(other[i]) : plain[g][i] == other[i],
                                $"{what}: d{names[g - 1]}[{i}] {other[i]:R}, expected {plain[g][i]:R}");
                }
            }
    }

    /// <summary>Attention's fused dropout-and-product: values and both gradients bit for bit those of the two nodes.</summary>
    [Theory, MemberData(nameof(Reference.Devices), MemberType = typeof(Reference))]
    public void DropoutMatmulIsTheTwoNodesBitForBit(string device)
    {
        var d = Device.Get(device);
        (float[] Y, float[] Da, float[] Db) Run(bool fused, int[] aShape)
        {
            using var scope = new GraphScope();
            using var a = new Variable(Tensor.FromArray(Reference.Random((int)ShapeMath.Numel(aShape), 51), aShape, d), true);
            using var b = new Variable(Tensor.FromArray(Reference.Random(6 * 37 * 9, 52), [6, 37, 9], d), true);
            var y = fused ? F.DropoutMatmul(a, b, 0.2f, 18UL) : F.Matmul(F.Dropout(a, 0.2f, 18UL, training: true), b);
            F.Sum(F.Mul(y, Constant(a, 53, 6, 5, 9))).Backward();
            return (y.Data.ToArray(), a.Grad!.ToArray(), b.Grad!.ToArray());
        }
        // Attention's batched probabilities, and a rank-2 operand shared across the batch (masked at its own size).
        foreach (var aShape in new[] { new[] { 6, 5, 37 }, new[] { 5, 37 } })
        {
            var plain = Run(false, aShape);
            var fused = Run(true, aShape);
            Assert.Equal(plain.Y, fused.Y);
            Assert.Equal(plain.Da, fused.Da);
            Assert.Equal(plain.Db, fused.Db);
            Assert.Contains(0f, fused.Da);   // the mask reached a's gradient
        }
    }

    [Theory, MemberData(nameof(Cases))]
    public void MatchesFiniteDifferencesOnCpu(string name)
    {
        var (f, shapes) = Names[name];
        GradCheck.Check("cpu", f, shapes);
    }

    [Theory, MemberData(nameof(KernelCases))]
    public void KernelGradientsAgreeWithCpu(string device, string name)
    {
        var (f, shapes) = Names[name];
        float[][] Grads(string device)
        {
            var d = Device.Get(device);
            using var scope = new GraphScope();
            var inputs = shapes.Select((s, i) => new Variable(Tensor.FromArray(Reference.Random((int)ShapeMath.Numel(s), 7 + i), s, d), true)).ToArray();
            var y = f(inputs);
            var w = Variable.Constant(Tensor.FromArray(Reference.Random((int)y.Data.Length, 99), y.Data.Shape, d));
            F.Sum(F.Mul(y, w)).Backward();
            var grads = inputs.Select(v => v.Grad!.ToArray()).ToArray();
            foreach (var v in inputs) v.Dispose();
            return grads;
        }
        var cpu = Grads("cpu");
        var gpu = Grads(device);
        for (int i = 0; i < cpu.Length; i++) Reference.Close(cpu[i], gpu[i], 1e-4, 1e-3, $"{name} on {device}, input {i}");
    }

    [Fact]
    public void CrossEntropyMatchesFiniteDifferences()
    {
        int[] targets = [2, 0, -100, 4];
        GradCheck.Check("cpu", v => F.CrossEntropy(v[0], targets, -100, 0.1f), [[4, 5]]);
    }

    [Fact]
    public void EmbeddingGradientScatterAddsRepeatedIds()
    {
        int[] ids = [1, 3, 1, 0];
        GradCheck.Check("cpu", v => F.Embedding(v[0], ids, 2, 2), [[4, 3]]);
    }

    [Fact]
    public void FrozenOperandGetsNoGradientAndNoWork()
    {
        var d = Device.Cpu;
        using var scope = new GraphScope();
        using var w = new Parameter("w", Tensor.FromArray(Reference.Random(20, 1), [4, 5], d), trainable: false);
        using var x = new Variable(Tensor.FromArray(Reference.Random(15, 2), [3, 5], d), requiresGrad: true);
        F.Sum(F.Linear(x, w, null)).Backward();
        Assert.Null(w.Grad);
        Assert.NotNull(x.Grad);
    }

    [Fact]
    public void NoGradBuildsNoGraph()
    {
        using var scope = new GraphScope();
        using var x = new Variable(Tensor.FromArray([1f, 2f], [2], Device.Cpu), requiresGrad: true);
        using (Graph.NoGrad())
        {
            var y = F.Tanh(x);
            Assert.Null(y.Creator);
            Assert.Throws<InvalidOperationException>(() => F.Sum(y).Backward());
        }
    }
}
