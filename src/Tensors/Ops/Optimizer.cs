using System.Numerics;
using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>One AdamW step's scalars, folded on the host: decay = 1 − lr·wd, stepSize = lr/(1−β1^t), invBc2Sqrt = 1/√(1−β2^t).</summary>
internal readonly struct AdamWParams(int n, float beta1, float beta2, float eps, float decay, float stepSize, float invBc2Sqrt)
{
    public readonly int N = n;
    public readonly float Beta1 = beta1, Beta2 = beta2, Eps = eps, Decay = decay, StepSize = stepSize, InvBc2Sqrt = invBc2Sqrt;

    /// <summary>Updates one element (scalar form shared by the kernel and the CPU tail).</summary>
    public void Apply(ref float p, float g, ref float m, ref float v)
    {
        float mv = Beta1 * m + (1f - Beta1) * g;
        float vv = Beta2 * v + (1f - Beta2) * g * g;
        m = mv; v = vv;
        p = p * Decay - StepSize * mv / (XMath.Sqrt(vv) * InvBc2Sqrt + Eps);
    }
}

internal readonly struct SgdParams(int n, float lr, float momentum, float dampening, float weightDecay, bool nesterov, bool firstStep)
{
    public readonly int N = n, Nesterov = nesterov ? 1 : 0, FirstStep = firstStep ? 1 : 0;
    public readonly float Lr = lr, Momentum = momentum, Dampening = dampening, WeightDecay = weightDecay;

    /// <summary>torch.optim.SGD for one element; <paramref name="buf"/> is untouched when momentum is 0.</summary>
    public void Apply(ref float p, float g, ref float buf)
    {
        float d = WeightDecay != 0f ? g + WeightDecay * p : g;
        if (Momentum != 0f)
        {
            float b = FirstStep != 0 ? d : Momentum * buf + (1f - Dampening) * d;
            buf = b;
            d = Nesterov != 0 ? d + Momentum * b : b;
        }
        p -= Lr * d;
    }
}

