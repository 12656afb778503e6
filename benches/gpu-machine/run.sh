#!/usr/bin/env bash
# The GPU side by side, in one sitting on one machine: lockstep `gpu` (own WGSL kernels,
# Vulkan), ONNX Runtime's WebGPU and CUDA execution providers through lockstep, lockstep
# `ort-cpu` on the host's threads, and llama.cpp (CUDA and CPU) built from the
# llama-cpp-python sdist, on the same real Gemma 3 shapes (270M and 1B, synthetic weights:
# speed does not depend on weight values; llama.cpp gets the same weights as a GGUF that
# its own llama-quantize turns into Q4_K_M, the type mix of the real file).
#
# On the machine, after benches/gpu-machine/pack.sh here and carrying .dev (and .gl):
#   benches/gpu-machine/run.sh unpack      # bin.tar.zst, llama.tar.zst, ortgpu parts
#   benches/gpu-machine/run.sh llama       # build llama-bench and llama-quantize (CUDA)
#   benches/gpu-machine/run.sh bench       # every engine, both shapes; tables at the end
#
# Steps are separate so that each fits one call; state lives in $WORK (default /tmp/lockstep-gpu).
set -euo pipefail
cd "$(dirname "$0")/../.."
repo="$PWD"
work="${WORK:-/tmp/lockstep-gpu}"
export LOCKSTEP_HOME="$work/home"
threads="${THREADS:-$(nproc)}"
reps="${REPS:-5}"
mkdir -p "$work"

vulkan() {
  # The machine's image has no Vulkan loader: the carried Debian packages bring it.
  if [[ -d .gl ]] && ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do dpkg -x "$f" / >/dev/null; done
    ldconfig
  fi
  local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  [[ -f "$icd" ]] && export VK_DRIVER_FILES="$icd"
  # onnxruntime-gpu finds CUDA 13 and cuDNN 9 in the image's Python packages.
  local nv
  for nv in $(python3 -c 'import nvidia, os; print(" ".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in os.listdir(p)))' 2>/dev/null); do
    [[ -d "$nv" ]] && LD_LIBRARY_PATH="$nv:${LD_LIBRARY_PATH:-}"
  done
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
}

case "${1:-}" in
unpack)
  zstd -dc .dev/bin.tar.zst | tar -C "$work" -xf -
  [[ -f .dev/llama.tar.zst ]] && zstd -dc .dev/llama.tar.zst | tar -C "$work" -xf -
  if compgen -G ".dev/ortgpu.tar.zst.*" >/dev/null; then
    cat .dev/ortgpu.tar.zst.* | zstd -dc | tar -C "$LOCKSTEP_HOME/runtimes" -xf -
  fi
  ls "$work" "$LOCKSTEP_HOME/runtimes"
  ;;
llama)
  src="$work/llama.cpp"
  cmake -S "$src" -B "$src/build" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$src/build" --target llama-bench llama-quantize -j "$(nproc)" 2>&1 | tail -3
  ;;
bench)
  vulkan
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv || true
  lockstep="$work/bin/lockstep"
  out="$work/results"
  mkdir -p "$out"
  for model in gemma3-270m-synthetic gemma3-1b-synthetic; do
    echo "== $model" >&2
    "$lockstep" fetch "$model" >&2
    # lockstep's engines, one table: each row names runtime package, provider and device.
    "$lockstep" bench --model "$model" --backends gpu,ort-webgpu,ort-cuda,ort-cpu \
      --threads "$threads" --reps "$reps" --json > "$out/$model.lockstep.json" || true
    "$lockstep" bench --model "$model" --backends gpu --reps 1 --profile > "$out/$model.profile.txt" 2>&1 || true
    # llama.cpp on the same weights: lockstep writes them as an F32 GGUF (the llama-cpp
    # backend's model.gguf), llama-quantize makes the Q4_K_M file people run.
    "$lockstep" bench --model "$model" --backends llama-cpp --reps 1 --gen-tokens 1 --prompt-tokens 8 >/dev/null 2>&1 || true
    f32="$(find "$LOCKSTEP_HOME/models" -path "*$model*" -name model.gguf | head -1)"
    q4="$out/$model.q4_k_m.gguf"
    [[ -f "$q4" ]] || "$work/llama.cpp/build/bin/llama-quantize" "$f32" "$q4" Q4_K_M >/dev/null
    "$work/llama.cpp/build/bin/llama-bench" -m "$q4" -ngl 99 -p 512 -n 128 -r "$reps" -o json > "$out/$model.llama-cuda.json"
    "$work/llama.cpp/build/bin/llama-bench" -m "$q4" -ngl 0 -t "$threads" -p 512 -n 128 -r "$reps" -o json > "$out/$model.llama-cpu.json"
  done
  python3 "$repo/benches/gpu-machine/table.py" "$out"
  ;;
*)
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
  ;;
esac
