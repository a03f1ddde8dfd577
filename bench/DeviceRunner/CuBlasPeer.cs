using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;
using Nanolora.Tensors;

namespace Nanolora.DeviceRunner;

/// <summary>
/// cuBLAS SGEMM through ILGPU.Algorithms' <see cref="CuBlas"/>, on the same accelerator, stream and buffers as our
/// kernel: the peer the GEMM target is stated against. Default math mode (no TF32 tensor-op math), host pointer mode.
/// </summary>
public sealed class CuBlasPeer : IDisposable
{
    readonly CuBlas _blas;
    public int Version => _blas.Version;

    CuBlasPeer(CuBlas blas) => _blas = blas;

    /// <summary>The peer on a CUDA device; null with the reason when there is none (not CUDA, or no libcublas found).</summary>
    public static CuBlasPeer? TryOpen(Device device, out string? why)
    {
        why = null;
        if (device is not IlgpuDevice { Accelerator: CudaAccelerator cuda })
        {
            why = $"{device.Id} is not a CUDA device";
            return null;
        }
        InstallResolver();
        try
        {
            var blas = new CuBlas(cuda) { MathMode = CuBlasMathMode.DefaultMath };
            return new CuBlasPeer(blas);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or CuBlasException)
        {
            why = $"cuBLAS could not be opened ({e.GetType().Name}: {e.Message}); bench/device/run.sh adds the CUDA libraries that PyTorch ships to LD_LIBRARY_PATH";
            return null;
        }
    }

    /// <summary>
    /// Row-major C[M, N] = A[M, K]·B[K, N]. cuBLAS is column-major, where a row-major matrix reads as its transpose:
    /// Cᵀ = Bᵀ·Aᵀ is computed with B passed first, no transposes, leading dimensions N, K and N.
    /// </summary>
    public void Gemm(Tensor a, Tensor b, Tensor c, int m, int n, int k) =>
        _blas.Gemm(CuBlasOperation.NonTranspose, CuBlasOperation.NonTranspose, n, m, k, 1f, b.View, n, a.View, k, 0f, c.View, n);

    public void Dispose() => _blas.Dispose();

    static int _resolver;

    /// <summary>
    /// ILGPU.Algorithms asks for libcublas.so.10/.11/.12 by exact name. A CUDA install without the toolkit's library
    /// folder on the loader path (PyTorch's pip wheels keep libcublas under site-packages/nvidia/cublas/lib) is found
    /// through NANOLORA_CUBLAS_DIR, which bench/device/run.sh sets; otherwise the default search applies.
    /// </summary>
    static void InstallResolver()
    {
        if (Interlocked.Exchange(ref _resolver, 1) != 0) return;
        NativeLibrary.SetDllImportResolver(typeof(CuBlas).Assembly, (name, _, _) =>
        {
            var dir = Environment.GetEnvironmentVariable("NANOLORA_CUBLAS_DIR");
            if (!name.StartsWith("libcublas") || string.IsNullOrEmpty(dir)) return IntPtr.Zero;
            return NativeLibrary.TryLoad(Path.Combine(dir, name), out var handle) ? handle : IntPtr.Zero;
        });
    }
}