public static partial class Ops
{
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWParams>> AdamWKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, AdamWParams>(AdamWGpu));
    static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, SgdParams>> SgdKernel =
        new(acc => acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, SgdParams>(SgdGpu));

    static void AdamWGpu(Index1D index, ArrayView<float> p, ArrayView<float> g, ArrayView<float> m, ArrayView<float> v, AdamWParams a)
    {
        for (int i = index; i < a.N; i += GridExtent()) a.Apply(ref p[i], g[i], ref m[i], ref v[i]);
    }

    static void SgdGpu(Index1D index, ArrayView<float> p, ArrayView<float> g, ArrayView<float> buf, SgdParams s)
    {
        for (int i = index; i < s.N; i += GridExtent())
        {
            // Without momentum there is no buffer; the parameter view stands in and is never written.
            float b = s.Momentum != 0f ? buf[i] : 0f;
            s.Apply(ref p[i], g[i], ref b);
            if (s.Momentum != 0f) buf[i] = b;
        }
    }

    /// <summary>
    /// One fused AdamW step in place, as torch.optim.AdamW: p ← p(1 − lr·wd); m ← β1·m + (1−β1)·g;
    /// v ← β2·v + (1−β2)·g²; p ← p − lr·(m/(1−β1^t)) / (√(v/(1−β2^t)) + ε). <paramref name="step"/> starts at 1.
    /// </summary>
    public static void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, float lr, float beta1, float beta2, float eps, float weightDecay, int step)
    {
        var device = SameDevice(nameof(AdamWStep), param, grad, m, v);
        SameShape(nameof(AdamWStep) + " (grad)", param, grad);
        SameShape(nameof(AdamWStep) + " (m)", param, m);
        SameShape(nameof(AdamWStep) + " (v)", param, v);
        if (step < 1) throw new ArgumentException($"AdamWStep: step counts from 1, got {step}.");
        int n = GpuLength(param, nameof(AdamWStep));
        var a = new AdamWParams(n, beta1, beta2, eps, 1f - lr * weightDecay,
            (float)(lr / (1.0 - Math.Pow(beta1, step))), (float)(1.0 / Math.Sqrt(1.0 - Math.Pow(beta2, step))));
        if (n == 0) return;
        if (device is IlgpuDevice gpu)
        {
            AdamWKernel.On(gpu)(LaunchThreads(gpu, n), param.View, grad.View, m.View, v.View, a);
            return;
        }
        var ps = param.HostArray; var gs = grad.HostArray; var ms = m.HostArray; var vs = v.HostArray;
        CpuParallel.For(n, 1 << 14, (start, end) =>
        {
            int i = (int)start, w = Vector<float>.Count;
            var b1 = new Vector<float>(a.Beta1); var b2 = new Vector<float>(a.Beta2);
            var c1 = new Vector<float>(1f - a.Beta1); var c2 = new Vector<float>(1f - a.Beta2);
            var decay = new Vector<float>(a.Decay); var stepSize = new Vector<float>(a.StepSize);
            var inv = new Vector<float>(a.InvBc2Sqrt); var epsV = new Vector<float>(a.Eps);
            for (; i <= end - w; i += w)
            {
                var g = new Vector<float>(gs, i);
                var mv = b1 * new Vector<float>(ms, i) + c1 * g;
                var vv = b2 * new Vector<float>(vs, i) + c2 * g * g;
                var pv = new Vector<float>(ps, i) * decay - stepSize * mv / (Vector.SquareRoot(vv) * inv + epsV);
                mv.CopyTo(ms, i); vv.CopyTo(vs, i); pv.CopyTo(ps, i);
            }
            for (; i < end; i++) a.Apply(ref ps[i], gs[i], ref ms[i], ref vs[i]);
        });
    }

    /// <summary>
    /// One SGD step in place, as torch.optim.SGD: d = g + wd·p; with momentum, buf = d on the first step,
    /// else momentum·buf + (1 − dampening)·d, and d = nesterov ? d + momentum·buf : buf; p ← p − lr·d.
    /// <paramref name="momentumBuffer"/> may be null when momentum is 0.
    /// </summary>
    public static void SgdStep(Tensor param, Tensor grad, Tensor? momentumBuffer, float lr, float momentum, float dampening, float weightDecay, bool nesterov, bool firstStep)
    {
        var device = SameDevice(nameof(SgdStep), param, grad);
        SameShape(nameof(SgdStep) + " (grad)", param, grad);
        if (momentum != 0f)
        {
            if (momentumBuffer == null) throw new ArgumentException($"SgdStep: momentum {momentum} needs a momentum buffer of shape {param.ShapeString}; got null.");
            SameDevice(nameof(SgdStep), param, momentumBuffer);
            SameShape(nameof(SgdStep) + " (momentum buffer)", param, momentumBuffer);
        }
        if (nesterov && (momentum <= 0f || dampening != 0f))
            throw new ArgumentException($"SgdStep: Nesterov momentum needs momentum > 0 and dampening 0 (got momentum {momentum}, dampening {dampening}).");
        int n = GpuLength(param, nameof(SgdStep));
        var s = new SgdParams(n, lr, momentum, dampening, weightDecay, nesterov, firstStep);
        if (n == 0) return;
        if (device is IlgpuDevice gpu)
        {
            SgdKernel.On(gpu)(LaunchThreads(gpu, n), param.View, grad.View, momentum != 0f ? momentumBuffer!.View : param.View, s);
            return;
        }
        var ps = param.HostArray; var gs = grad.HostArray; var bs = momentum != 0f ? momentumBuffer!.HostArray : null;
        CpuParallel.For(n, 1 << 15, (start, end) =>
        {
            float unused = 0f;
            for (int i = (int)start; i < end; i++) s.Apply(ref ps[i], gs[i], ref bs == null ? ref unused : ref bs[i]);
        });
    }

    /// <summary>Σ x² over all elements of all tensors (for clipping by global norm); partial sums are added in double on the host.</summary>
    public static double SumOfSquares(IEnumerable<Tensor> tensors)
    {
        double total = 0;
        foreach (var t in tensors)
        {
            var device = SameDevice(nameof(SumOfSquares), t);
            if (t.Length == 0) continue;
            if (device is IlgpuDevice gpu)
            {
                using var partials = ReducePartials<SquareSumReduce>(gpu, t);
                foreach (var p in partials.ToArray()) total += p;
                continue;
            }
            var xs = t.HostArray;
            var gate = new object();
            CpuParallel.For(t.Length, 1 << 16, (start, end) =>
            {
                double part = TensorPrimitives.SumOfSquares(xs.AsSpan((int)start, (int)(end - start)));
                lock (gate) total += part;
            });
        }
        return total;
    }
}
