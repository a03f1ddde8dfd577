#!/usr/bin/env bash
# Every comparison in docs/PERFORMANCE.md with its peers, in one go (about 12 minutes on 2 cores), so each session's
# numbers are comparable: the raw output goes to docs/results/bench-<UTC date-time>-<avx512|avx2>.txt, headed by the
# CPU model and flags, and the table between the run-all markers of docs/PERFORMANCE.md is regenerated from it
# (bench/summarize_run_all.py), never edited by hand.
#   GEMM: Nanolora against OpenBLAS cblas_sgemm, 5 rounds interleaved (median of medians, spread), with the FMA peak
#         measured on the machine in each round and PyTorch's torch.mm once; on an AVX-512 host also the AVX2 path (AVX-512 off in
#         .NET, OpenBLAS's Haswell kernels, the 256-bit FMA peak), so both instruction sets are measured every session;
#   ops, the training step (torch.nn.Transformer dims), LoRA's step against full fine-tuning (per-op profile),
#   activation checkpointing, LoRA's rank-r GEMMs, LoRA inference latency, sentence embeddings against ONNX Runtime.
# Usage: bench/run-all.sh [--no-write]   (--no-write: print the table, leave docs/PERFORMANCE.md alone)
# Installs its peers (python3-torch, OpenBLAS, gcc) with apt when missing; nothing under src/ needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
WRITE=1; [ "${1:-}" = "--no-write" ] && WRITE=0
THREADS=2
PY="${PYTHON:-/usr/bin/python3}"

. bench/peers/install-peers.sh

dotnet build -c Release bench -v q -nologo >/dev/null
BENCH="dotnet bench/bin/Release/net10.0/Nanolora.Bench.dll"
BUILD="$(mktemp -d)"; trap 'rm -rf "$BUILD"' EXIT
cc -O2 -o "$BUILD/sgemm" bench/peers/sgemm.c -I/usr/include/x86_64-linux-gnu -lopenblas
grep -qw avx512f /proc/cpuinfo && ISA=avx512 || ISA=avx2
STAMP="$(date -u +%Y-%m-%d-%H%M)"
OUT="docs/results/bench-$STAMP-$ISA.txt"
# torch's ops and training step keep blocks up to 32 MiB on the heap, as run-peers.sh explains.
export MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=4294967296

{
  echo "== run-all $STAMP UTC, commit $(git rev-parse --short HEAD)$(git diff --quiet && echo '' || echo ' (with uncommitted changes)')"
  echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cpus, flags: $(grep -m1 -ow -E 'avx2|fma|avx512f|avx512bw|avx512vl|avx512_bf16|amx_tile' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  echo "== load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); .NET $(dotnet --version), PyTorch $("$PY" -c 'import torch; print(torch.__version__)'), threads $THREADS"
  $BENCH fma-peak "$THREADS"
  $BENCH fma-peak 1
  for round in 1 2 3 4 5; do
    echo "== GEMM round $round"
    # The peak again in each round: a shared host's clock and load move between rounds, and each round's GEMM is
    # measured against the peak of its own minute.
    $BENCH fma-peak "$THREADS" | sed 's/^/round /'
    $BENCH matmul-quick cpu | grep '^nanolora'
    OPENBLAS_NUM_THREADS="$THREADS" "$BUILD/sgemm"
  done
  if [ "$ISA" = avx512 ]; then
    # The AVX2 path too, on the same host: .NET without AVX-512 (Vector512 off, so the 6×16 AVX2 micro-kernel runs) against
    # OpenBLAS held to its Haswell kernels, with the 256-bit FMA peak. Lines are prefixed "avx2 " for the summary.
    echo "== AVX2 pass: DOTNET_EnableAVX512=0, OPENBLAS_CORETYPE=Haswell"
    DOTNET_EnableAVX512=0 $BENCH fma-peak "$THREADS" | sed 's/^/avx2 /'
    for round in 1 2 3 4 5; do
      echo "== AVX2 GEMM round $round"
      DOTNET_EnableAVX512=0 $BENCH fma-peak "$THREADS" | sed 's/^/avx2 round /'
      DOTNET_EnableAVX512=0 $BENCH matmul-quick cpu | grep '^nanolora' | sed 's/^/avx2 /'
      OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS="$THREADS" "$BUILD/sgemm" | sed 's/^/avx2 /'
    done
  fi
  "$PY" bench/peers/torch_matmul.py "$THREADS"
  $BENCH ops-quick cpu
  "$PY" bench/peers/torch_ops.py "$THREADS"
  $BENCH train-step cpu
  "$PY" bench/peers/torch_train_step.py "$THREADS"
  $BENCH step-profile cpu small:32x96x16 transformer-base:8x64x64 steps=5
  $BENCH lowrank-gemm cpu
  $BENCH ckpt-step cpu small:32x96x16 transformer-base:4x64x64 steps=3
  $BENCH lora-quick cpu
  $BENCH embed-quick cpu
  echo "== load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
} 2>&1 | tee "$OUT"

if [ "$WRITE" = 1 ]; then "$PY" bench/summarize_run_all.py "$OUT" --write docs/PERFORMANCE.md; else "$PY" bench/summarize_run_all.py "$OUT"; fi
