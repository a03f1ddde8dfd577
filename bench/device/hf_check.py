"""The real-client check: Hugging Face's own code reads what Nanolora wrote and computes what Nanolora computed.

Input: the folder `Nanolora.DeviceRunner hf-export --out DIR` wrote: DIR/model (a BERT in Hugging Face's layout, written
by the code behind `nanolora convert`), DIR/adapter (a LoRA adapter in PEFT's layout, written by AdapterFiles.Save) and
DIR/nanolora_outputs.json (the texts, Nanolora's ids and attention mask, and Nanolora's last_hidden_state,
pooler_output and sentence embeddings without and with the adapter, on the cpu backend and on the GPU).

With --client hf (the default, for the device machine):
  1. transformers' BertTokenizer gives the same ids as Nanolora's tokenizer;
  2. transformers' BertModel.from_pretrained loads the folder with no missing or unexpected weights, and its
     last_hidden_state (at real tokens) and pooler_output are within 1e-4 of Nanolora's; mean-pooled, normalized
     embeddings have cosine >= 0.99999;
  3. sentence-transformers' SentenceTransformer(DIR/model) embeds the texts as Nanolora does (modules.json, pooling);
  4. PEFT's PeftModel.from_pretrained loads the adapter (every tensor, the same values) and the adapted outputs match
     Nanolora's adapted outputs; PEFT's merge_and_unload gives them too.
With --client torch-reference (for a machine with PyTorch but no transformers): the same comparisons of 2 and 4
against a plain-PyTorch re-statement of BertModel and LoRA below, reading the safetensors files by hand. That checks
the files' names, shapes and layouts and this script, not Hugging Face; the summary says which client ran.
Everything runs in fp32 on --device (default cpu; on cuda TF32 is switched off). Exit code 1 if any check fails.
Usage: hf_check.py DIR [--json FILE] [--device cpu|cuda] [--client hf|torch-reference]"""
import argparse, json, math, os, struct, sys

import torch

ATOL, MIN_COS = 1e-4, 0.99999
results = {"checks": []}


def record(name, passed, **facts):
    results["checks"].append({"name": name, "passed": bool(passed), **facts})
    detail = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in facts.items())
    print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")


def mean_pool_normalize(hidden, mask):
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)


def compare(tag, ours, theirs, mask, device_id):
    """Nanolora's outputs (flat lists from the JSON) against the client's tensors, for one Nanolora device."""
    b, t, c = mask.shape[0], mask.shape[1], theirs["last_hidden_state"].shape[-1]
    hidden = torch.tensor(ours["last_hidden_state"]).view(b, t, c)
    real = mask.bool()
    d_hidden = (hidden[real] - theirs["last_hidden_state"].cpu()[real]).abs().max().item()
    record(f"{tag}: last_hidden_state at real tokens, nanolora {device_id}", d_hidden <= ATOL, max_abs_diff=d_hidden)
    if "pooler_output" in theirs:
        d_pool = (torch.tensor(ours["pooler_output"]).view(b, c) - theirs["pooler_output"].cpu()).abs().max().item()
        record(f"{tag}: pooler_output, nanolora {device_id}", d_pool <= ATOL, max_abs_diff=d_pool)
    emb = torch.tensor(ours["sentence_embedding"]).view(b, c)
    ref = mean_pool_normalize(theirs["last_hidden_state"].cpu(), mask)
    cos = torch.nn.functional.cosine_similarity(emb.double(), ref.double(), dim=1).min().item()
    record(f"{tag}: sentence embeddings, nanolora {device_id}", cos >= MIN_COS, min_cosine=cos)


def hf_client(root, data, ids, mask, types, dev):
    from transformers import BertModel, BertTokenizer
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    import transformers, peft
    results["client"] = f"transformers {transformers.__version__}, peft {peft.__version__}"
    model_dir, adapter_dir = os.path.join(root, "model"), os.path.join(root, "adapter")

    tok = BertTokenizer.from_pretrained(model_dir)
    lengths = mask.sum(1).tolist()
    mismatched = [i for i, text in enumerate(data["texts"])
                  if tok(text, truncation=True, max_length=32)["input_ids"] != ids[i, : lengths[i]].tolist()]
    record("tokenizer: BertTokenizer ids equal Nanolora's", not mismatched, texts=len(data["texts"]), mismatched=mismatched or "none")

    try:  # eager attention: the plain additive-mask softmax (transformers < 4.36 has no such option and is eager)
        base, info = BertModel.from_pretrained(model_dir, output_loading_info=True, attn_implementation="eager")
    except TypeError:
        base, info = BertModel.from_pretrained(model_dir, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v}
    record("BertModel.from_pretrained: every weight loaded", not problems, problems=problems or "none")
    base = base.to(dev).eval()

    def run(model):
        with torch.no_grad():
            out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), token_type_ids=types.to(dev))
        return {"last_hidden_state": out.last_hidden_state, "pooler_output": out.pooler_output}

    base_out = run(base)
    for device_id, ours in data["outputs"].items():
        compare("base", ours["base"], base_out, mask, device_id)

    try:
        from sentence_transformers import SentenceTransformer
        st = SentenceTransformer(model_dir, device=str(dev))
        emb = torch.tensor(st.encode(data["texts"], convert_to_numpy=True))
        ours = torch.tensor(data["outputs"]["cpu"]["base"]["sentence_embedding"]).view(emb.shape)
        cos = torch.nn.functional.cosine_similarity(emb.double(), ours.double(), dim=1).min().item()
        record("sentence-transformers: SentenceTransformer(model).encode equals Nanolora's embeddings", cos >= MIN_COS, min_cosine=cos)
    except ImportError as e:
        record("sentence-transformers: SentenceTransformer(model).encode", False, error=f"not importable: {e}")

    peft_model = PeftModel.from_pretrained(base, adapter_dir).to(dev).eval()
    saved = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(peft_model)
    missing = sorted(set(saved) - set(loaded))
    differ = [k for k in saved if k in loaded and not torch.equal(saved[k], loaded[k].cpu())]
    record("PeftModel.from_pretrained: every adapter tensor loaded unchanged", not missing and not differ and len(saved) > 0,
           tensors=len(saved), missing=missing or "none", changed=differ or "none")
    lora_out = run(peft_model)
    for device_id, ours in data["outputs"].items():
        compare("lora (PEFT)", ours["lora"], lora_out, mask, device_id)
    merged_out = run(peft_model.merge_and_unload())
    compare("lora merged (PEFT merge_and_unload)", data["outputs"]["cpu"]["lora"], merged_out, mask, "cpu")


