#!/usr/bin/env bash
# Peer numbers for docs/PERFORMANCE.md, with 2 threads by default. Nothing under src/ depends on these packages.
#   matmul: PyTorch CPU (Debian's python3-torch) torch.mm and OpenBLAS cblas_sgemm at bench/MatmulBench.cs's sizes;
#   ops:    PyTorch softmax, layer_norm, add (and AdamW) at bench/OpsBench.cs's shapes (torch_ops.py);
#   train:  PyTorch nn.Transformer training step matching `Nanolora.Bench.dll train-step` (torch_train_step.py).
# Usage: [RAW_MALLOC=1] bench/peers/run-peers.sh [threads] [matmul|ops|train|all]   (defaults: 2 all)
set -euo pipefail
cd "$(dirname "$0")"
THREADS="${1:-2}"
WHAT="${2:-all}"
# Debian's python3-torch is installed for the system interpreter, not for a pyenv/venv python3 on PATH.
PY="${PYTHON:-/usr/bin/python3}"

. ./install-peers.sh

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus; threads=$THREADS"
if [ "$WHAT" = all ] || [ "$WHAT" = matmul ]; then
  echo "== PyTorch $("$PY" -c 'import torch; print(torch.__version__)') CPU (torch.mm, torch.set_num_threads($THREADS))"
  "$PY" torch_matmul.py "$THREADS"

  echo "== OpenBLAS cblas_sgemm (OPENBLAS_NUM_THREADS=$THREADS)"
  BUILD="$(mktemp -d)"
  cc -O2 -o "$BUILD/sgemm" sgemm.c -I/usr/include/x86_64-linux-gnu -lopenblas
  OPENBLAS_NUM_THREADS="$THREADS" "$BUILD/sgemm"
  rm -rf "$BUILD"
fi
# glibc serves blocks over its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh mmap pages, so a torch op
# that allocates its output page-faults it in on every call; on this VM that costs ~0.2 s per 64 MiB and swamped
# the ops and training-step timings (see docs/PERFORMANCE.md). Nanolora's caching pool never returns memory mid-run;
# to compare kernels rather than allocators, torch's ops and training step run with blocks up to 32 MiB kept on the
# heap. RAW_MALLOC=1 runs them with glibc's defaults instead.
if [ "${RAW_MALLOC:-0}" != 1 ]; then
  export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-33554432}" MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4294967296}"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = ops ]; then
  echo "== PyTorch CPU ops (torch.set_num_threads($THREADS); MALLOC_MMAP_THRESHOLD_=${MALLOC_MMAP_THRESHOLD_:-default})"
  "$PY" torch_ops.py "$THREADS"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = train ]; then
  "$PY" torch_train_step.py "$THREADS"
fi
