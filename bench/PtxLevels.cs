using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Nanolora.Tensors;

namespace Nanolora.Bench;

/// <summary>
/// `ptx-levels`: the PTX ILGPU emits for a few kernels at O1 and at O2, for sm_90 (H100/H200), counted by
/// kind of memory access. Needs no GPU (ILGPU's PTX backend runs on any machine), so it measures code,
/// not time: generic ld/st (each resolves its address space in hardware) against ld/st.global and .shared,
/// and cvta conversions. The basis of the O2 choice for CUDA in <see cref="IlgpuDevice.GpuOptimization"/>.
/// </summary>
public static partial class PtxLevels
{
    static readonly (string Name, string Type, string Method)[] Kernels =
    [
        ("gemm (tiled, shared)", "Nanolora.Tensors.Ops", "GemmTiled"),
        ("layernorm forward", "Nanolora.Tensors.Ops+NormKernels", "ForwardKernel"),
        ("layernorm backward", "Nanolora.Tensors.Ops+NormKernels", "BackwardKernel"),
        ("softmax forward", "Nanolora.Tensors.Ops+SoftmaxKernels", "ForwardKernel"),
    ];

    public static void Run(string _)
    {
        Console.WriteLine("| kernel | level | PTX instructions | generic ld/st | ld/st.global | ld/st.shared | cvta |");
        Console.WriteLine("|---|---|---|---|---|---|---|");
        foreach (var (name, typeName, methodName) in Kernels)
        {
            var method = typeof(Tensor).Assembly.GetType(typeName, throwOnError: true)!
                .GetMethod(methodName, BindingFlags.NonPublic | BindingFlags.Static)
                ?? throw new InvalidOperationException($"{typeName}.{methodName} not found");
            // OptimizationLevel.O1 is the same value as Release, so it would print as "Release".
            foreach (var (label, level) in new[] { ("O1", OptimizationLevel.O1), ("O2", OptimizationLevel.O2) })
            {
                string ptx = Compile(method, level);
                var c = Count(ptx);
                Console.WriteLine($"| {name} | {label} | {c.Instructions} | {c.Generic} | {c.Global} | {c.Shared} | {c.Cvta} |");
            }
        }
    }

    static string Compile(MethodInfo kernel, OptimizationLevel level)
    {
        using var context = Context.Create(b => b.EnableAlgorithms().Math(MathMode.Fast32BitOnly).Optimize(level));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90), CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null!);
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
        return compiled.PTXAssembly;
    }

    static (int Instructions, int Generic, int Global, int Shared, int Cvta) Count(string ptx)
    {
        int instructions = 0, generic = 0, global = 0, shared = 0, cvta = 0;
        foreach (var raw in ptx.Split('\n'))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line.StartsWith("//") || line.StartsWith('.') || line.EndsWith(':') || line is "{" or "}") continue;
            if (line.StartsWith('@')) line = line[(line.IndexOf(' ') + 1)..].TrimStart();
            instructions++;
            var op = Opcode().Match(line).Value;
            if (op.StartsWith("cvta")) cvta++;
            if (!op.StartsWith("ld.") && !op.StartsWith("st.") && op != "ld" && op != "st") continue;
            if (op.Contains(".global")) global++;
            else if (op.Contains(".shared")) shared++;
            else if (!op.Contains(".param") && !op.Contains(".local") && !op.Contains(".const")) generic++;
        }
        return (instructions, generic, global, shared, cvta);
    }

    [GeneratedRegex(@"^[a-z][a-z0-9_.]*")]
    private static partial Regex Opcode();
}
