"""conform() and bench() return what `lockstep conform --json` and `lockstep bench --json`
print."""

import lockstep
from conftest import REPO, TINY, cli_json

# Timings differ from run to run; everything else must be identical.
TIMINGS = {"seconds"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def test_conform_returns_the_cli_report():
    prompts = ["fact-short", "code-python"]
    # One conformance directory for both, named explicitly (the reports carry its path).
    suites = REPO / "conformance"
    report = lockstep.conform(TINY, ["ort-cpu", "no-such-backend"], prompts=prompts, progress=False,
                              conformance_dir=str(suites))
    cli = cli_json("conform", "--model", TINY, "--backends", "ort-cpu,no-such-backend",
                   "--prompts", ",".join(prompts), "--dir", str(suites))
    assert without_timings(report) == without_timings(cli)
    assert report["prompts"] == prompts
    statuses = {b["id"]: b["status"] for b in report["backends"]}
    assert statuses == {"ort-cpu": "reference", "no-such-backend": "unavailable"}
    golden = report["golden"]
    assert golden["state"] == "checked"
    assert [p["id"] for p in golden["prompts"]] == prompts
    assert all(not p["failures"] for p in golden["prompts"])


def test_bench_returns_the_cli_report():
    args = dict(prompt_tokens=16, gen_tokens=4, tg_prompt_tokens=4, reps=1)
    report = lockstep.bench(["ort-cpu"], TINY, **args)
    cli = cli_json("bench", "--backends", "ort-cpu", "--model", TINY, "--prompt-tokens", "16",
                   "--gen-tokens", "4", "--tg-prompt-tokens", "4", "--reps", "1")
    assert report.keys() == cli.keys()
    assert report["prompt_ids"] == cli["prompt_ids"] and len(report["prompt_ids"]) == 16
    assert [r.keys() for r in report["results"]] == [r.keys() for r in cli["results"]]
    assert report["results"][0]["backend"] == cli["results"][0]["backend"]
