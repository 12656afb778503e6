#!/usr/bin/env bash
# One command: lockstep (ORT CPU) vs onnxruntime-genai vs llama.cpp, same prompt ids, same
# threads, one run, our/peer ratios printed at the end.
#
#   benches/peers/run.sh [--threads N] [--prompt-tokens 512] [--gen-tokens 128] [--reps 5]
#   benches/peers/run.sh --threads 2 --workload grounded --speculate   # + the grounded workload:
#       ours plain and speculative, llama.cpp plain and with its prompt lookup, same prompt ids
#   PEERS_PY_ARGS="--skip-genai --lookup-num-pred 10" passes options to peers.py.
#
# Peers live in a virtual environment in the cache (outside the repo), CPU wheels from PyPI:
# onnxruntime-genai ships manylinux wheels; llama-cpp-python is an sdist, built once with
# cmake from PyPI (about 10-20 minutes on 2 busy cores). Extra arguments go to `lockstep bench`.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${LOCKSTEP_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/lockstep}"
venv="$cache/peers-venv"
# Converted models live under models/v<converter version>/; the newest one is ours.
model_dir="${PEERS_MODEL_DIR:-$(ls -d "$cache"/models/v*/gemma3-270m 2>/dev/null | sort -V | tail -1)}"
gguf="${PEERS_GGUF:-$cache/sources/gemma3-270m/gemma-3-270m-q4_k_m.gguf}"
threads="$(nproc)"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done

if ! "$venv/bin/python" -c 'import onnxruntime_genai, llama_cpp, numpy' 2>/dev/null; then
  echo "peers: installing onnxruntime-genai and llama-cpp-python into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  # CPU only; the llama.cpp build uses every core and the cmake/ninja wheels from PyPI.
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" "$venv/bin/pip" install -q \
    onnxruntime-genai==0.18.0 llama-cpp-python==0.3.36 numpy
fi

# Ours: LOCKSTEP_BENCH_CMD if set (e.g. "target/release/lockstep bench"), else `lockstep bench`
# if the CLI builds and has it, else the bench crate's own binary.
cd "$repo"
if [[ -n "${LOCKSTEP_BENCH_CMD:-}" ]]; then
  read -r -a ours <<< "$LOCKSTEP_BENCH_CMD"
elif cargo build --release -q -p lockstep-cli 2>/dev/null && target/release/lockstep bench --help >/dev/null 2>&1; then
  ours=(target/release/lockstep bench)
else
  cargo build --release -q -p lockstep-bench --bin lockstep-bench
  ours=(target/release/lockstep-bench)
fi

out="$cache/peers"
mkdir -p "$out"
echo "peers: ${ours[*]} --backends ort-cpu --model $model_dir --threads $threads ${args[*]:-}" >&2
"${ours[@]}" --backends ort-cpu --model "$model_dir" --threads "$threads" --json \
  --svg "$out/lockstep.svg" "${args[@]}" > "$out/lockstep.json"
"$venv/bin/python" "$repo/benches/peers/peers.py" --ours "$out/lockstep.json" \
  --model-dir "$model_dir" --gguf "$gguf" --out "$out/last.json" ${PEERS_PY_ARGS:-}
