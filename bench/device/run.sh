#!/usr/bin/env bash
# The GPU run, on the lent device machine (CUDA, Python with torch/transformers/peft/sentence-transformers/safetensors;
# no .NET SDK, no network), from the working tree, with bench/device/runner carried (bench/device/publish.sh makes it).
# In one go, each step with its own time cap and the run going on past a failed step:
#   machine facts (nvidia-smi, torch); every kernel against the cpu backend (check); GEMM 1024-8192 against cuBLAS
#   SGEMM and against torch.matmul (fp32, TF32 off); the real-client check (Hugging Face transformers, PEFT and
#   sentence-transformers read a Nanolora BERT folder and LoRA adapter and compute the same outputs); softmax/LayerNorm/
#   AdamW bandwidth against a device copy; the training step of small and transformer-base, full vs LoRA, with the
#   PyTorch step of the same model as peer.
# Everything goes to $OUT: one log per step, the runner's and the scripts' JSON files, steps.tsv and summary.md.
# Environment: OUT (default out/device), DEVICE (default cuda; cpu, opencl or ilgpu-cpu to try the script on a machine
# without a GPU, with QUICK=1 for small shapes), BUDGET_S (default 450: steps that would start past it are skipped),
# PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-out/device}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"
BUDGET_S="${BUDGET_S:-450}"
PY="${PYTHON:-python3}"
RUNNER_XZ=bench/device/runner/Nanolora.DeviceRunner.xz # what bench/device/publish.sh made; RUNNER=path overrides
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
start=$(date +%s)
printf 'step\trc\tseconds\tcap\n' > "$OUT/steps.tsv"

# step NAME CAP COMMAND...: runs COMMAND with its output in $OUT/NAME.log, capped at CAP seconds or what is left of
# the budget; records the exit code (124: timed out; "skipped": no budget left) and seconds in steps.tsv.
step() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET_S - ($(date +%s) - start)))
  if (( left < 10 )); then
    printf '%s\tskipped\t0\t%s\n' "$name" "$cap" >> "$OUT/steps.tsv"; echo "== $name: skipped (budget spent)"; return
  fi
  (( cap > left )) && cap=$left
  local t0=$(date +%s)
  echo "== $name (cap ${cap} s)"
  timeout -k 5 "$cap" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$cap" >> "$OUT/steps.tsv"
  tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
}

# The runner: one self-contained .NET file, carried xz-compressed, unpacked (and its bundled native parts extracted)
# outside $OUT so that none of it travels back.
if [ -z "${RUNNER:-}" ]; then
  RUNNER="${TMPDIR:-/tmp}/nanolora-runner/Nanolora.DeviceRunner"
  mkdir -p "$(dirname "$RUNNER")"
  t0=$(date +%s)
  "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$RUNNER_XZ" "$RUNNER" \
    && chmod +x "$RUNNER" && echo "unpacked $RUNNER_XZ in $(($(date +%s) - t0)) s" || echo "could not unpack $RUNNER_XZ (run bench/device/publish.sh and carry bench/device/runner)"
fi
export DOTNET_BUNDLE_EXTRACT_BASE_DIR="${TMPDIR:-/tmp}/nanolora-bundle" DOTNET_CLI_TELEMETRY_OPTOUT=1
# .NET needs ICU for Unicode normalization (the BERT tokenizer strips accents through it); without libicu it refuses
# to start unless told to run invariant. Then accented text tokenizes differently, which hf-check's tokenizer line shows.
if ! { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -q 'libicuuc\.so' \
   && ! ls /usr/lib/x86_64-linux-gnu/libicuuc.so.* /usr/lib64/libicuuc.so.* /usr/lib/libicuuc.so.* >/dev/null 2>&1; then
  export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1
  echo "no libicu: the runner runs with invariant globalization" | tee "$OUT/icu-missing.txt"
fi
# cuBLAS for the GEMM peer: PyTorch's pip wheels carry libcublas under site-packages/nvidia/cublas/lib (or torch/lib),
# which the loader does not search by itself.
CUBLAS_DIR=$("$PY" - <<'EOF' 2>/dev/null
import glob, os
dirs = []
try:
    import nvidia.cublas
    dirs += [os.path.join(p, "lib") for p in nvidia.cublas.__path__]
except Exception:
    pass
try:
    import torch
    dirs.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
print(next((d for d in dirs if glob.glob(os.path.join(d, "libcublas.so.*"))), ""))
EOF
)
if [ -n "$CUBLAS_DIR" ]; then
  export NANOLORA_CUBLAS_DIR="$CUBLAS_DIR" LD_LIBRARY_PATH="$CUBLAS_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
case "$DEVICE" in cuda*) TORCH_DEVICE=cuda ;; *) TORCH_DEVICE=cpu ;; esac
[ "$DEVICE" = opencl ] && export NANOLORA_OPENCL_CPU="${NANOLORA_OPENCL_CPU:-1}" # POCL, when trying this without a GPU
if [ "$QUICK" = 1 ]; then SMALL=(--small); SIZES=64,96,128; else SMALL=(); SIZES=1024,2048,4096,8192; fi

