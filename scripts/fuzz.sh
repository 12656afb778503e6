#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, one after another.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#   scripts/fuzz.sh seeds                                 rebuild the committed seed corpora
#
# cargo-fuzz needs nightly-only flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take them
# (install it with `cargo install cargo-fuzz`). New corpus entries go to fuzz/corpus/ (not
# committed); the committed seeds in fuzz/seeds/ are read only. A summary line per target
# (run time, executions, crash or not) is appended to fuzz/work/summary.txt.
# FUZZ_SANITIZER=address runs under ASan (slower; the default is none: the code under test
# is safe Rust, and every target checks its own allocation bounds).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "seeds" ]]; then
    export LOCKSTEP_WRITE_FUZZ_SEEDS=1
    cargo test -p lockstep-model --test reliability_gguf --test reliability_onnx fuzz_seeds -- --nocapture
    cargo test -p lockstep-generate --test reliability_input fuzz_seeds -- --nocapture
    exit 0
fi

secs="${1:-60}"
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(gguf onnx chat_template tokenizer)
fi
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
sanitizer="${FUZZ_SANITIZER:-none}"
mkdir -p fuzz/work

cd fuzz
status=0
for t in "${targets[@]}"; do
    cargo fuzz build -O -a -s "$sanitizer" "$t"
    mkdir -p "corpus/$t" "artifacts/$t"
    log="work/$t.log"
    start=$(date +%s)
    set +e
    # -rss_limit_mb: a trusted length field would show as an OOM long before a slow run.
    cargo fuzz run -O -a -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -timeout=30 -print_final_stats=1 \
        >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s)
    execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1 || true)
    if [[ $rc -eq 0 ]]; then result="no crash"; else result="CRASH (exit $rc, see fuzz/$log and fuzz/artifacts/$t)"; status=1; fi
    line="$(date -u +%FT%TZ) $t: ran $((end - start)) s, ${execs:-?} executions, $result"
    echo "$line" | tee -a work/summary.txt
done
exit $status
