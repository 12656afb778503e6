#!/usr/bin/env python3
"""Where a decode step's time goes, from an ONNX Runtime profile (standard library only).

    LOCKSTEP_ORT_PROFILE=/tmp/prof lockstep bench --backends ort-cpu --threads 2 \
        --prompt-tokens 16 --gen-tokens 64 --reps 1
    scripts/ort-profile-summary.py /tmp/prof_*.json [TOP_NODES]

Takes the runs after the first three (prefill and warm-up), assigns every node's kernel
time to the run it falls in, and prints time per op type per step, the time outside
kernels (binding, allocation, the executor), and optionally the slowest nodes. Profiling
adds a fixed cost to every node, so small nodes look slower than they are: compare
shares between graphs profiled the same way, and speed only without profiling.
"""

import bisect
import collections
import json
import sys

events = json.load(open(sys.argv[1]))
runs = sorted(
    (e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"),
    key=lambda e: e["ts"],
)[3:]
if not runs:
    sys.exit("no decode runs in the profile")
starts = [r["ts"] for r in runs]
by_op, count, by_node = collections.Counter(), collections.Counter(), collections.Counter()
for e in events:
    if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
        continue
    i = bisect.bisect_right(starts, e["ts"]) - 1
    if i < 0 or e["ts"] > runs[i]["ts"] + runs[i]["dur"]:
        continue
    op = e["args"]["op_name"]
    by_op[op] += e["dur"]
    count[op] += 1
    by_node[e["name"]] += e["dur"]
k = len(runs)
step = sum(r["dur"] for r in runs) / k
kernels = sum(by_op.values()) / k
print(
    f"{k} runs: {step / 1000:.3f} ms per run, {kernels / 1000:.3f} ms in kernels, "
    f"{(step - kernels) / 1000:.3f} ms outside, {sum(count.values()) // k} nodes per run"
)
for op, d in by_op.most_common():
    print(f"  {op:36s} {count[op] // k:4d} nodes {d / k / 1000:8.3f} ms {100 * d / k / step:5.1f}%")
for name, d in by_node.most_common(int(sys.argv[2]) if len(sys.argv) > 2 else 0):
    print(f"    {name:56s} {d / k / 1000:8.3f} ms")
