"""Generation from Python on the tiny model: the same tokens as `lockstep run`, streaming,
rewinding, cancelling, threads, and one clear exception for each common mistake."""

import threading

import pytest

import lockstep
from conftest import TINY, cli_run

PROMPT = "The three primary colors are"


def generate(backend, prompt, max_new_tokens, **opts):
    session = backend.session(len(backend_tokens(prompt)) + max_new_tokens)
    gen = session.generate(prompt, max_new_tokens=max_new_tokens, **opts)
    return [(t.id, t.text) for t in gen], gen


def backend_tokens(prompt):
    return lockstep.Model(TINY).tokenize(prompt)


def test_greedy_streams_the_tokens_lockstep_run_prints(cpu):
    tokens, gen = generate(cpu, PROMPT, 24)
    assert tokens == cli_run(TINY, PROMPT, "--max-tokens", "24")
    assert len(tokens) == 24
    summary = gen.summary
    assert summary["tokens"] == [i for i, _ in tokens]
    assert summary["text"] == "".join(t for _, t in tokens) == gen.text
    assert summary["generated_tokens"] == 24
    assert summary["stop"] == {"reason": "max_tokens"}
    assert summary["backend"]["id"] == "ort-cpu"


def test_sampling_with_a_seed_matches_lockstep_run(cpu):
    opts = dict(temperature=0.9, top_k=40, top_p=0.95, seed=7)
    tokens, _ = generate(cpu, PROMPT, 24, **opts)
    flags = ["--max-tokens", "24", "--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "7"]
    assert tokens == cli_run(TINY, PROMPT, *flags)
    assert tokens != generate(cpu, PROMPT, 24, **{**opts, "seed": 8})[0]


def test_model_and_backend_describe_themselves(tiny, cpu):
    assert tiny.name == TINY
    assert tiny.config["vocab_size"] == 262144
    ids = tiny.tokenize(PROMPT)
    assert ids[0] == 2 and tiny.tokenize(PROMPT, add_bos=False) == ids[1:]
    assert tiny.detokenize(ids[1:]) == PROMPT
    info = cpu.info
    assert info["id"] == cpu.id == "ort-cpu"
    assert info["runtime"].startswith("ONNX Runtime")


def test_a_session_rewinds_and_continues(tiny, cpu):
    session = cpu.session(64)
    first = [t.id for t in session.generate(PROMPT, max_new_tokens=8)]
    n_prompt = len(tiny.tokenize(PROMPT))
    assert len(session) == n_prompt + 7 and session.max_tokens == 64
    # Rewind to just before the prompt's last token and feed it again: same continuation.
    session.truncate(n_prompt - 1)
    again = [t.id for t in session.generate([tiny.tokenize(PROMPT)[-1]], max_new_tokens=8)]
    assert again == first
    session.truncate(0)
    assert len(session) == 0
    with pytest.raises(lockstep.InvalidInputError, match="session holds 0"):
        session.truncate(3)


def test_breaking_out_stops_and_frees_the_session(cpu):
    session = cpu.session(64)
    gen = session.generate(PROMPT, max_new_tokens=20)
    with pytest.raises(lockstep.BusyError):
        session.generate("again", max_new_tokens=2)
    for i, _ in enumerate(gen):
        if i == 2:
            break
    gen.close()
    # Three tokens came out; the session fed the prompt and the first two of them.
    assert len(session) == len(backend_tokens(PROMPT)) + 2
    assert gen.summary is None
    assert list(session.generate(" and", max_new_tokens=2))


def test_cancel_ends_with_stop_reason_cancelled(cpu):
    gen = cpu.session(64).generate(PROMPT, max_new_tokens=20)
    got = []
    for token in gen:
        got.append(token)
        if len(got) == 3:
            gen.cancel()
    assert len(got) == 3
    assert gen.summary["stop"] == {"reason": "cancelled"}


def test_two_threads_two_sessions_one_backend(cpu):
    prompts = [PROMPT, "Water boils at a temperature of"]
    alone = [generate(cpu, p, 16)[0] for p in prompts]
    together = [None, None]

    def work(i):
        together[i] = generate(cpu, prompts[i], 16)[0]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_a_missing_model_is_one_clear_error():
    with pytest.raises(lockstep.ModelError, match="is neither a model directory nor a known model"):
        lockstep.Model("/no/such/model-dir")


def test_an_unknown_backend_is_one_clear_error(tiny):
    with pytest.raises(lockstep.InvalidInputError, match="unknown backend 'no-such-backend'; known backends: .*ort-cpu"):
        tiny.backend("no-such-backend")


def test_an_over_budget_prompt_is_one_clear_error_before_any_work(cpu):
    session = cpu.session(8)
    with pytest.raises(lockstep.ContextOverflowError, match="do not fit: the session's KV budget is 8"):
        session.generate(PROMPT, max_new_tokens=16)
    assert len(session) == 0
    # Every lockstep error is a LockstepError.
    with pytest.raises(lockstep.LockstepError):
        session.generate(PROMPT, max_new_tokens=0)
    with pytest.raises(lockstep.InvalidInputError):
        session.generate(PROMPT, max_new_tokens=4, temperature=float("nan"))
