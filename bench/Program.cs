// Harness modes (Stopwatch, quick tables); anything else goes to BenchmarkDotNet's switcher.
var harness = new Dictionary<string, Action<string>>
{
    ["matmul-quick"] = device => Nanolora.Bench.MatmulQuick.Run(device, args.Skip(2).ToArray()),
    ["ops-quick"] = device => Nanolora.Bench.OpsQuick.Run(device, args.Skip(2).ToArray()),
    ["lora-quick"] = Nanolora.Bench.LoraQuick.Run,
    ["train-step"] = Nanolora.Bench.TrainStepQuick.Run,
    ["ptx-levels"] = Nanolora.Bench.PtxLevels.Run,
    ["embed-quick"] = Nanolora.Bench.EmbedQuick.Run,
    ["step-profile"] = device => Nanolora.Bench.StepProfileQuick.Run(device, args.Skip(2).ToArray()),
    ["lowrank-gemm"] = device => Nanolora.Bench.LowRankGemmQuick.Run(device, args.Skip(2).ToArray()),
    ["fma-peak"] = Nanolora.Bench.FmaPeakQuick.Run,
    ["gemm-kernel"] = Nanolora.Bench.GemmKernelQuick.Run,
    ["ckpt-step"] = device => Nanolora.Bench.CheckpointStepQuick.Run(device, args.Skip(2).ToArray()),
};
if (args.Length > 0 && harness.TryGetValue(args[0], out var run)) { run(args.Length > 1 ? args[1] : "cpu"); return; }
BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
