"""PyTorch CPU peer of `Nanolora.Bench.dll train-step`: one training step of torch.nn.Transformer with d_model 256,
4 heads, 3+3 layers, d_ff 1024, dropout 0.1, post-LN (torch's default), vocab 8000 with a token embedding scaled by
sqrt(d_model) plus sinusoidal positions, and an output projection tied to the embedding (as Nanolora's default
TieEmbeddings); B 32, S 96, T 16 random tokens, causal target mask, cross-entropy (ignore pad 0), AdamW.
Prints seconds per step: median of 10 after 3 warm-ups. Usage: torch_train_step.py [threads]"""
import math, sys, time, statistics
import torch
import torch.nn as nn

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
torch.manual_seed(0)
V, C, H, FF, L, B, S, T = 8000, 256, 4, 1024, 3, 32, 96, 16


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


model = Model()
params = sum(p.numel() for p in model.parameters())
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
loss_fn = nn.CrossEntropyLoss(ignore_index=0)
src = torch.randint(4, V, (B, S))
y = torch.randint(4, V, (B, T - 1))
tgt_in = torch.cat([torch.ones(B, 1, dtype=torch.long), y], 1)
tgt_out = torch.cat([y, torch.full((B, 1), 2, dtype=torch.long)], 1)


def step():
    logits = model(src, tgt_in)
    loss = loss_fn(logits.reshape(-1, V), tgt_out.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


print(f"== PyTorch {torch.__version__} training step, {params:,} parameters, threads={threads}")
losses = [step() for _ in range(3)]
times = []
for _ in range(10):
    t = time.perf_counter()
    losses.append(step())
    times.append(time.perf_counter() - t)
print(f"torch    train-step  median {statistics.median(times):.3f} s/step  best {min(times):.3f} s/step"
      f"  (loss {losses[0]:.3f} -> {losses[-1]:.3f})")
