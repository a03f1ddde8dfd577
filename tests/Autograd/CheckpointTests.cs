using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests.Autograd;

/// <summary>
/// ActivationCheckpoint on small functions: the same values and gradients as the plain function (bit for bit), dropout
/// streams rewound for the recompute and left where the plain run leaves them, parameters reached when no input needs
/// a gradient, values read from outside, nesting, no-grad use, a function that changes between forward and recompute.
/// </summary>
public class CheckpointTests
{
    /// <summary>A dropout seed counter as the models keep one (SplitMix64 of a counter), reporting its draws.</summary>
    sealed class Stream(ulong state) : ISeedState
    {
        public ulong State { get; set; } = state;
        public ulong Next()
        {
            ActivationCheckpoint.OnDraw(this);
            ulong z = State += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            return z ^ (z >> 31);
        }
    }

    static Tensor Random(int seed, params int[] shape) => TensorRandom.Uniform(shape, -1f, 1f, (ulong)seed, Device.Cpu, MemoryCategory.Activation);

    /// <summary>A block with two parameters, a residual, a nonlinearity and dropout: x [N, 8] → [N, 8].</summary>
    sealed class Block(int seed, Stream stream) : IDisposable
    {
        public readonly Parameter W = new("w", TensorRandom.Uniform([8, 8], -0.5f, 0.5f, (ulong)seed, Device.Cpu));
        public readonly Parameter B = new("b", TensorRandom.Uniform([8], -0.5f, 0.5f, (ulong)seed + 1, Device.Cpu));
        public Variable Forward(Variable x) =>
            F.Add(x, F.Dropout(F.Tanh(F.Linear(x, W, B)), 0.3f, stream.Next(), training: true));
        public void Dispose() { W.Dispose(); B.Dispose(); }
    }

    /// <summary>Three blocks on x, checkpointed or not; returns the loss, dL/dx and every parameter gradient, and the stream's final counter.</summary>
    static (float Loss, float[] Dx, float[][] Grads, ulong Stream) Run(bool checkpoint, bool inputNeedsGrad = true, bool freeValues = false)
    {
        var stream = new Stream(7);
        var blocks = Enumerable.Range(0, 3).Select(i => new Block(10 * i + 1, stream)).ToArray();
        using var x = new Variable(Random(3, 5, 8), requiresGrad: inputNeedsGrad);
        float loss;
        using (new GraphScope())
        {
            var h = x;
            foreach (var b in blocks) h = checkpoint ? ActivationCheckpoint.Run(v => b.Forward(v[0]), h) : b.Forward(h);
            var l = F.Sum(F.Mul(h, h));
            loss = l.Data.Item();
            l.Backward(freeValues);
            if (freeValues)
            {
                // Every intermediate value is gone once backward has passed it; the loss stays readable.
                Assert.True(h.Data.IsDisposed);
                Assert.Equal(loss, l.Data.Item());
            }
        }
        var grads = blocks.SelectMany(b => new[] { b.W.Grad!.ToArray(), b.B.Grad!.ToArray() }).ToArray();
        var dx = inputNeedsGrad ? x.Grad!.ToArray() : [];
        foreach (var b in blocks) b.Dispose();
        return (loss, dx, grads, stream.State);
    }

