#!/usr/bin/env bash
# Peak RSS (and GPU device buffers) of one short generation by KV budget: lockstep's
# backends against llama.cpp in both SWA cache modes, each in a fresh process.
#
#   benches/peers/memory.sh [--contexts 4096,32768] [--backends ort-cpu,gpu] [--threads N]
#
# Uses the peers' virtual environment (run.sh builds it) and target/release/lockstep
# (LOCKSTEP_BIN overrides).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${LOCKSTEP_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/lockstep}"
venv="$cache/peers-venv"
gguf="${PEERS_GGUF:-$cache/sources/gemma3-270m/gemma-3-270m-q4_k_m.gguf}"
bin="${LOCKSTEP_BIN:-$repo/target/release/lockstep}"
if ! "$venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
  echo "memory: llama-cpp-python is missing from $venv; run benches/peers/run.sh once" >&2
  exit 1
fi
[[ -x "$bin" ]] || (cd "$repo" && cargo build --release -q -p lockstep-cli)
mkdir -p "$cache/peers"
"$venv/bin/python" "$repo/benches/peers/memory.py" --lockstep "$bin" --gguf "$gguf" \
  --out "$cache/peers/memory.json" "$@"
