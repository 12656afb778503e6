"""One table per model from benches/gpu-machine/run.sh's results: lockstep's engines
(`lockstep bench --json`) and llama.cpp (`llama-bench -o json`), pp512 / tg128 as
mean ± sd tokens/s, and each engine's ratio to llama.cpp's CUDA build."""

import json
import pathlib
import sys


def lockstep_rows(path):
    report = json.loads(path.read_text())
    for r in report["results"]:
        info = r.get("info") or {}
        label = info.get("package") or info.get("runtime") or ""
        if info.get("provider"):
            label += ", " + info["provider"]
        if r["status"] != "ok":
            yield r["backend"], label, None, None, r.get("reason")
            continue
        yield r["backend"], label + " / " + info.get("device", ""), r.get("pp"), r.get("tg"), None


def llama_rows(path, name):
    pp = tg = None
    for t in json.loads(path.read_text()):
        stats = {"mean": t["avg_ts"], "sd": t["stddev_ts"]}
        if t["n_prompt"] > 0 and t["n_gen"] == 0:
            pp = stats
        elif t["n_gen"] > 0 and t["n_prompt"] == 0:
            tg = stats
        build = t.get("build_commit", "")
        backend = t.get("backends", "")
    yield name, f"llama.cpp {build} ({backend})", pp, tg, None


def ratio(a, b):
    return "-" if not a or not b else f"x{a['mean'] / b['mean']:.2f}"


def show(s):
    return "-" if s is None else f"{s['mean']:.1f} ± {s['sd']:.1f}"


def main(out):
    out = pathlib.Path(out)
    for lock in sorted(out.glob("*.lockstep.json")):
        model = lock.name.removesuffix(".lockstep.json")
        rows = list(lockstep_rows(lock))
        for suffix, name in [("llama-cuda", "llama.cpp -ngl 99"), ("llama-cpu", "llama.cpp -ngl 0")]:
            f = out / f"{model}.{suffix}.json"
            if f.exists():
                rows += list(llama_rows(f, name))
        ref = next((r for r in rows if r[0] == "llama.cpp -ngl 99"), None)
        print(f"\n### {model}\n")
        print("| engine | runtime / device | pp512 t/s | tg128 t/s | pp vs llama.cpp CUDA | tg vs llama.cpp CUDA |")
        print("|---|---|---:|---:|---:|---:|")
        for name, label, pp, tg, reason in rows:
            rp = ratio(pp, ref[2]) if ref else "-"
            rt = ratio(tg, ref[3]) if ref else "-"
            if reason:
                label = f"unavailable: {reason}"
            print(f"| {name} | {label} | {show(pp)} | {show(tg)} | {rp} | {rt} |")


if __name__ == "__main__":
    main(sys.argv[1])