def read_safetensors(path):
    """safetensors by hand: an 8-byte little-endian header length, a JSON header, then the raw tensors."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        assert e["dtype"] == "F32", f"{path}: {name} is {e['dtype']}, expected F32"
        start, end = e["data_offsets"]
        out[name] = torch.frombuffer(bytearray(blob[start:end]), dtype=torch.float32).view(e["shape"]).clone()
    return out


def reference_client(root, data, ids, mask, types, dev):
    """BertModel as transformers computes it (post-LN, erf GELU, additive mask), straight from the files."""
    results["client"] = f"torch-reference (plain PyTorch {torch.__version__}; not Hugging Face's code)"
    cfg = json.load(open(os.path.join(root, "model", "config.json")))
    w = {k: v.to(dev) for k, v in read_safetensors(os.path.join(root, "model", "model.safetensors")).items()}
    acfg = json.load(open(os.path.join(root, "adapter", "adapter_config.json")))
    a = {k: v.to(dev) for k, v in read_safetensors(os.path.join(root, "adapter", "adapter_model.safetensors")).items()}
    scale = acfg["lora_alpha"] / acfg["r"]
    used = set()
    H, nh, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]

    def linear(x, name, lora):
        y = x @ w[name + ".weight"].T + w[name + ".bias"]
        key = f"base_model.model.{name}.lora_"
        if lora and key + "A.weight" in a:
            used.update([key + "A.weight", key + "B.weight"])
            y = y + (x @ a[key + "A.weight"].T @ a[key + "B.weight"].T) * scale
        return y

    def norm(x, name):
        return torch.nn.functional.layer_norm(x, (H,), w[name + ".weight"], w[name + ".bias"], eps)

    def forward(lora):
        i, m, tt = ids.to(dev), mask.to(dev), types.to(dev)
        pos = torch.arange(i.shape[1], device=dev)
        x = w["embeddings.word_embeddings.weight"][i] + w["embeddings.position_embeddings.weight"][pos] + w["embeddings.token_type_embeddings.weight"][tt]
        x = norm(x, "embeddings.LayerNorm")
        add = (1.0 - m[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for l in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{l}."
            heads = lambda t: t.view(t.shape[0], t.shape[1], nh, H // nh).transpose(1, 2)
            q, k, v = (heads(linear(x, p + "attention.self." + n, lora)) for n in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(H // nh) + add, -1) @ v
            att = att.transpose(1, 2).reshape(x.shape)
            x = norm(x + linear(att, p + "attention.output.dense", lora), p + "attention.output.LayerNorm")
            f = torch.nn.functional.gelu(linear(x, p + "intermediate.dense", lora))
            x = norm(x + linear(f, p + "output.dense", lora), p + "output.LayerNorm")
        return {"last_hidden_state": x, "pooler_output": torch.tanh(linear(x[:, 0], "pooler.dense", lora))}

    with torch.no_grad():
        base_out = forward(False)
        lora_out = forward(True)
    for device_id, ours in data["outputs"].items():
        compare("base", ours["base"], base_out, mask, device_id)
        compare("lora", ours["lora"], lora_out, mask, device_id)
    unused = sorted(set(a) - used)
    record("adapter: every tensor maps onto a BERT Linear", not unused and len(a) > 0, tensors=len(a), unused=unused or "none")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--json", default="hf_check.json")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--client", choices=["hf", "torch-reference"], default="hf")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    data = json.load(open(os.path.join(args.dir, "nanolora_outputs.json")))
    b, t = data["batch"], data["length"]
    ids, mask, types = (torch.tensor(data[k]).view(b, t) for k in ("input_ids", "attention_mask", "token_type_ids"))
    dev = torch.device(args.device)
    results.update({"device": args.device, "torch": torch.__version__, "nanolora_devices": list(data["outputs"])})
    base = torch.tensor(data["outputs"]["cpu"]["base"]["last_hidden_state"])
    moved = (torch.tensor(data["outputs"]["cpu"]["lora"]["last_hidden_state"]) - base).abs().max().item()
    record("the adapter changes Nanolora's outputs (else the LoRA comparisons prove nothing)", moved > 1e-2, max_abs_change=moved)
    try:
        (hf_client if args.client == "hf" else reference_client)(args.dir, data, ids, mask, types, dev)
    except Exception as e:  # one line in the summary; the traceback in the log
        import traceback
        traceback.print_exc()
        record(f"{args.client} client ran to the end", False, error=f"{type(e).__name__}: {e}")
    results["passed"] = bool(results["checks"]) and all(c["passed"] for c in results["checks"])
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)
    n_ok = sum(c["passed"] for c in results["checks"])
    print(f"== hf-check ({results.get('client', args.client)}): {n_ok} of {len(results['checks'])} checks passed -> {args.json}")
    return 0 if results["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
