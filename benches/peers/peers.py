#!/usr/bin/env python3
"""Measure onnxruntime-genai and llama.cpp (llama-cpp-python) on the prompt ids that
`lockstep bench --json` ran, with the same thread count, and print our/peer ratios.

Run through run.sh, which builds the virtual environment and produces our JSON first.
pp = prefill of the prompt in one call; tg = tokens generated one at a time (greedy, the
argmax taken on the host as ours is) after a short prompt: the same definitions as ours.
"""

import argparse
import json
import os
import statistics
import sys
import time


def log(msg):
    print(f"peers: {msg}", file=sys.stderr, flush=True)


def stats(xs):
    return {
        "mean": statistics.fmean(xs),
        "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "samples": xs,
    }


def loadavg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def bench_genai(model_dir, prompt, tg_prompt, gen, reps, threads):
    import onnxruntime_genai as og

    config = og.Config(model_dir)
    config.clear_providers()  # CPU
    # Threads as ours; overlay leaves the converter's genai_config.json untouched.
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": threads, "inter_op_num_threads": 1}}}}))
    t = time.perf_counter()
    model = og.Model(config)
    load_s = time.perf_counter() - t

    def generator(max_length):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=max_length, do_sample=False, top_k=1)
        return og.Generator(model, params)

    def pp_once():
        g = generator(len(prompt) + 1)
        t = time.perf_counter()
        g.append_tokens(prompt)  # runs the model over the whole prompt
        return time.perf_counter() - t

    def tg_once():
        g = generator(len(tg_prompt) + gen + 2)
        g.append_tokens(tg_prompt)
        g.generate_next_token()  # samples from the prompt's logits: no model run
        t = time.perf_counter()
        n = 0
        for _ in range(gen):
            if g.is_done():
                break
            g.generate_next_token()  # one model step + greedy pick
            n += 1
        return n, time.perf_counter() - t

    return run_tests("onnxruntime-genai " + og.__version__, load_s, pp_once, tg_once,
                     len(prompt), gen, reps)


def bench_llama(gguf, prompt, tg_prompt, gen, reps, threads):
    import numpy as np
    import llama_cpp

    t = time.perf_counter()
    n_ctx = max(len(prompt), len(tg_prompt) + gen) + 16
    # scores has n_batch rows: as many as the context, so tg can read the last position's.
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                          n_threads=threads, n_threads_batch=threads, verbose=False)
    load_s = time.perf_counter() - t

    def pp_once():
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompt)
        return time.perf_counter() - t

    def tg_once():
        llm.reset()
        llm.eval(tg_prompt)
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        t = time.perf_counter()
        for _ in range(gen):
            llm.eval([tok])
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return gen, time.perf_counter() - t

    return run_tests("llama.cpp (llama-cpp-python " + llama_cpp.__version__ + ")", load_s,
                     pp_once, tg_once, len(prompt), gen, reps)