machine() {
  echo "date: $(date -u +%FT%TZ)  host cpus: $(nproc)  device: $DEVICE  quick: $QUICK  cublas dir: ${CUBLAS_DIR:-none}"
  command -v nvidia-smi >/dev/null && nvidia-smi && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
  "$PY" -c 'import transformers, peft, safetensors; print("transformers", transformers.__version__, "peft", peft.__version__, "safetensors", safetensors.__version__)'
  "$PY" -c 'import sentence_transformers; print("sentence-transformers", sentence_transformers.__version__)'
  return 0
}
export -f machine
export DEVICE QUICK PY CUBLAS_DIR

step machine 20 bash -c machine
step devices 30 "$RUNNER" devices --json "$OUT/devices.json"
step check 100 "$RUNNER" check --device "$DEVICE" "${SMALL[@]}" --json "$OUT/check.json"
step gemm 80 "$RUNNER" gemm --device "$DEVICE" --sizes "$SIZES" --runs 5 --json "$OUT/gemm.json"
step torch-gemm 40 "$PY" bench/device/torch_gemm.py --device "$TORCH_DEVICE" --sizes "$SIZES" --runs 5 --json "$OUT/torch_gemm.json"
rm -rf "$OUT/hf"
step hf-export 30 "$RUNNER" hf-export --device "$DEVICE" --out "$OUT/hf" --json "$OUT/hf_export.json"
# Hugging Face on the CPU in fp32: the reference; Nanolora's outputs on the cpu backend and on $DEVICE are held to it.
step hf-check 60 "$PY" bench/device/hf_check.py "$OUT/hf" --client hf --device cpu --json "$OUT/hf_check.json"
# Where transformers/peft are missing (a machine other than the device one), a plain-PyTorch statement of the same
# model checks the files and the script; it is reported under its own name, never as the Hugging Face check.
if ! "$PY" -c 'import transformers, peft' 2>/dev/null; then
  step hf-check-torch-reference 60 "$PY" bench/device/hf_check.py "$OUT/hf" --client torch-reference --device cpu --json "$OUT/hf_check_torch_reference.json"
fi
step bandwidth 40 "$RUNNER" bandwidth --device "$DEVICE" "${SMALL[@]}" --json "$OUT/bandwidth.json"
for preset in small transformer-base; do
  for method in full lora; do
    step "train-$preset-$method" 45 "$RUNNER" train-step --device "$DEVICE" --preset "$preset" --method "$method" "${SMALL[@]}" \
      --json "$OUT/train_${preset}_${method}.json"
  done
  step "torch-train-$preset" 40 "$PY" bench/peers/torch_train_step.py --device "$TORCH_DEVICE" --preset "$preset" "${SMALL[@]}" \
    --json "$OUT/torch_train_${preset}.json"
done
echo "== total $(($(date +%s) - start)) s"
"$PY" bench/device/summarize.py "$OUT" > "$OUT/summary.md" 2> "$OUT/summarize.log" || echo "summarize.py failed: see $OUT/summarize.log"
cat "$OUT/summary.md"
