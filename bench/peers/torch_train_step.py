"""PyTorch peer of `Nanolora.Bench.dll train-step` (and of `Nanolora.DeviceRunner train-step --method full`): one
training step of torch.nn.Transformer, post-LN (torch's default), dropout 0.1, vocab 8000 with a token embedding scaled
by sqrt(d_model) plus sinusoidal positions, and an output projection tied to the embedding (as Nanolora's default
TieEmbeddings); B 32, S 96, T 16 random tokens, causal target mask, cross-entropy (ignore pad 0), AdamW.
Presets as Nanolora's: small (d_model 256, 4 heads, 3+3 layers, d_ff 1024; the default) and transformer-base
(512, 8, 6+6, 2048). Prints seconds per step: median of 10 after 3 warm-ups; on cuda also the peak allocated memory
(TF32 off). There is no LoRA peer here: nn.MultiheadAttention packs q, k, v into one parameter that PEFT cannot wrap.
Usage: torch_train_step.py [threads] [--device cpu|cuda] [--preset small|transformer-base] [--small] [--json FILE]"""
import argparse, json, math, statistics, time
import torch
import torch.nn as nn

ap = argparse.ArgumentParser()
ap.add_argument("threads", nargs="?", type=int, default=2)
ap.add_argument("--device", default="cpu")
ap.add_argument("--preset", choices=["small", "transformer-base"], default="small")
ap.add_argument("--small", action="store_true", help="B 4, S 16, T 8 and 3 steps: a smoke run")
ap.add_argument("--json")
args = ap.parse_args()
dev = torch.device(args.device)
if dev.type == "cpu":
    torch.set_num_threads(args.threads)
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
C, H, FF, L = {"small": (256, 4, 1024, 3), "transformer-base": (512, 8, 2048, 6)}[args.preset]
V, (B, S, T), STEPS = 8000, ((4, 16, 8) if args.small else (32, 96, 16)), (3 if args.small else 10)


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, C)
        nn.init.normal_(self.emb.weight, std=C ** -0.5)
        self.tf = nn.Transformer(C, H, L, L, FF, 0.1, batch_first=True)
        self.out = nn.Linear(C, V, bias=False)
        self.out.weight = self.emb.weight
        pos = torch.arange(512).unsqueeze(1) / torch.pow(10000, torch.arange(0, C, 2) / C)
        pe = torch.zeros(512, C)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos), torch.cos(pos)
        self.register_buffer("pe", pe)
        self.drop = nn.Dropout(0.1)
        self.register_buffer("causal", nn.Transformer.generate_square_subsequent_mask(T))

    def embed(self, ids):
        return self.drop(self.emb(ids) * math.sqrt(C) + self.pe[: ids.shape[1]])

    def forward(self, src, tgt):
        h = self.tf(self.embed(src), self.embed(tgt), tgt_mask=self.causal)
        return self.out(h)


model = Model().to(dev)
params = sum(p.numel() for p in model.parameters())
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
loss_fn = nn.CrossEntropyLoss(ignore_index=0)
src = torch.randint(4, V, (B, S)).to(dev)
y = torch.randint(4, V, (B, T - 1))
tgt_in = torch.cat([torch.ones(B, 1, dtype=torch.long), y], 1).to(dev)
tgt_out = torch.cat([y, torch.full((B, 1), 2, dtype=torch.long)], 1).to(dev)


def step():
    logits = model(src, tgt_in)
    loss = loss_fn(logits.reshape(-1, V), tgt_out.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()  # .item() waits for the device


where = f"threads={args.threads}" if dev.type == "cpu" else torch.cuda.get_device_name(dev)
print(f"== PyTorch {torch.__version__} training step, {args.preset}, {params:,} parameters, B {B}, S {S}, T {T}, {where}")
losses = [step() for _ in range(3)]
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(dev)
times = []
for _ in range(STEPS):
    t = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - t)
peak = torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else None
print(f"torch    train-step  median {statistics.median(times):.3f} s/step  best {min(times):.3f} s/step"
      f"  (loss {losses[0]:.3f} -> {losses[-1]:.3f})" + (f"  peak allocated {peak / 2**20:.1f} MiB" if peak else ""))
if args.json:
    with open(args.json, "w") as f:
        json.dump({"mode": "torch-train-step", "device": where, "torch": torch.__version__, "preset": args.preset, "method": "full",
                   "parameters": params, "batch": {"B": B, "S": S, "T": T, "vocab": V}, "steps": STEPS,
                   "ms_per_step_median": round(statistics.median(times) * 1e3, 2), "ms_per_step_best": round(min(times) * 1e3, 2),
                   "peak_allocated_bytes": peak, "loss_first": losses[0], "loss_last": losses[-1],
                   "passed": all(math.isfinite(l) for l in losses)}, f, indent=2)
