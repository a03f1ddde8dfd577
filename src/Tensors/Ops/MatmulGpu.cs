using ILGPU;
using ILGPU.Runtime;

namespace Nanolora.Tensors;

/// <summary>
/// Arguments of the tiled GEMM kernel (blittable; indices are 32-bit). Public only because ILGPU's CPU
/// simulator emits code that must see kernel parameter types; not meant to be used directly.
/// </summary>
public struct GemmParams
{
    /// <summary>Rows of op(A) and of C.</summary>
    public int M;
    /// <summary>Columns of op(B) and of C.</summary>
    public int N;
    /// <summary>The contracted size: columns of op(A), rows of op(B).</summary>
    public int K;
    /// <summary>1 when A is read transposed, else 0.</summary>
    public int TransA;
    /// <summary>1 when B is read transposed, else 0.</summary>
    public int TransB;
    /// <summary>Elements between consecutive matrices of A in a batch (0: one A shared by the batch).</summary>
    public int StrideA;
    /// <summary>Elements between consecutive matrices of B in a batch (0: one B shared by the batch).</summary>
    public int StrideB;
    /// <summary>Elements between consecutive matrices of C in a batch.</summary>
    public int StrideC;
    /// <summary>Scale of the product: C = Alpha·op(A)·op(B) + Beta·C.</summary>
    public float Alpha;
    /// <summary>Scale of C's previous contents (0 overwrites C).</summary>
    public float Beta;
}

public static partial class Ops
{
    // Each group of 16×16 threads computes a 64×64 tile of C, each thread a 4×4 block of it (rows ty+16i,
    // columns tx+16j, so a warp's shared-memory reads are broadcasts or consecutive). Per 16-deep step
    // the group stages a 64×16 slice of op(A) and a 16×64 slice of op(B) in shared memory, reading
    // global memory along whichever axis is contiguous for the transpose flag. Out-of-range elements
    // load as zero; stores are guarded. Grid: (N/64, M/64, batch).
    const int GemmTile = 64, GemmDepth = 16, GemmThreads = 16, GemmPitch = GemmTile + 1; // +1 breaks bank conflicts on staging stores

    static readonly Kernel<Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>> GemmKernel =
        new(acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, GemmParams>(GemmTiled));

