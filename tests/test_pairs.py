"""Response pairs: two distinct samples per prompt, short and identical pairs dropped."""

import polars as pl

from salmon_dag.config import EngineConfig
from salmon_dag.engine import SamplingParams, create_engine
from salmon_dag.engine.base import Completion
from salmon_dag.pairs import make_pairs, pair_id
from salmon_dag.templates import format_chat_prompt

PROMPTS = pl.DataFrame({"prompt_id": ["p1", "p2", "p3"], "prompt": ["a?", "b?", "c?"],
                        "question_type": ["general", "reasoning", "general"]})


def comp(text: str) -> Completion:
    return Completion(text=text, token_ids=(1, 2), finish_reason="stop")


def test_make_pairs_drops_short_and_identical():
    outputs = [[comp("one two three"), comp("four five six")], [comp("ok"), comp("long enough answer")],
               [comp("same words here"), comp("same words here")]]
    pairs, dropped = make_pairs(PROMPTS, outputs, min_words=3)
    assert pairs["prompt_id"].to_list() == ["p1"]
    assert dropped == {"too_short": 1, "identical": 1}
    assert pairs["pair_id"][0] == pair_id("p1", "one two three", "four five six")
    assert pairs["words_a"][0] == 3


def test_sampling_gives_two_distinct_responses_per_prompt(tiny_checkpoint):
    engine = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32"), str(tiny_checkpoint))
    outputs = engine.generate([format_chat_prompt(p) for p in ["Name a fruit.", "Say hello.", "Count to three."]],
                              SamplingParams(max_new_tokens=12, temperature=0.7, n=2, seed=0))
    pairs, dropped = make_pairs(PROMPTS, outputs, min_words=1)
    assert pairs.height + sum(dropped.values()) == 3
    assert dropped.get("identical", 0) == 0
    assert (pairs["response_a"] != pairs["response_b"]).all()