    static void AssertBitwise(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            if (BitConverter.SingleToInt32Bits(expected[i]) != BitConverter.SingleToInt32Bits(actual[i]))
                Assert.Fail($"{what}[{i}]: expected {expected[i]:R}, got {actual[i]:R}");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FreeingValuesDuringBackwardChangesNoGradient(bool checkpoint)
    {
        var kept = Run(checkpoint);
        var freed = Run(checkpoint, freeValues: true);
        AssertBitwise(kept.Dx, freed.Dx, "dx");
        for (int i = 0; i < kept.Grads.Length; i++) AssertBitwise(kept.Grads[i], freed.Grads[i], $"grad {i}");
    }

    [Fact]
    public void GradientsLossAndStreamAreThoseOfThePlainFunction()
    {
        var plain = Run(checkpoint: false);
        var ckpt = Run(checkpoint: true);
        Assert.Equal(BitConverter.SingleToInt32Bits(plain.Loss), BitConverter.SingleToInt32Bits(ckpt.Loss));
        AssertBitwise(plain.Dx, ckpt.Dx, "dx");
        for (int i = 0; i < plain.Grads.Length; i++) AssertBitwise(plain.Grads[i], ckpt.Grads[i], $"grad {i}");
        // Three forward draws; the recompute's draws are rewound, so the stream ends where the plain run's does.
        Assert.Equal(plain.Stream, ckpt.Stream);
        Assert.Equal(unchecked(7 + 3 * 0x9E3779B97F4A7C15UL), ckpt.Stream);
    }

    [Fact]
    public void ParametersGetGradientsWhenNoInputNeedsOne()
    {
        // torch.utils.checkpoint's reentrant variant loses these: the output must need a gradient because f's parameters do.
        var plain = Run(checkpoint: false, inputNeedsGrad: false);
        var ckpt = Run(checkpoint: true, inputNeedsGrad: false);
        for (int i = 0; i < plain.Grads.Length; i++) AssertBitwise(plain.Grads[i], ckpt.Grads[i], $"grad {i}");
    }

    [Fact]
    public void KeepsOnlyInputAndOutputAfterTheForward()
    {
        using var w = new Parameter("w", TensorRandom.Uniform([64, 64], -0.1f, 0.1f, 5, Device.Cpu));
        using var x = new Variable(Random(4, 32, 64), requiresGrad: true);
        Variable Deep(Variable h) { for (int i = 0; i < 8; i++) h = F.Tanh(F.Linear(h, w, null)); return h; }
        long Held(bool checkpoint)
        {
            using var scope = new GraphScope();
            long before = Device.Cpu.Ledger.Live(MemoryCategory.Activation);
            var y = checkpoint ? ActivationCheckpoint.Run(v => Deep(v[0]), x) : Deep(x);
            return Device.Cpu.Ledger.Live(MemoryCategory.Activation) - before;
        }
        long oneValue = 32 * 64 * sizeof(float);
        Assert.Equal(oneValue, Held(checkpoint: true));
        Assert.True(Held(checkpoint: false) >= 16 * oneValue, "the plain function keeps its 16 intermediate values");
    }

    [Fact]
    public void WithoutAGraphItIsTheFunctionItself()
    {
        using var w = new Parameter("w", Random(6, 4, 4));
        using var x = new Variable(Random(7, 2, 4), requiresGrad: true);
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        int calls = 0;
        var y = ActivationCheckpoint.Run(v => { calls++; return F.Linear(v[0], w, null); }, x);
        Assert.False(y.RequiresGrad);
        Assert.Equal(1, calls);
        using var plain = new GraphScope();
        AssertBitwise(F.Linear(x, w, null).Data.ToArray(), y.Data.ToArray(), "y");
    }

    [Fact]
    public void NestedCheckpointsGiveThePlainGradients()
    {
        var stream = new Stream(11);
        using var outer = new Block(1, stream);
        using var inner = new Block(2, stream);
        using var x = new Variable(Random(8, 3, 8), requiresGrad: true);
        (float[][] Grads, ulong Stream) Grads(bool checkpoint)
        {
            stream.State = 11;
            using (new GraphScope())
            {
                Variable Both(Variable h) => outer.Forward(checkpoint ? ActivationCheckpoint.Run(v => inner.Forward(v[0]), h) : inner.Forward(h));
                var y = checkpoint ? ActivationCheckpoint.Run(v => Both(v[0]), x) : Both(x);
                F.Sum(F.Mul(y, y)).Backward();
            }
            var g = new[] { x.Grad!.ToArray(), outer.W.Grad!.ToArray(), inner.W.Grad!.ToArray(), inner.B.Grad!.ToArray() };
            x.ZeroGrad(); outer.W.ZeroGrad(); outer.B.ZeroGrad(); inner.W.ZeroGrad(); inner.B.ZeroGrad();
            return (g, stream.State);
        }
        var plain = Grads(false);
        var ckpt = Grads(true);
        for (int i = 0; i < plain.Grads.Length; i++) AssertBitwise(plain.Grads[i], ckpt.Grads[i], $"gradient {i}");
        Assert.Equal(plain.Stream, ckpt.Stream);
    }

    [Fact]
    public void ValuesReadFromOutsideGetTheirGradientsBeforeTheirOwnRulesRun()
    {
        // f reads `shared` through its closure: the checkpoint must make it an input of its node, or the outer backward
        // could run shared's rule (into w) before the recompute adds f's part of dL/dshared.
        using var w = new Parameter("w", Random(9, 6, 6));
        using var x = new Variable(Random(10, 4, 6), requiresGrad: true);
        float[][] Grads(bool checkpoint)
        {
            using (new GraphScope())
            {
                var shared = F.Tanh(F.Linear(x, w, null));
                Variable G(Variable h) => F.Mul(F.Sigmoid(h), shared);
                var y = checkpoint ? ActivationCheckpoint.Run(v => G(v[0]), x) : G(x);
                F.Sum(F.Add(y, shared)).Backward();
            }
            var g = new[] { x.Grad!.ToArray(), w.Grad!.ToArray() };
            x.ZeroGrad(); w.ZeroGrad();
            return g;
        }
        var plain = Grads(false);
        var ckpt = Grads(true);
        AssertBitwise(plain[0], ckpt[0], "dx");
        AssertBitwise(plain[1], ckpt[1], "dw");
    }

    [Fact]
    public void AFunctionThatChangesBetweenForwardAndRecomputeIsRefused()
    {
        using var w = new Parameter("w", Random(12, 4, 4));
        using var x = new Variable(Random(13, 2, 4), requiresGrad: true);
        using var scope = new GraphScope();
        int calls = 0;
        var other = F.Tanh(F.Linear(x, w, null));
        // The recompute reads `other`, a value with its own graph that the forward never read: its gradient would come too late.
        var y = ActivationCheckpoint.Run(v => calls++ == 0 ? F.Linear(v[0], w, null) : F.Mul(F.Linear(v[0], w, null), other), x);
        var error = Assert.Throws<InvalidOperationException>(() => F.Sum(y).Backward());
        Assert.Contains("recompute read", error.Message);
    }

    [Fact]
    public void ConstantsOutliveTheirOwnerUntilBackward()
    {
        using var w = new Parameter("w", Random(14, 4, 4));
        using var x = new Variable(Random(15, 2, 4), requiresGrad: true);
        float[] Dw(bool checkpoint)
        {
            using (new GraphScope())
            {
                var mask = Random(16, 2, 4);
                Variable G(Variable h, Tensor m) => F.Mul(F.Linear(h, w, null), Variable.Constant(m.Reshape(m.ShapeArray())));
                var y = checkpoint ? ActivationCheckpoint.Run((v, t) => G(v[0], t[0]), [x], [mask]) : G(x, mask);
                mask.Dispose();   // as the models dispose their padding masks before backward
                F.Sum(y).Backward();
            }
            var g = w.Grad!.ToArray();
            w.ZeroGrad(); x.ZeroGrad();
            return g;
        }
        AssertBitwise(Dw(false), Dw(true), "dw");
    }
    /// <summary>
    /// The recompute is told it is one (its output's value goes unread), and a last linear left unevaluated there
    /// (<c>valueUnread</c>) changes no gradient: its backward reads x and W, never y. The forward's value is the real one.
    /// </summary>
    [Fact]
    public void ARecomputeMaySkipItsUnreadLastProduct()
    {
        using var w = new Parameter("w", Random(20, 6, 8));
        using var w2 = new Parameter("w2", Random(21, 8, 6));
        using var b2 = new Parameter("b2", Random(22, 8));
        using var x = new Variable(Random(23, 5, 8), requiresGrad: true);
        var seen = new List<bool>();
        Variable G(Variable h, bool unread) => F.Add(h, F.Linear(F.Tanh(F.Linear(h, w, null)), w2, b2, valueUnread: unread));
        (float[] Y, float[][] Grads) Step(bool checkpoint)
        {
            float[] y;
            using (new GraphScope())
            {
                var v = checkpoint ? ActivationCheckpoint.Run((v, _, recompute) => { seen.Add(recompute); return G(v[0], recompute); }, [x]) : G(x, false);
                y = v.Data.ToArray();
                F.Sum(F.Mul(v, v)).Backward();
            }
            var grads = new[] { x.Grad!.ToArray(), w.Grad!.ToArray(), w2.Grad!.ToArray(), b2.Grad!.ToArray() };
            x.ZeroGrad(); w.ZeroGrad(); w2.ZeroGrad(); b2.ZeroGrad();
            return (y, grads);
        }
        var plain = Step(false);
        var ckpt = Step(true);
        Assert.Equal([false, true], seen);
        AssertBitwise(plain.Y, ckpt.Y, "y");
        for (int i = 0; i < plain.Grads.Length; i++) AssertBitwise(plain.Grads[i], ckpt.Grads[i], $"grad {i}");
        // And the skip is real: the unread product's value is left zero.
        using (new GraphScope()) Assert.All(F.Linear(x, w, null, valueUnread: true).Data.ToArray(), v => Assert.Equal(0f, v));
    }
}
