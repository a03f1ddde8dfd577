using Nanolora.Autograd;
using Nanolora.Tensors;

namespace Nanolora.Tests.Autograd;

/// <summary>
/// <see cref="Variable.ReleaseIfUnread"/>: an op result no backward rule reads is freed before backward, and nothing a
/// rule reads ever is, so the gradients stay what they were.
/// </summary>
public class ReleaseTests
{
    static Parameter Param(string name, int seed, params int[] shape) =>
        new(name, Tensor.FromArray(Reference.Random((int)ShapeMath.Numel(shape), seed), shape));

    /// <summary>tanh(reshape(x·w1)ᵀ-ish)·w2 summed: a product whose output only a reshape (reads nothing) consumes.</summary>
    static (float[] Dx, float[] Dw1, float[] Dw2) Gradients(bool release)
    {
        using var x = Param("x", 1, 6, 5);
        using var w1 = Param("w1", 2, 5, 4);
        using var w2 = Param("w2", 3, 4, 3);
        using (new GraphScope())
        {
            var h = F.Matmul(x, w1);                      // matmul reads x and w1, not its output
            var view = F.Reshape(h, 3, 2, 4);
            var flat = F.Reshape(view, 6, 4);
            if (release)
            {
                Assert.True(view.ReleaseIfUnread());
                Assert.True(h.ReleaseIfUnread());
                Assert.True(h.Data.IsDisposed);
            }
            var t = F.Tanh(flat);                          // tanh reads its input: flat stays
            if (release) Assert.False(flat.ReleaseIfUnread());
            F.Sum(F.Matmul(t, w2)).Backward(freeValues: true);
        }
        return (x.Grad!.ToArray(), w1.Grad!.ToArray(), w2.Grad!.ToArray());
    }

    [Fact]
    public void ReleasedValuesLeaveTheGradientsBitForBit()
    {
        var kept = Gradients(release: false);
        var released = Gradients(release: true);
        Assert.Equal(kept.Dx, released.Dx);
        Assert.Equal(kept.Dw1, released.Dw1);
        Assert.Equal(kept.Dw2, released.Dw2);
    }

    [Fact]
    public void ValuesARuleReadsAreNeverFreed()
    {
        using var a = Param("a", 4, 3, 4);
        using var b = Param("b", 5, 4, 2);
        using var frozen = new Variable(Tensor.FromArray(Reference.Random(8, 6), [4, 2]));
        using var scope = new GraphScope();
        var probs = F.Softmax(F.Matmul(a, b));
        Assert.False(probs.ReleaseIfUnread());             // softmax's backward reads its output
        var product = F.Matmul(a, frozen);
        F.Tanh(product);
        Assert.False(product.ReleaseIfUnread());           // tanh's backward reads its input
        var constantOperand = F.Reshape(frozen, 4, 2);     // an op result without a node, which a product's backward reads
        F.Matmul(a, constantOperand);
        Assert.False(constantOperand.ReleaseIfUnread());
        Assert.False(a.ReleaseIfUnread());                 // a leaf
        Assert.False(frozen.ReleaseIfUnread());            // a constant the caller made
        Assert.False(a.Data.IsDisposed || frozen.Data.IsDisposed || product.Data.IsDisposed || probs.Data.IsDisposed);
    }

    [Fact]
    public void AValueSharingItsStorageWithAViewMayNotBeWrittenOver()
    {
        // Releasing a view only drops its reference; writing over it would write over the other tensor too.
        using var a = Param("a", 9, 3, 4);
        using var w = Param("w", 10, 4, 2);
        using var scope = new GraphScope();
        var product = F.Matmul(a, w);
        var view = F.Reshape(product, 2, 3);
        Assert.False(product.UnreadByBackward);
        Assert.False(view.UnreadByBackward);
        Assert.True(product.ReleaseIfUnread());            // the storage lives on in the view
        Assert.True(view.UnreadByBackward);                // which now holds it alone
        Assert.Equal(6, view.Data.ToArray().Length);
    }

    [Fact]
    public void WithoutGradientsAnOpResultIsFreedAndReadingItThrows()
    {
        // An activation checkpoint's forward runs without a graph: its intermediates go as soon as the layer is done with them.
        using var d = new CpuDevice();                     // its own ledger: tests run in parallel
        using var a = new Parameter("a", Tensor.FromArray(Reference.Random(12, 7), [3, 4], d));
        using var noGrad = Graph.NoGrad();
        using var scope = new GraphScope();
        var h = F.Tanh(a);
        Assert.Equal(2 * 12 * sizeof(float), d.Ledger.LiveBytes);
        Assert.True(h.ReleaseIfUnread());
        Assert.Equal(12 * sizeof(float), d.Ledger.LiveBytes);
        Assert.Throws<ObjectDisposedException>(() => F.Tanh(h));
        Assert.False(h.ReleaseIfUnread());                 // once
    }

    [Fact]
    public void ACheckpointsInputsAreKeptForItsRecompute()
    {
        using var a = Param("a", 8, 3, 4);
        using var scope = new GraphScope();
        var input = F.Reshape(a, 4, 3);                    // a reshape reads nothing, but the checkpoint's recompute does
        var output = ActivationCheckpoint.Run((v, _, _) => F.Tanh(v[0]), [input], []);
        Assert.False(input.ReleaseIfUnread());
        F.Sum(output).Backward(freeValues: true);
        Assert.NotNull(a.Grad);
    }
}
