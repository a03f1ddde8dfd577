"""PyTorch CPU sgemm timings at bench/MatmulBench.cs's sizes: median and best GFLOP/s of 7 samples, and
GFLOP per CPU-second of this process (meaningful on a shared machine)."""
import sys, time, statistics
import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
for m, k, n in [(256, 256, 256), (512, 512, 512), (1024, 1024, 1024), (2048, 512, 2048)]:
    a, b = torch.randn(m, k), torch.randn(k, n)
    c = torch.empty(m, n)
    flops = 2.0 * m * n * k
    reps = max(3, int(2e9 / flops))  # about 2 GFLOP of work per sample
    for _ in range(3): torch.mm(a, b, out=c)
    samples, cpu = [], []
    for _ in range(7):
        t, tc = time.perf_counter(), time.process_time()
        for _ in range(reps): torch.mm(a, b, out=c)
        samples.append((time.perf_counter() - t) / reps)
        cpu.append((time.process_time() - tc) / reps)
    print(f"torch  {m:5d}x{k:5d}x{n:5d}  median {flops / statistics.median(samples) / 1e9:7.1f} GFLOP/s"
          f"  best {flops / min(samples) / 1e9:7.1f} GFLOP/s"
          f"  | per CPU-second: median {flops / statistics.median(cpu) / 1e9:7.1f}")