def bench_llama_workload(gguf, workload, reps, threads, max_ngram, num_pred):
    """The workload's prompt ids through llama-cpp-python's own generation loop, greedy
    (temp 0, no penalty), plain and with its prompt-lookup speculative decoding
    (`LlamaPromptLookupDecoding`), the two interleaved prompt by prompt. Decode rate as
    ours: tokens after the first over the time from the first token to the last."""
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    prompts, max_new = workload["prompts"], workload["max_new_tokens"]
    n_ctx = max(len(p["ids"]) for p in prompts) + max_new + 16
    modes = [("plain", None),
             (f"prompt lookup (max_ngram_size {max_ngram}, num_pred_tokens {num_pred})",
              LlamaPromptLookupDecoding(max_ngram_size=max_ngram, num_pred_tokens=num_pred))]
    llms = []
    for name, draft in modes:
        llm = llama_cpp.Llama(model_path=gguf, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                              n_threads=threads, n_threads_batch=threads, verbose=False,
                              draft_model=draft)
        # Count model steps: each eval() is one llama_decode of the prompt or a draft.
        calls = [0]
        inner = llm.eval

        def counted(tokens, inner=inner, calls=calls):
            calls[0] += 1
            return inner(tokens)

        llm.eval = counted
        llms.append((name, llm, calls))

    def once(llm, calls, ids, n_max):
        llm.reset()
        calls[0] = 0
        eos = llm.token_eos()
        toks, t_first, t_last = [], None, None
        for tok in llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            now = time.perf_counter()
            t_first = t_first or now
            t_last = now
            toks.append(int(tok))
            if tok == eos or len(toks) >= n_max:
                break
        return toks, t_last - t_first, calls[0] - 1  # the first eval is the prefill

    for name, llm, calls in llms:
        log(f"llama.cpp workload {name}: warm-up")
        once(llm, calls, prompts[0]["ids"], 16)
    out = {name: {"rates": [], "steps": 0, "gen": 0, "prompts": {}} for name, _, _ in llms}
    for rep in range(1, reps + 1):
        tot = {name: [0, 0.0] for name, _, _ in llms}
        for p in prompts:
            for name, llm, calls in llms:
                toks, secs, steps = once(llm, calls, p["ids"], max_new)
                tot[name][0] += len(toks) - 1
                tot[name][1] += secs
                out[name]["steps"] += steps
                out[name]["gen"] += len(toks) - 1
                out[name]["prompts"][p["id"]] = toks
                log(f"llama.cpp {name}: {p['id']} rep {rep}/{reps}: {len(toks)} tokens, "
                    f"{(len(toks) - 1) / secs:.1f} tok/s, {steps} steps")
        for name in tot:
            out[name]["rates"].append(tot[name][0] / tot[name][1])
    plain = out[modes[0][0]]["prompts"]
    result = []
    for name, _, _ in llms:
        o = out[name]
        same = sum(o["prompts"][p["id"]] == plain[p["id"]] for p in prompts)
        result.append({"peer": "llama.cpp (llama-cpp-python " + llama_cpp.__version__ + ")",
                       "mode": name, "status": "ok", "decode": stats(o["rates"]),
                       "tokens_per_step": o["gen"] / o["steps"] if o["steps"] else None,
                       "same_as_plain": f"{same}/{len(prompts)}",
                       "tokens": o["prompts"]})
    return result


def run_tests(name, load_s, pp_once, tg_once, n_prompt, gen, reps):
    log(f"{name}: loaded in {load_s:.2f} s; warm-up")
    pp_once()
    pp, tg = [], []
    for rep in range(1, reps + 1):
        s = pp_once()
        pp.append(n_prompt / s)
        log(f"{name}: pp{n_prompt} rep {rep}/{reps}: {s:.3f} s, {n_prompt / s:.1f} tok/s")
    for rep in range(1, reps + 1):
        n, s = tg_once()
        tg.append(n / s)
        log(f"{name}: tg{gen} rep {rep}/{reps}: {n} tokens in {s:.3f} s, {n / s:.1f} tok/s")
    return {"peer": name, "status": "ok", "load_s": load_s, "pp": stats(pp), "tg": stats(tg)}