    static void GemmTiled(ArrayView<float> a, ArrayView<float> b, ArrayView<float> c, GemmParams p)
    {
        var tileA = SharedMemory.Allocate<float>(GemmDepth * GemmPitch);   // [k][m]
        var tileB = SharedMemory.Allocate<float>(GemmDepth * GemmPitch);   // [k][n]
        int tx = Group.IdxX, ty = Group.IdxY, tid = ty * GemmThreads + tx;
        int row0 = Grid.IdxY * GemmTile, col0 = Grid.IdxX * GemmTile;
        int aBase = Grid.IdxZ * p.StrideA, bBase = Grid.IdxZ * p.StrideB;
        float c00 = 0f, c01 = 0f, c02 = 0f, c03 = 0f, c10 = 0f, c11 = 0f, c12 = 0f, c13 = 0f, c20 = 0f, c21 = 0f, c22 = 0f, c23 = 0f, c30 = 0f, c31 = 0f, c32 = 0f, c33 = 0f;
        for (int k0 = 0; k0 < p.K; k0 += GemmDepth)
        {
            for (int l = 0; l < 4; l++)
            {
                int e = tid + l * GemmThreads * GemmThreads;
                // op(A) element (m, k): stored [M, K] (contiguous in k) or, transposed, [K, M] (contiguous in m).
                int m = p.TransA == 0 ? e / GemmDepth : e % GemmTile;
                int k = p.TransA == 0 ? e % GemmDepth : e / GemmTile;
                int gm = row0 + m, gk = k0 + k;
                tileA[k * GemmPitch + m] = gm < p.M && gk < p.K
                    ? a[aBase + (p.TransA == 0 ? gm * p.K + gk : gk * p.M + gm)] : 0f;
                // op(B) element (k, n): stored [K, N] (contiguous in n) or, transposed, [N, K] (contiguous in k).
                int n = p.TransB == 0 ? e % GemmTile : e / GemmDepth;
                k = p.TransB == 0 ? e / GemmTile : e % GemmDepth;
                int gn = col0 + n;
                gk = k0 + k;
                tileB[k * GemmPitch + n] = gn < p.N && gk < p.K
                    ? b[bBase + (p.TransB == 0 ? gk * p.N + gn : gn * p.K + gk)] : 0f;
            }
            Group.Barrier();
            for (int kk = 0; kk < GemmDepth; kk++)
            {
                int ra = kk * GemmPitch + ty, rb = kk * GemmPitch + tx;
                float a0 = tileA[ra], a1 = tileA[ra + 16], a2 = tileA[ra + 32], a3 = tileA[ra + 48];
                float b0 = tileB[rb], b1 = tileB[rb + 16], b2 = tileB[rb + 32], b3 = tileB[rb + 48];
                c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
            }
            Group.Barrier();
        }
        int row = row0 + ty, col = col0 + tx;
        GemmStore(c, p, row + 0, col + 0, c00);
        GemmStore(c, p, row + 0, col + 16, c01);
        GemmStore(c, p, row + 0, col + 32, c02);
        GemmStore(c, p, row + 0, col + 48, c03);
        GemmStore(c, p, row + 16, col + 0, c10);
        GemmStore(c, p, row + 16, col + 16, c11);
        GemmStore(c, p, row + 16, col + 32, c12);
        GemmStore(c, p, row + 16, col + 48, c13);
        GemmStore(c, p, row + 32, col + 0, c20);
        GemmStore(c, p, row + 32, col + 16, c21);
        GemmStore(c, p, row + 32, col + 32, c22);
        GemmStore(c, p, row + 32, col + 48, c23);
        GemmStore(c, p, row + 48, col + 0, c30);
        GemmStore(c, p, row + 48, col + 16, c31);
        GemmStore(c, p, row + 48, col + 32, c32);
        GemmStore(c, p, row + 48, col + 48, c33);
    }

    static void GemmStore(ArrayView<float> c, GemmParams p, int row, int col, float acc)
    {
        if (row >= p.M || col >= p.N) return;
        int i = Grid.IdxZ * p.StrideC + row * p.N + col;
        // beta = 0 must not read C: a fresh output buffer may hold NaN.
        c[i] = p.Beta == 0f ? p.Alpha * acc : p.Alpha * acc + p.Beta * c[i];
    }

    /// <summary>Launches the tiled kernel, in slices of at most 65535 batch entries (the grid's z limit).</summary>
    static void MatmulGpu(IlgpuDevice gpu, in GemmShape s, Tensor a, Tensor b, Tensor c, float alpha, float beta)
    {
        GpuLength(a, "Matmul"); GpuLength(b, "Matmul"); GpuLength(c, "Matmul");
        if (s.Batch == 0 || s.M == 0 || s.N == 0) return;
        var p = new GemmParams
        {
            M = s.M, N = s.N, K = s.K, TransA = s.TransA ? 1 : 0, TransB = s.TransB ? 1 : 0,
            StrideA = (int)s.StrideA, StrideB = (int)s.StrideB, StrideC = (int)s.StrideC, Alpha = alpha, Beta = beta,
        };
        var kernel = GemmKernel.On(gpu);
        var group = new Index3D(GemmThreads, GemmThreads, 1);
        for (int z0 = 0; z0 < s.Batch; z0 += ushort.MaxValue)
        {
            int count = Math.Min(ushort.MaxValue, s.Batch - z0);
            var grid = new Index3D((s.N + GemmTile - 1) / GemmTile, (s.M + GemmTile - 1) / GemmTile, count);
            kernel(new KernelConfig(grid, group), a.View.SubView(z0 * s.StrideA), b.View.SubView(z0 * s.StrideB),
                c.View.SubView(z0 * s.StrideC), p);
        }
    }
}
