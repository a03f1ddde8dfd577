if (args.Length > 0 && args[0] == "matmul-quick") { Nanolora.Bench.MatmulQuick.Run(args.Length > 1 ? args[1] : "cpu"); return; }
BenchmarkDotNet.Running.BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
