using ILGPU;
using ILGPU.Runtime;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Nanolora.Tensors;

/// <summary>Launch parameters of the mask-bit kernels: the element count, the keep scale, and select (1) or multiply (0).</summary>
internal readonly struct MaskBitsParams(int n, float scale, int select)
{
    public readonly int N = n, Select = select;
    public readonly float Scale = scale;
}

/// <summary>
/// A ReLU (and dropout) mask as one bit per element, 32 to a word: what a frozen feed-forward block's backward needs of its
/// hidden layer, at 1/32 of a float mask's bytes. The words live in a Float32 tensor as raw bit patterns (no arithmetic
/// ever touches them), [⌈n/32⌉], bit i%32 of word i/32 for element i.
/// </summary>
public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, int>> PackPositiveKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int>(PackPositiveGpu));

    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MaskBitsParams>> MulByBitsKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, MaskBitsParams>(MulByBitsGpu));

    static void PackPositiveGpu(Index1D index, ArrayView<float> y, ArrayView<float> bits, int n)
    {
        int words = (n + 31) / 32;
        for (int w = index; w < words; w += GridExtent())
        {
            uint word = 0;
            for (int j = 0; j < 32; j++)
            {
                int i = w * 32 + j;
                if (i < n && y[i] > 0f) word |= 1u << j;
            }
            bits[w] = Interop.IntAsFloat(word);
        }
    }

    static void MulByBitsGpu(Index1D index, ArrayView<float> dy, ArrayView<float> bits, ArrayView<float> dx, MaskBitsParams p)
    {
        for (int i = index; i < p.N; i += GridExtent())
        {
            bool on = ((Interop.FloatAsInt(bits[i >> 5]) >> (i & 31)) & 1u) != 0;
            float g = dy[i];
            dx[i] = p.Select != 0 ? (on ? g : 0f) : g * (on ? p.Scale : 0f);
        }
    }

    /// <summary>
    /// One bit per element of <paramref name="y"/>, set where it is greater than zero (not for NaN): after ReLU(+dropout)
    /// that is exactly where the derivative is not zero, as ReLU's own backward (x &gt; 0) decides it. Returns [⌈n/32⌉] words of raw bits (read them only with <see cref="MulByBits"/>).
    /// </summary>
    public static Tensor PackPositive(Tensor y)
    {
        var device = SameDevice(nameof(PackPositive), y);
        int n = GpuLength(y, nameof(PackPositive)), words = (n + 31) / 32;
        var bits = Tensor.Empty([words], device);
        if (n == 0) return bits;
        if (device is IlgpuDevice gpu)
        {
            PackPositiveKernel.On(gpu)(LaunchThreads(gpu, words), y.View, bits.View, n);
            return bits;
        }
        var ys = y.HostArray;
        CpuParallel.For(words, 1 << 10, (start, end) =>
        {
            var target = MemoryMarshal.Cast<float, uint>(bits.HostArray.AsSpan());
            for (long w = start; w < end; w++)
            {
                long first = w * 32;
                int count = (int)Math.Min(32, n - first);
                uint word;
                if (count == 32 && Vector256.IsHardwareAccelerated)
                {
                    // Four 8-lane compares, each giving 8 bits of the word.
                    ref float y0 = ref ys[first];
                    word = 0;
                    for (int q = 0; q < 4; q++)
                    {
                        var v = Vector256.LoadUnsafe(ref y0, (nuint)(8 * q));
                        word |= Vector256.ExtractMostSignificantBits(Vector256.GreaterThan(v, Vector256<float>.Zero)) << (8 * q);
                    }
                }
                else
                {
                    word = 0;
                    for (int j = 0; j < count; j++) if (ys[first + j] > 0f) word |= 1u << j;
                }
                target[(int)w] = word;
            }
        });
        return bits;
    }

    /// <summary>
    /// dy where <paramref name="bits"/> (from <see cref="PackPositive"/> over a tensor of dy's size) is set, zero elsewhere:
    /// dy·scale and dy·0 when <paramref name="select"/> is false (ReLU-dropout's backward, Mul(dy, mask), to the bit), dy
    /// itself and +0 when true (ReLU's backward on the CPU).
    /// </summary>
    /// <param name="dy">The gradient to mask.</param>
    /// <param name="bits">The mask's words.</param>
    /// <param name="scale">The value of a set bit when multiplying.</param>
    /// <param name="select">Select dy or +0 instead of multiplying.</param>
    /// <param name="output">Where to write (dy itself for in place: element i reads and writes index i only); new when null.</param>
    public static Tensor MulByBits(Tensor dy, Tensor bits, float scale, bool select, Tensor? output = null)
    {
        var device = SameDevice(nameof(MulByBits), dy, bits);
        if (output != null) { SameDevice(nameof(MulByBits), dy, output); SameShape(nameof(MulByBits), dy, output); }
        int n = GpuLength(dy, nameof(MulByBits));
        if (bits.Length != (n + 31) / 32) throw new ArgumentException($"{nameof(MulByBits)}: {bits.Length} mask words for {n} elements, expected {(n + 31) / 32}.");
        var dx = output ?? Tensor.Empty(dy.Shape, device);
        if (n == 0) return dx;
        var prm = new MaskBitsParams(n, scale, select ? 1 : 0);
        if (device is IlgpuDevice gpu)
        {
            MulByBitsKernel.On(gpu)(LaunchThreads(gpu, n), dy.View, bits.View, dx.View, prm);
            return dx;
        }
        var gs = dy.HostArray; var ws = bits.HostArray; var ds = dx.HostArray;
        CpuParallel.For(n, 1 << 14, (start, end) =>
        {
            var words = MemoryMarshal.Cast<float, uint>(ws.AsSpan());
            long i = start;
            for (; i < end && (i & 7) != 0; i++) ds[i] = Masked(gs[i], words, i, scale, select);
            if (Vector256.IsHardwareAccelerated)
            {
                // Eight elements per step: their eight bits spread over the lanes and compared.
                var lanes = Vector256.Create(1u, 2, 4, 8, 16, 32, 64, 128);
                var keep = Vector256.Create(scale);
                for (; i <= end - 8; i += 8)
                {
                    uint octet = (words[(int)(i >> 5)] >> (int)(i & 31)) & 0xFF;
                    var on = (~Vector256.Equals(Vector256.Create(octet) & lanes, Vector256<uint>.Zero)).AsSingle();
                    var g = Vector256.LoadUnsafe(ref gs[i]);
                    (select ? Vector256.ConditionalSelect(on, g, Vector256<float>.Zero) : g * Vector256.ConditionalSelect(on, keep, Vector256<float>.Zero))
                        .StoreUnsafe(ref ds[i]);
                }
            }
            for (; i < end; i++) ds[i] = Masked(gs[i], words, i, scale, select);
        });
        return dx;
    }

    static float Masked(float g, ReadOnlySpan<uint> words, long i, float scale, bool select)
    {
        bool on = ((words[(int)(i >> 5)] >> (int)(i & 31)) & 1) != 0;
        return select ? (on ? g : 0f) : g * (on ? scale : 0f);
    }
}
