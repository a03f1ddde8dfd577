using System.Numerics.Tensors;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// LayerNorm and RMSNorm over the last axis C. Both share one set of kernels with an <c>Rms</c> flag:
/// RMSNorm is LayerNorm with the mean fixed at 0 and no bias. Backward with x̂ = (x − μ)·r, g = dy ⊙ γ:
/// dx = r·(g − mean(g) − x̂·mean(g ⊙ x̂)) (RMS drops the mean(g) term), dγ = Σ_rows dy ⊙ x̂, dβ = Σ_rows dy.
/// </summary>
public static partial class Ops
{
    internal struct NormParams
    {
        public int C, Rows, Rms, HasBeta, Blocks, RowsPerBlock;
        public float Eps;
    }

    /// <summary>Rows summed by one work item of the parameter-gradient pass (fixed, so results are deterministic).</summary>
    const int NormRowsPerBlock = 32;

    static class NormKernels
    {
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>> Forward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>(ForwardKernel));
        public static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>> Backward =
            new(a => a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>(BackwardKernel));
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>> ParamPartials =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>(ParamPartialsKernel));
        public static readonly Kernel<Action<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>> ParamFinish =
            new(a => a.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, ArrayView<float>, NormParams>(ParamFinishKernel));

        // One group per row. mean is written only for LayerNorm (for RMS it aliases rstd and is skipped).
        static void ForwardKernel(ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> beta, ArrayView<float> y,
            ArrayView<float> mean, ArrayView<float> rstd, NormParams p)
        {
            // One shared buffer per reduction (RowReduce explains why).
            var meanScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var varScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int row = Grid.IdxX, at = row * p.C;
            float mu = 0f;
            if (p.Rms == 0)
            {
                float sum = 0f;
                for (int j = Group.IdxX; j < p.C; j += Group.DimX) sum += x[at + j];
                mu = RowReduce.Sum(meanScratch, sum) / p.C;
            }
            float sq = 0f;
            for (int j = Group.IdxX; j < p.C; j += Group.DimX) { float d = x[at + j] - mu; sq += d * d; }
            float r = 1f / XMath.Sqrt(RowReduce.Sum(varScratch, sq) / p.C + p.Eps);
            for (int j = Group.IdxX; j < p.C; j += Group.DimX)
                y[at + j] = (x[at + j] - mu) * r * gamma[j] + (p.HasBeta != 0 ? beta[j] : 0f);
            if (Group.IdxX == 0)
            {
                if (p.Rms == 0) mean[row] = mu;
                rstd[row] = r;
            }
        }

        static void BackwardKernel(ArrayView<float> dy, ArrayView<float> x, ArrayView<float> gamma, ArrayView<float> mean,
            ArrayView<float> rstd, ArrayView<float> dx, NormParams p)
        {
            var sgScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            var sgxScratch = SharedMemory.Allocate<float>(RowReduce.MaxGroup);
            int row = Grid.IdxX, at = row * p.C;
            float mu = p.Rms == 0 ? mean[row] : 0f, r = rstd[row];
            float sg = 0f, sgx = 0f;
            for (int j = Group.IdxX; j < p.C; j += Group.DimX)
            {
                float g = dy[at + j] * gamma[j];
                sg += g;
                sgx += g * (x[at + j] - mu) * r;
            }
            sg = p.Rms == 0 ? RowReduce.Sum(sgScratch, sg) / p.C : 0f;
            sgx = RowReduce.Sum(sgxScratch, sgx) / p.C;
            for (int j = Group.IdxX; j < p.C; j += Group.DimX)
                dx[at + j] = r * (dy[at + j] * gamma[j] - sg - (x[at + j] - mu) * r * sgx);
        }

        // Stage 1: item (block, c) sums dy·x̂ and dy over its block of rows into partial[block, c] and partial[Blocks + block, c].
        static void ParamPartialsKernel(Index1D index, ArrayView<float> dy, ArrayView<float> x, ArrayView<float> mean,
            ArrayView<float> rstd, ArrayView<float> partial, NormParams p)
        {
            int n = p.Blocks * p.C;
            for (int i = index; i < n; i += Grid.DimX * Group.DimX)
            {
                int block = i / p.C, c = i - block * p.C;
                int r0 = block * p.RowsPerBlock, r1 = XMath.Min(p.Rows, r0 + p.RowsPerBlock);
                float dg = 0f, db = 0f;
                for (int r = r0; r < r1; r++)
                {
                    float d = dy[r * p.C + c];
                    float mu = p.Rms == 0 ? mean[r] : 0f;
                    dg += d * (x[r * p.C + c] - mu) * rstd[r];
                    db += d;
                }
                partial[i] = dg;
                partial[n + i] = db;
            }
        }

        // Stage 2: column c adds its block partials in block order.
        static void ParamFinishKernel(Index1D index, ArrayView<float> partial, ArrayView<float> dGamma, ArrayView<float> dBeta, NormParams p)
        {
            int n = p.Blocks * p.C;
            for (int c = index; c < p.C; c += Grid.DimX * Group.DimX)
            {
                float dg = 0f, db = 0f;
                for (int b = 0; b < p.Blocks; b++) { dg += partial[b * p.C + c]; db += partial[n + b * p.C + c]; }
                dGamma[c] = dg;
                if (p.HasBeta != 0) dBeta[c] = db;
            }
        }
    }

    /// <summary>y = (x − mean)·rstd·γ + β over the last axis C. x [..., C], γ/β [C]; saves mean and rstd [rows].</summary>
    public static Tensor LayerNorm(Tensor x, Tensor gamma, Tensor? beta, float eps, out Tensor mean, out Tensor rstd)
    {
        var y = NormForward("LayerNorm", x, gamma, beta, eps, rms: false, out var m, out rstd);
        mean = m!;
        return y;
    }

    /// <summary>y = x·rstd·γ with rstd = 1/√(mean(x²) + eps) over the last axis C. x [..., C], γ [C]; saves rstd [rows].</summary>
    public static Tensor RmsNorm(Tensor x, Tensor gamma, float eps, out Tensor rstd) =>
        NormForward("RmsNorm", x, gamma, null, eps, rms: true, out _, out rstd);

    /// <summary>dx [..., C]; dγ, dβ [C] when <paramref name="computeParamGrads"/> (else null, and that work is skipped).</summary>
    public static Tensor LayerNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, bool computeParamGrads,
        out Tensor? dGamma, out Tensor? dBeta) =>
        NormBackward("LayerNormBackward", dy, x, gamma, mean, rstd, rms: false, computeParamGrads, out dGamma, out dBeta);

    /// <summary>dx [..., C]; dγ [C] when <paramref name="computeParamGrads"/> (else null).</summary>
    public static Tensor RmsNormBackward(Tensor dy, Tensor x, Tensor gamma, Tensor rstd, bool computeParamGrads, out Tensor? dGamma) =>
        NormBackward("RmsNormBackward", dy, x, gamma, null, rstd, rms: true, computeParamGrads, out dGamma, out _);

    static int NormWidth(string op, Tensor x, Tensor gamma, Tensor? beta)
    {
        if (x.Rank < 1) throw new ArgumentException($"{op}: x must have at least one axis, got shape {x.ShapeString}.");
        int c = x.Dim(-1);
        if (gamma.Rank != 1 || gamma.Dim(0) != c) throw new ArgumentException($"{op}: gamma must have shape [{c}] (x's last axis), got {gamma.ShapeString}.");
        if (beta != null && (beta.Rank != 1 || beta.Dim(0) != c)) throw new ArgumentException($"{op}: beta must have shape [{c}] (x's last axis), got {beta.ShapeString}.");
        return c;
    }

    static Tensor NormForward(string op, Tensor x, Tensor gamma, Tensor? beta, float eps, bool rms, out Tensor? mean, out Tensor rstd)
    {
        var device = beta is null ? SameDevice(op, x, gamma) : SameDevice(op, x, gamma, beta);
        int c = NormWidth(op, x, gamma, beta);
        if (!(eps >= 0f)) throw new ArgumentException($"{op}: eps must be >= 0, got {eps}.");
        int rows = c == 0 ? 0 : (int)(x.Length / c);
        var y = Tensor.Empty(x.Shape, device);
        mean = rms ? null : Tensor.Empty([rows], device);
        rstd = Tensor.Empty([rows], device);
        if (rows == 0) { mean?.Fill(0f); rstd.Fill(0f); return y; }

        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, op);
            var p = new NormParams { C = c, Rows = rows, Rms = rms ? 1 : 0, HasBeta = beta != null ? 1 : 0, Eps = eps };
            NormKernels.Forward.On(gpu)(RowReduce.PerRow(gpu, rows, c), x.View, gamma.View, (beta ?? gamma).View, y.View, (mean ?? rstd).View, rstd.View, p);
            return y;
        }

        var xs = x.HostArray; var ys = y.HostArray; var g = gamma.HostArray; var bs = beta?.HostArray;
        var ms = mean?.HostArray; var rs = rstd.HostArray;
        CpuParallel.For(rows, RowGrain(c), (r0, r1) =>
        {
            var gs = g.AsSpan(0, c);
            for (long r = r0; r < r1; r++)
            {
                var xr = xs.AsSpan((int)(r * c), c); var yr = ys.AsSpan((int)(r * c), c);
                // Three passes over an L1-resident row: the mean, the centered sum of squares (two-pass, so a large
                // mean does not cancel the variance away), then y in one fused sweep.
                float mu = rms ? 0f : TensorPrimitives.Sum(xr) / c;
                float rr = 1f / MathF.Sqrt(NormRows.CenteredSquares(xr, mu) / c + eps);
                NormRows.Normalize(xr, mu, rr, gs, bs != null ? bs.AsSpan(0, c) : default, yr);
                if (ms != null) ms[r] = mu;
                rs[r] = rr;
            }
        });
        return y;
    }

    static Tensor NormBackward(string op, Tensor dy, Tensor x, Tensor gamma, Tensor? mean, Tensor rstd, bool rms, bool computeParamGrads,
        out Tensor? dGamma, out Tensor? dBeta)
    {
        var device = mean is null ? SameDevice(op, dy, x, gamma, rstd) : SameDevice(op, dy, x, gamma, mean, rstd);
        SameShape(op, dy, x);
        int c = NormWidth(op, x, gamma, null);
        int rows = c == 0 ? 0 : (int)(x.Length / c);
        if (rstd.Length != rows || (mean != null && mean.Length != rows))
            throw new ArgumentException($"{op}: mean/rstd must hold one value per row ({rows}), got {mean?.ShapeString ?? "none"} and {rstd.ShapeString}.");
        var dx = Tensor.Empty(x.Shape, device);
        dGamma = computeParamGrads ? Tensor.Empty([c], device) : null;
        dBeta = computeParamGrads && !rms ? Tensor.Empty([c], device) : null;
        int blocks = (rows + NormRowsPerBlock - 1) / NormRowsPerBlock;
        if (rows == 0) { dGamma?.Fill(0f); dBeta?.Fill(0f); return dx; }

        if (device is IlgpuDevice gpu)
        {
            GpuLength(x, op);
            var p = new NormParams { C = c, Rows = rows, Rms = rms ? 1 : 0, HasBeta = dBeta != null ? 1 : 0, Blocks = blocks, RowsPerBlock = NormRowsPerBlock };
            var meanView = (mean ?? rstd).View;
            NormKernels.Backward.On(gpu)(RowReduce.PerRow(gpu, rows, c), dy.View, x.View, gamma.View, meanView, rstd.View, dx.View, p);
            if (dGamma != null)
            {
                using var partial = Tensor.Empty([2 * blocks * c], device);
                NormKernels.ParamPartials.On(gpu)(LaunchThreads(gpu, (long)blocks * c), dy.View, x.View, meanView, rstd.View, partial.View, p);
                NormKernels.ParamFinish.On(gpu)(LaunchThreads(gpu, c), partial.View, dGamma.View, (dBeta ?? dGamma).View, p);
            }
            return dx;
        }

        var dys = dy.HostArray; var xs = x.HostArray; var g = gamma.HostArray; var ms = mean?.HostArray; var rs = rstd.HostArray;
        var dxs = dx.HostArray;
        // Per block of rows: partial dγ at [2·block], partial dβ at [2·block + 1]; summed in block order below.
        // Pooled, not a fresh array: 2·blocks·c floats pass the large-object threshold at training sizes, and a new one in
        // every layer's backward made the GC's gen-2 collections part of full fine-tuning's step.
        using var partialTensor = computeParamGrads ? Tensor.Zeros([2 * blocks * c], device) : null;
        float[]? partials = partialTensor?.HostArray;
        CpuParallel.For(blocks, Math.Max(1, RowGrain(c) / NormRowsPerBlock), (b0, b1) =>
        {
            var xh = new float[c]; var gd = new float[c];
            var gs = g.AsSpan(0, c);
            for (long b = b0; b < b1; b++)
            {
                long rEnd = Math.Min(rows, (b + 1) * NormRowsPerBlock);
                for (long r = b * NormRowsPerBlock; r < rEnd; r++)
                {
                    var xr = xs.AsSpan((int)(r * c), c); var dyr = dys.AsSpan((int)(r * c), c); var dxr = dxs.AsSpan((int)(r * c), c);
                    float mu = ms != null ? ms[r] : 0f, rr = rs[r];
                    TensorPrimitives.Subtract(xr, mu, xh);
                    TensorPrimitives.Multiply(xh, rr, xh);
                    TensorPrimitives.Multiply(dyr, gs, gd);
                    float sgx = TensorPrimitives.Dot(gd, xh) / c;
                    TensorPrimitives.MultiplyAdd(xh, -sgx, gd, dxr);
                    if (!rms) TensorPrimitives.Subtract(dxr, TensorPrimitives.Sum(gd) / c, dxr);
                    TensorPrimitives.Multiply(dxr, rr, dxr);
                    if (partials != null)
                    {
                        NormRows.AccumulateParamGrads(dyr, xh, partials.AsSpan((int)(2 * b * c), c),
                            rms ? default : partials.AsSpan((int)((2 * b + 1) * c), c));
                    }
                }
            }
        });
        if (partials != null)
        {
            var dg = dGamma!.Span; dg.Clear();
            var db = dBeta != null ? dBeta.Span : default;
            db.Clear();
            for (int b = 0; b < blocks; b++)
            {
                TensorPrimitives.Add(dg, partials.AsSpan(2 * b * c, c), dg);
                if (dBeta != null) TensorPrimitives.Add(db, partials.AsSpan((2 * b + 1) * c, c), db);
            }
        }
        return dx;
    }
}
