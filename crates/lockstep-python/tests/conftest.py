"""Shared fixtures: the tiny model on ONNX Runtime's CPU backend, and the `lockstep` CLI
that the Python results are checked against."""

import json
import os
import pathlib
import subprocess

import pytest

import lockstep

REPO = pathlib.Path(__file__).resolve().parents[3]
TINY = "gemma3-tiny"


def cli_path() -> pathlib.Path:
    """The `lockstep` binary: $LOCKSTEP_CLI, else the workspace's debug build."""
    path = pathlib.Path(os.environ.get("LOCKSTEP_CLI", REPO / "target" / "debug" / "lockstep"))
    if not path.is_file():
        pytest.fail(f"no lockstep CLI at {path}: build it with `cargo build -p lockstep-cli` or set LOCKSTEP_CLI")
    return path


def cli_run(model: str, prompt: str, *flags: str) -> list:
    """`lockstep run --json`: the (id, text) of every token it streamed."""
    out = subprocess.run(
        [str(cli_path()), "run", "--json", "--model", model, "--backend", "ort-cpu", *flags, prompt],
        check=True,
        capture_output=True,
        text=True,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return [(e["token"], e["text"]) for e in events if "token" in e]


def cli_json(*args: str) -> dict:
    out = subprocess.run([str(cli_path()), *args, "--json"], capture_output=True, text=True)
    assert out.stdout.strip(), out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def tiny() -> lockstep.Model:
    return lockstep.Model(TINY)


@pytest.fixture(scope="session")
def cpu(tiny) -> lockstep.Backend:
    return tiny.backend("ort-cpu")
