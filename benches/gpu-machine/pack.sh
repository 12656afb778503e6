#!/usr/bin/env bash
# Packs what the GPU machine needs for benches/gpu-machine/run.sh into .dev/ (ignored by
# git), in pieces small enough for one transfer each (the lent machine takes 64 MiB a call
# and has no registry access):
#
#   .dev/bin.tar.zst           lockstep and gpu_bench (release, stripped), the tokenizer,
#                              the pinned CPU runtime and onnxruntime-node (WebGPU)
#   .dev/llama.tar.zst         llama.cpp from the llama-cpp-python sdist on PyPI (the version
#                              the CPU peer harness pins), without its docs, tests and models
#   .dev/ortgpu.tar.zst.NN     onnxruntime-gpu (CUDA provider), split in ~55 MB parts
#
#   benches/gpu-machine/pack.sh            # then carry .dev (and .gl, for Vulkan) in order
#
# Run from the repository root, after `lockstep fetch --runtime all` (or the runtimes below).
set -euo pipefail
cd "$(dirname "$0")/../.."
cache="${LOCKSTEP_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/lockstep}"
llama_version=0.3.36
out=.dev
mkdir -p "$out"

cargo build --release -p lockstep-cli -p lockstep-gpu --example gpu_bench
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin" "$stage/home/runtimes" "$stage/home/sources"
cp target/release/lockstep target/release/lockstep-ort-host target/release/examples/gpu_bench "$stage/bin/"
strip "$stage"/bin/*
for rt in onnxruntime-1.31.1 onnxruntime-node-1.30.0; do
  [[ -d "$cache/runtimes/$rt" ]] || target/release/lockstep fetch --runtime "$rt"
  cp -r "$cache/runtimes/$rt" "$stage/home/runtimes/"
done
# The tokenizer package only: synthetic models convert there from it.
cp -r "$cache/sources/gemma3-270m" "$stage/home/sources/"
rm -f "$stage"/home/sources/gemma3-270m/*.gguf "$stage"/home/sources/gemma3-270m/*.part*
tar -C "$stage" -cf - bin home | zstd -q -T0 -19 -f -o "$out/bin.tar.zst"

sdist="$stage/sdist"
mkdir -p "$sdist"
python3 -m pip download -q --no-deps --no-binary :all: -d "$sdist" "llama-cpp-python==$llama_version"
tar -C "$sdist" -xzf "$sdist/llama_cpp_python-$llama_version.tar.gz"
src="$sdist/llama_cpp_python-$llama_version/vendor/llama.cpp"
rm -rf "$src"/{models,docs,media,.github,.devops,gguf-py,requirements,tests,conversion} "$src/tools/server/public"
tar -C "$(dirname "$src")" -cf - llama.cpp | zstd -q -T0 -19 -f -o "$out/llama.tar.zst"

rt=onnxruntime-gpu-1.31.1
[[ -d "$cache/runtimes/$rt" ]] || target/release/lockstep fetch --runtime "$rt"
rm -f "$out"/ortgpu.tar.zst.*
tar -C "$cache/runtimes" -cf - "$rt" | zstd -q -T0 -19 | split -b 55M -d - "$out/ortgpu.tar.zst."
ls -la "$out"