def guarded(name, fn, *args):
    """A peer that refuses the model is reported with its exact error, not dropped."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - the peer's own message is the report
        log(f"{name}: FAILED: {type(e).__name__}: {e}")
        return {"peer": name, "status": "failed", "reason": f"{type(e).__name__}: {e}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", required=True, help="`lockstep bench --json` output")
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--out", help="write the combined JSON here")
    ap.add_argument("--lookup-max-ngram", type=int, default=2,
                    help="LlamaPromptLookupDecoding's max_ngram_size (its default: 2)")
    ap.add_argument("--lookup-num-pred", type=int, default=10,
                    help="LlamaPromptLookupDecoding's num_pred_tokens (its default: 10)")
    ap.add_argument("--skip-genai", action="store_true", help="measure llama.cpp only")
    ap.add_argument("--reps", type=int, help="repetitions for the peers (default: ours')")
    a = ap.parse_args()

    ours = json.load(open(a.ours))
    prompt = ours["prompt_ids"]
    tg_prompt = prompt[: ours["tg_prompt_tokens"]] or prompt[:1]
    gen, reps, threads = ours["gen_tokens"], a.reps or ours["reps"], ours["threads"] or os.cpu_count()
    load_start = loadavg()
    peers = []
    if not a.skip_genai:
        peers.append(guarded("onnxruntime-genai", bench_genai, a.model_dir, prompt, tg_prompt,
                             gen, reps, threads))
    peers.append(guarded("llama.cpp", bench_llama, a.gguf, prompt, tg_prompt, gen, reps, threads))
    workload_peers = []
    if ours.get("workload"):
        w = guarded("llama.cpp workload", bench_llama_workload, a.gguf, ours["workload"], reps,
                    threads, a.lookup_max_ngram, a.lookup_num_pred)
        workload_peers = w if isinstance(w, list) else [w]
    load_end = loadavg()

    pp_name, tg_name = f"pp{len(prompt)}", f"tg{gen}"
    rows = [(r["backend"] + " (lockstep)", r) for r in ours["results"] if r["status"] == "ok"]
    rows += [(p["peer"], p) for p in peers if p["status"] == "ok"]
    print(f"\n| runtime | {pp_name} t/s | {tg_name} t/s | load s |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        show = lambda s: f"{s['mean']:.1f} ± {s['sd']:.1f}" if s else "-"
        print(f"| {name} | {show(r.get('pp'))} | {show(r.get('tg'))} | {r['load_s']:.2f} |")
    for p in peers:
        if p["status"] != "ok":
            print(f"| {p['peer']} | failed: {p['reason']} | | |")

    ratios = []
    for r in ours["results"]:
        if r["status"] != "ok":
            continue
        for p in peers:
            if p["status"] != "ok":
                continue
            ratio = {"ours": r["backend"], "peer": p["peer"]}
            for test in ("pp", "tg"):
                if r.get(test) and p.get(test):
                    ratio[test] = r[test]["mean"] / p[test]["mean"]
            ratios.append(ratio)
            print(f"\n{r['backend']} / {p['peer']}: prefill ({pp_name}) x{ratio.get('pp', float('nan')):.2f}, "
                  f"decode ({tg_name}) x{ratio.get('tg', float('nan')):.2f}  (>1: lockstep faster)", end="")
    if ours.get("workload"):
        w = ours["workload"]
        print(f"\n\nworkload {w['name']}: {len(w['prompts'])} prompts, up to {w['max_new_tokens']} "
              f"new tokens each, greedy; decode tok/s of the whole workload, mean ± sd over {reps} reps\n")
        print("| engine | mode | decode t/s | tokens/step | same tokens as plain |")
        print("|---|---|---:|---:|---:|")
        rows = []
        for r in ours["results"]:
            for m in r.get("workload") or []:
                same = [p.get("same_as_plain") for p in m["prompts"] if "same_as_plain" in p]
                rows.append((r["backend"] + " (lockstep)", m["mode"], m["decode"],
                             m.get("tokens_per_step"),
                             f"{sum(same)}/{len(same)}" if same else "-"))
        for p in workload_peers:
            if p["status"] == "ok":
                rows.append((p["peer"], p["mode"], p["decode"], p.get("tokens_per_step"),
                             p["same_as_plain"] if p["mode"] != "plain" else "-"))
            else:
                print(f"| llama.cpp | failed: {p['reason']} | | | |")
        for eng, mode, d, tps, same in rows:
            tps = f"{tps:.2f}" if tps else "-"
            print(f"| {eng} | {mode} | {d['mean']:.1f} ± {d['sd']:.1f} | {tps} | {same} |")
        peer = {p["mode"]: p for p in workload_peers if p["status"] == "ok"}
        for r in ours["results"]:
            for m in r.get("workload") or []:
                for pmode, p in peer.items():
                    ratio = m["decode"]["mean"] / p["decode"]["mean"]
                    ratios.append({"ours": f"{r['backend']} {m['mode']}", "peer": f"llama.cpp {pmode}",
                                   "workload": ratio})
                    print(f"\n{r['backend']} {m['mode']} / llama.cpp {pmode}: x{ratio:.2f}", end="")
    m = ours["machine"]
    print(f"\n\nthreads {threads}, {reps} reps, {m['cpu']} ({m['logical_cpus']} logical CPUs); load avg: "
          f"lockstep run {m['load_avg_start'][0]:.2f} -> {m['load_avg_end'][0]:.2f}, "
          f"peers {load_start:.2f} -> {load_end:.2f}")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"ours": ours, "peers": peers, "workload_peers": workload_peers,
                       "ratios": ratios,
                       "peer_load_avg": [load_start, load_end]}, f, indent=1)
        log(f"combined results written to {a.out}")


if __name__ == "__main__":
    main()
