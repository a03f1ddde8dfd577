"""PyTorch CPU peers of bench/OpsBench.cs at the same shapes and units: softmax [12288 x 97 | 1024],
layer_norm [4096 x 512], elementwise add 16M, attention's head split [32, 96, 4, 64] -> [32, 4, 96, 64], attention itself over those heads (forward; backward) (and a single-tensor AdamW step, 1M and 16M, foreach=False).
GB/s = minimum bytes read + written / time; 3 warm-ups, 7 samples of >= 0.2 s; median and best.
Allocating calls return a fresh tensor (as Nanolora's ops do, from its pool); "(out=)" rows write into a
preallocated output, which isolates the kernel from the allocator (glibc hands buffers over 32 MiB to mmap,
so every call page-faults its output in afresh)."""
import sys, time, statistics
import torch
import torch.nn.functional as F

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
M = 1 << 20


def bench(name, fn, nbytes, min_seconds=0.2):
    for _ in range(3): fn()
    t = time.perf_counter(); fn(); once = max(time.perf_counter() - t, 1e-7)
    reps = max(1, int(-(-min_seconds // once)))
    samples = []
    for _ in range(7):
        t = time.perf_counter()
        for _ in range(reps): fn()
        samples.append((time.perf_counter() - t) / reps)
    med = statistics.median(samples)
    print(f"torch    {name:20s} median {nbytes / med / 1e9:7.1f} GB/s  best {nbytes / min(samples) / 1e9:7.1f} GB/s"
          f"  ({med * 1e3:.3f} ms median)")


with torch.no_grad():
    for width in (97, 1024):
        x = torch.rand(12288, width) * 8 - 4
        y = torch.empty_like(x)
        bench(f"softmax-12288x{width}", lambda: torch.softmax(x, dim=-1), 2.0 * x.numel() * 4)
        bench(f"  (out=) x{width}", lambda: torch.softmax(x, -1, out=y), 2.0 * x.numel() * 4)
    x = torch.rand(4096, 512) * 5 - 2
    g, b = torch.rand(512) + 0.5, torch.rand(512) - 0.5
    # torch's forward saves no mean/rstd under no_grad; counted as ours: x, y, gamma, beta, mean, rstd.
    bench("layernorm-4096x512", lambda: F.layer_norm(x, (512,), g, b, 1e-5), (2.0 * x.numel() + 2 * 512 + 2 * 4096) * 4)
for n in (1, 16):
    p = torch.nn.Parameter(torch.rand(n * M) * 2 - 1)
    p.grad = torch.rand(n * M) * 2 - 1
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.01, foreach=False)
    bench(f"adamw-{n}M", opt.step, 7.0 * n * M * 4)
x = torch.rand(32, 96, 4, 64) * 2 - 1
bench("heads-32x96x4x64", lambda: x.permute(0, 2, 1, 3).contiguous(), 2.0 * x.numel() * 4)
# Attention over heads as torch 1.13 composes it (no scaled_dot_product_attention before 2.0): split, q·kᵀ/√D,
# softmax, ·v, merge; backward through the same graph with a fixed output gradient.
q, k, v = (torch.rand(32, 96, 256) * 2 - 1 for _ in range(3))
def attention(q, k, v):
    split = lambda x: x.view(32, 96, 4, 64).permute(0, 2, 1, 3)
    p = torch.softmax(torch.matmul(split(q), split(k).transpose(-1, -2)) / 8.0, dim=-1)
    return torch.matmul(p, split(v)).permute(0, 2, 1, 3).reshape(32, 96, 256)
with torch.no_grad():
    bench("attention-32x96x4x64", lambda: attention(q, k, v), 4.0 * q.numel() * 4)
qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
dout = torch.rand(32, 96, 256) * 2 - 1
out = attention(qg, kg, vg)
bench("attention_backward-32x96x4x64", lambda: torch.autograd.grad(out, (qg, kg, vg), dout, retain_graph=True),
      (7.0 * q.numel() + 32 * 4 * 96 * 96) * 4)
a, b = torch.rand(16 * M) * 2 - 1, torch.rand(16 * M) * 2 - 1
c = torch.empty_like(a)
bench("add-16M", lambda: torch.add(a, b), 3.0 * 16 * M * 4)
bench("  (out=) add-16M", lambda: torch.add(a, b, out=c), 3.0 * 16 * M * 4)
