"""The real Gemma 3 270M, once: the continuation README and `lockstep run` show."""

import lockstep
from conftest import cli_run

PROMPT = "The three primary colors are"


def test_real_model_continues_like_lockstep_run():
    backend = lockstep.Model("gemma3-270m").backend("ort-cpu")
    gen = backend.session(64).generate(PROMPT, max_new_tokens=12)
    tokens = [(t.id, t.text) for t in gen]
    assert gen.text == " red, blue, and yellow. The three primary colors are"
    assert tokens == cli_run("gemma3-270m", PROMPT, "--max-tokens", "12")
