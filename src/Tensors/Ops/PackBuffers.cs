using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Nanolora.Tensors;

/// <summary>Pinned scratch arrays for packed panels, reused across calls (packed B of a 1024² product is 4 MB).</summary>
internal static unsafe class PackBuffers
{
    static readonly List<float[]> Free = new();

    public static float[] Rent(long floats)
    {
        long need = floats + 16;
        lock (Free)
        {
            int best = -1;
            for (int i = 0; i < Free.Count; i++)
                if (Free[i].Length >= need && (best < 0 || Free[i].Length < Free[best].Length)) best = i;
            if (best >= 0)
            {
                var found = Free[best];
                Free.RemoveAt(best);
                return found;
            }
        }
        return GC.AllocateUninitializedArray<float>(checked((int)BitOperations.RoundUpToPowerOf2((ulong)need)), pinned: true);
    }

    public static void Return(float[] buffer)
    {
        lock (Free) if (Free.Count < 8) Free.Add(buffer);
    }

    /// <summary>The first 64-byte-aligned element of a pinned array (Rent leaves 16 floats of slack).</summary>
    public static float* Aligned(float[] pinned) =>
        (float*)(((nint)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(pinned)) + 63) & ~(nint)63);
}
