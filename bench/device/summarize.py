"""Writes summary.md for a bench/device/run.sh output folder from its steps.tsv and JSON files (stdlib only).
A missing or unreadable file shows as such: a step that failed or timed out leaves a gap, never a made-up number.
Usage: summarize.py OUT_DIR > OUT_DIR/summary.md"""
import csv, json, os, sys

out = sys.argv[1]


def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def mib(b):
    return "" if b is None else f"{b / 2**20:.1f}"


def verdict(d):
    return "no result" if d is None else ("pass" if d.get("passed") else "FAIL")


lines = ["# Nanolora device run", ""]
try:
    with open(os.path.join(out, "machine.log")) as f:
        facts = [l.rstrip() for l in f if l.startswith(("date:", "torch", "transformers", "sentence-transformers")) or ", MiB" in l or "MiB," in l]
    lines += ["```", *facts, "```", ""]
except OSError:
    pass
if os.path.exists(os.path.join(out, "icu-missing.txt")):
    lines += ["No libicu on this machine: the runner ran with invariant globalization.", ""]

lines += ["## Steps", "", "| step | exit code | seconds | cap |", "|---|---|---|---|"]
try:
    with open(os.path.join(out, "steps.tsv")) as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rc = row["rc"]
            note = " (timed out)" if rc in ("124", "137") else ""
            lines.append(f"| {row['step']} | {rc}{note} | {row['seconds']} | {row['cap']} |")
except OSError:
    lines.append("| (no steps.tsv) | | | |")

check = load("check.json")
lines += ["", f"## Kernel checks against the cpu backend: {verdict(check)}", ""]
if check:
    lines.append(f"{check['checks_passed']} passed, {check['checks_failed']} failed on {check['device']} ({check['device_name']}).")
    lines += ["", "| family | passed | failed |", "|---|---|---|"]
    lines += [f"| {k} | {v['passed']} | {v['failed']} |" for k, v in check["families"].items()]
    bad = [c for c in check["checks"] if not c["passed"]]
    if bad:
        lines += ["", "Failures:", ""]
        for c in bad:
            detail = c.get("error") or f"first mismatch {c.get('first_mismatch')}, max abs {c.get('max_abs_error')}"
            lines.append(f"- {c['family']} / {c['name']}: {detail}")

gemm, tg = load("gemm.json"), load("torch_gemm.json")
lines += ["", f"## GEMM, fp32, square: {verdict(gemm)}", ""]
if gemm:
    torch_rate = {r["n"]: r["gflops_median"] for r in (tg or {}).get("sizes", [])}
    lines.append(f"Peer: {gemm.get('cublas') or 'no cuBLAS (' + str(gemm.get('cublas_missing_reason')) + ')'}; torch: "
                 f"{tg['torch'] + ' ' + tg['device'] + ', TF32 off' if tg else 'no result'}. GFLOP/s, median of {gemm['runs']}.")
    lines += ["", "| N | ours | cuBLAS | torch.matmul | ours / cuBLAS | correct |", "|---|---|---|---|---|---|"]
    for r in gemm["sizes"]:
        ratio = f"{r['ratio']:.0%}" if r.get("ratio") is not None else ""
        lines.append(f"| {r['n']} | {r['ours_gflops_median']} | {r.get('cublas_gflops_median', '')} | {torch_rate.get(r['n'], '')} | {ratio} | {r['correct']} |")
    met = gemm.get("target_met")
    lines += ["", f"Target (ours >= 50% of cuBLAS SGEMM at 4096): {'not measured' if met is None else ('met' if met else 'NOT met')}."]

for name, title in (("hf_check.json", "Real clients (Hugging Face transformers, PEFT, sentence-transformers)"),
                    ("hf_check_torch_reference.json", "Plain-PyTorch reference (not Hugging Face's code)")):
    d = load(name)
    if d is None and name.endswith("reference.json"):
        continue
    lines += ["", f"## {title}: {verdict(d)}", ""]
    if d:
        lines.append(f"Client: {d.get('client', 'did not start')}; Nanolora outputs from {', '.join(d.get('nanolora_devices', []))}.")
        lines.append("")
        for c in d["checks"]:
            facts = ", ".join(f"{k} {v}" for k, v in c.items() if k not in ("name", "passed"))
            lines.append(f"- {'pass' if c['passed'] else 'FAIL'}: {c['name']} ({facts})")

bw = load("bandwidth.json")
lines += ["", f"## Memory-bound ops: {verdict(bw)}", ""]
if bw:
    lines += ["| op | GB/s (median) | share of copy | ms | matches cpu |", "|---|---|---|---|---|"]
    for r in bw["ops"]:
        share = "" if r.get("fraction_of_copy") is None else f"{r['fraction_of_copy']:.0%}"
        lines.append(f"| {r['op']} | {r['gbps_median']} | {share} | {r['ms_median']} | {r['correct']} |")

lines += ["", "## Training step (post-LN, vocab 8000, AdamW)", "",
          "| preset | method | ms/step ours | ms/step torch | trainable params | peak MiB: total | parameters | gradients | optimizer | activations | torch peak allocated MiB |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
for preset in ("small", "transformer-base"):
    peer = load(f"torch_train_{preset}.json")
    for method in ("full", "lora"):
        d = load(f"train_{preset}_{method}.json")
        if d is None:
            lines.append(f"| {preset} | {method} | no result | | | | | | | | |")
            continue
        p = d["memory"]["peak_by_category"]
        torch_ms = peer["ms_per_step_median"] if peer and method == "full" else ""
        torch_mem = mib(peer.get("peak_allocated_bytes")) if peer and method == "full" else ""
        lines.append(f"| {preset} | {method} | {d['ms_per_step_median']} | {torch_ms} | {d['trainable_parameters']:,} | {mib(d['memory']['peak_bytes'])} | "
                     f"{mib(p.get('Parameter'))} | {mib(p.get('Gradient'))} | {mib(p.get('OptimizerState'))} | {mib(p.get('Activation'))} | {torch_mem} |")
lines += ["", "Raw logs: one `<step>.log` per step in this folder; every number above is in the JSON file beside it."]
print("\n".join(lines))
