#!/usr/bin/env bash
# Publishes the device runner (bench/DeviceRunner: kernel checks against the cpu backend, GEMM vs cuBLAS, bandwidth,
# training step, the Hugging Face export) as one self-contained linux-x64 file for the device machine, which has CUDA
# and Python but no .NET SDK and no network. The working tree plus what is carried must fit in 64 MiB there, so the
# file is checked against what the tracked tree leaves.
# Usage: bench/device/publish.sh   then run bench/device/run.sh on the device with bench/device/runner carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/device/runner
rm -rf "$out"
# Single file, compressed: the runtime and ILGPU come to a fraction of a plain self-contained folder.
# Not trimmed: ILGPU compiles kernels from IL by reflection, which trimming would break (see docs/PERFORMANCE.md).
# The runner's project keeps src/Transformer's 91 MB all-MiniLM-L6-v2 package DLL out of the published folder.
dotnet publish bench/DeviceRunner/Nanolora.DeviceRunner.csproj -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true \
  -p:DebugType=none -o "$out" >/dev/null
limit=$((64 * 1024 * 1024))
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
runner=$(du -sb "$out" | cut -f1)
margin=$((4 * 1024 * 1024)) # room for untracked files and what the tree gains before the run
ls -l "$out"
echo "runner $((runner / 1024 / 1024)) MiB + tracked tree $((tree / 1024 / 1024)) MiB (+4 MiB margin) of 64 MiB"
if (( runner + tree + margin > limit )); then
  echo "too large to carry to the device machine" >&2
  exit 1
fi
echo "fits: carry $out (run: bash bench/device/run.sh; see docs/PERFORMANCE.md, Device run)"
