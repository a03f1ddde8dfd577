"""PyTorch's peer of `Nanolora.DeviceRunner gemm`: square fp32 torch.matmul at the same sizes, with TF32 off
(torch.backends.cuda.matmul.allow_tf32 = False, float32 matmul precision "highest"), so it is cuBLAS SGEMM as
PyTorch calls it. Inputs U(-0.5, 0.5); each sample repeats the product for >= 50 ms and synchronizes; GFLOP/s =
2 N^3 / median time. Usage: torch_gemm.py [--device cuda|cpu] [--sizes 1024,2048,4096,8192] [--runs 5] [--json FILE]"""
import argparse, json, statistics, time

import torch

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--sizes", default="1024,2048,4096,8192")
ap.add_argument("--runs", type=int, default=5)
ap.add_argument("--json", default="torch_gemm.json")
args = ap.parse_args()
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_float32_matmul_precision("highest")
dev = torch.device(args.device)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
print(f"== torch {torch.__version__} matmul fp32 (TF32 off) on {name}; median of {args.runs}")
rows = []
for n in (int(s) for s in args.sizes.split(",")):
    g = torch.Generator(device="cpu").manual_seed(n)
    a = (torch.rand(n, n, generator=g) - 0.5).to(dev)
    b = (torch.rand(n, n, generator=g) - 0.5).to(dev)
    c = torch.empty(n, n, device=dev)
    flops = 2.0 * n ** 3
    torch.matmul(a, b, out=c)
    sync()
    t = time.perf_counter()
    torch.matmul(a, b, out=c)
    sync()
    reps = max(1, int(0.05 / max(time.perf_counter() - t, 1e-7)) + 1)
    samples = []
    for _ in range(args.runs):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b, out=c)
        sync()
        samples.append((time.perf_counter() - t) / reps)
    med, best = statistics.median(samples), min(samples)
    rows.append({"n": n, "gflops_median": round(flops / med / 1e9, 1), "gflops_best": round(flops / best / 1e9, 1)})
    print(f"n {n:5d}  torch {flops / med / 1e9:9.1f} GFLOP/s (best {flops / best / 1e9:.1f})")
    del a, b, c
with open(args.json, "w") as f:
    json.dump({"mode": "torch-gemm", "device": name, "torch": torch.__version__, "tf32": False, "runs": args.runs, "sizes": rows, "passed": True}, f, indent=2)
