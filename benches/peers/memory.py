#!/usr/bin/env python3
"""Peak memory of one short generation, by KV budget, for lockstep's backends and llama.cpp.

Each measurement is a fresh process under GNU time (`%M`: the process's peak resident set,
what /proc's VmHWM says at exit): load the model, one prompt, a few greedy tokens, with the
KV budget (context) fixed up front. lockstep runs `lockstep run --context N`, which also
prints what the session allocates and, for GPU backends, the device buffers it holds;
llama.cpp runs through llama-cpp-python with `n_ctx=N` in both SWA cache modes: the default
`swa_full=True` (every layer's cache at n_ctx) and `swa_full=False` (sliding layers at
their window).

    benches/peers/memory.sh [--contexts 4096,32768] [--backends ort-cpu,gpu] [--threads N]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

PROMPT = "The three primary colors are"


def log(msg):
    print(f"memory: {msg}", file=sys.stderr, flush=True)


def timed(cmd, env=None):
    """Runs cmd under GNU time; returns (peak RSS bytes, stdout, stderr)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        p = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", t.name] + cmd,
                           capture_output=True, text=True, env=env)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({p.returncode}): {p.stderr.strip()[-400:]}")
        return int(t.read().strip().splitlines()[-1]) * 1024, p.stdout, p.stderr


def lockstep(binary, backend, ctx, gen, threads, model):
    cmd = [binary, "run", "--backend", backend, "--context", str(ctx), "--max-tokens", str(gen),
           "--model", model]
    if threads:
        cmd += ["--threads", str(threads)]
    peak, out, err = timed(cmd + [PROMPT])
    row = {"engine": f"lockstep {backend}", "context": ctx, "peak_rss": peak, "text": out.strip()}
    m = re.search(r"allocates (.*)$", err, re.M)
    if m:
        row["session"] = m.group(1)
    m = re.search(r"device buffers ([0-9.]+) MiB", err)
    if m:
        row["device_mib"] = float(m.group(1))
    return row


LLAMA = r"""
import sys, llama_cpp
gguf, ctx, gen, threads, swa_full = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
llm = llama_cpp.Llama(model_path=gguf, n_ctx=ctx, n_threads=threads, n_threads_batch=threads,
                      swa_full=swa_full, verbose=False)
out = llm(sys.argv[6], max_tokens=gen, temperature=0.0)
print(out["choices"][0]["text"])
"""


def llama(python, gguf, ctx, gen, threads, swa_full):
    peak, out, _ = timed([python, "-c", LLAMA, gguf, str(ctx), str(gen), str(threads),
                          "1" if swa_full else "0", PROMPT])
    return {"engine": f"llama.cpp swa_full={swa_full}", "context": ctx, "peak_rss": peak,
            "text": out.strip()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lockstep", required=True, help="the lockstep binary")
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--model", default="gemma3-270m")
    ap.add_argument("--contexts", default="4096,32768")
    ap.add_argument("--backends", default="ort-cpu,gpu")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--gen", type=int, default=16)
    ap.add_argument("--out")
    a = ap.parse_args()

    rows = []
    for ctx in [int(c) for c in a.contexts.split(",")]:
        for b in [b for b in a.backends.split(",") if b]:
            log(f"lockstep {b}, context {ctx}")
            rows.append(lockstep(a.lockstep, b, ctx, a.gen, a.threads, a.model))
        for swa_full in (True, False):
            log(f"llama.cpp swa_full={swa_full}, context {ctx}")
            rows.append(llama(sys.executable, a.gguf, ctx, a.gen, a.threads, swa_full))

    print("\n| engine | context | peak RSS MiB | device buffers MiB | session (as announced) |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        dev = f"{r['device_mib']:.1f}" if "device_mib" in r else "-"
        print(f"| {r['engine']} | {r['context']} | {r['peak_rss'] / 2**20:.0f} | {dev} | {r.get('session', '-')} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows, "load_avg": os.getloadavg()}, f, indent=1)
        log(f"written to {a.out}")


if __name__ == "__main__":
    main()
