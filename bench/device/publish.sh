#!/usr/bin/env bash
# Publishes the device runner (bench/DeviceRunner: kernel checks against the cpu backend, GEMM vs cuBLAS, bandwidth,
# training step, the Hugging Face export) as one self-contained linux-x64 file for the device machine, which has CUDA
# and Python but no .NET SDK and no network. The working tree plus what is carried must fit in 64 MiB there, so the
# file is checked against what the tracked tree leaves.
# Usage: bench/device/publish.sh   then run bench/device/run.sh on the device with bench/device/runner carried.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/device/runner
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
rm -rf "$out"
mkdir -p "$out"
# One self-contained file (the .NET runtime, ILGPU and Nanolora), then xz: measured here, the bundle's own deflate
# compression gave 39.7 MiB, which with the 26 MiB tree does not fit; xz -9e of the plain bundle gives ~26 MiB.
# run.sh unpacks it with Python's lzma module (Python is on the device machine; xz may not be).
# Not trimmed: ILGPU compiles kernels from IL by reflection, which trimming would break.
# The runner's project keeps src/Transformer's 91 MB all-MiniLM-L6-v2 package DLL out of the published folder.
dotnet publish bench/DeviceRunner/Nanolora.DeviceRunner.csproj -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=false -p:IncludeNativeLibrariesForSelfExtract=true \
  -p:DebugType=none -o "$build" >/dev/null
echo "bundle $(( $(stat -c %s "$build/Nanolora.DeviceRunner") / 1024 / 1024 )) MiB uncompressed; xz -9e (a few minutes on 2 cores)"
xz -9e -T1 -c "$build/Nanolora.DeviceRunner" > "$out/Nanolora.DeviceRunner.xz"
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
