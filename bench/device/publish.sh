#!/usr/bin/env bash
# Publishes the bench harness (Nanolora.Bench: kernel benchmarks, training step, ptx-levels) as one
# self-contained linux-x64 file for the device machine, which has CUDA but no .NET SDK and no network.
# The working tree plus what is carried must fit in 64 MiB there, so the file is checked against
# what the tracked tree leaves. Usage: bench/device/publish.sh   (then carry bench/device/runner)
# Status: measured here, the bench harness comes to 48 MiB even compressed (BenchmarkDotNet brings Roslyn,
# TraceEvent and ClrMD), against ~35 MiB left by the 25 MiB tree, so this check fails today. Next step: a
# device runner project of its own, without BenchmarkDotNet, that this script publishes instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/device/runner
rm -rf "$out"
# Single file, compressed: the runtime and ILGPU come to a fraction of a plain self-contained folder.
# Not trimmed: ILGPU compiles kernels from IL by reflection, which trimming would break.
dotnet publish bench/Nanolora.Bench.csproj -c Release -r linux-x64 --self-contained true \
  -p:PublishSingleFile=true -p:EnableCompressionInSingleFile=true -p:IncludeNativeLibrariesForSelfExtract=true \
  -p:DebugType=none -o "$out" >/dev/null
limit=$((64 * 1024 * 1024))
tree=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -n 1 | cut -f1)
runner=$(du -sb "$out" | cut -f1)
margin=$((4 * 1024 * 1024)) # room for untracked files and what the tree gains before the run
echo "runner $((runner / 1024 / 1024)) MiB + tracked tree $((tree / 1024 / 1024)) MiB (+4 MiB margin) of 64 MiB"
if (( runner + tree + margin > limit )); then
  echo "too large to carry to the device machine" >&2
  exit 1
fi
