#!/usr/bin/env bash
# Builds the Python wheel with maturin and runs its pytest tests, as CI does.
#
# Run after `cargo test --workspace` (or `cargo build -p lockstep-cli`): the tests compare
# against target/debug/lockstep, and the wheel is built in the same dev profile so that it
# reuses that build's compiled dependencies. Users build with --release (README).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/python-venv
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check 'maturin>=1.9.4,<2' 'pytest>=7'
rm -rf target/wheels-ci
"$venv/bin/maturin" build --profile dev -m crates/lockstep-python/Cargo.toml --out target/wheels-ci
"$venv/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall target/wheels-ci/lockstep-*.whl
# From the tests' directory, so that `import lockstep` is the installed wheel.
cd crates/lockstep-python/tests
LOCKSTEP_CLI="${LOCKSTEP_CLI:-$PWD/../../../target/debug/lockstep}" "../../../$venv/bin/python" -m pytest -q "$@"
