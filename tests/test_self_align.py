"""Self-align prompting, parsing and filtering (the pure functions behind self_align_sft_data)."""

from pathlib import Path

import pytest

from salmon_dag.principles import load_principles
from salmon_dag.self_align import build_prompt, distinct_ngram_ratio, filter_reason, parse_generation
from salmon_dag.templates import ANSWER_TAG, ASSISTANT_TAG, THOUGHTS_TAG

PRINCIPLES = Path(__file__).resolve().parents[1] / "principles"


@pytest.fixture(scope="module")
def pset():
    return load_principles(PRINCIPLES, "self_align")


def test_prompt_contains_every_principle_and_exemplar_exactly_once(pset):
    prompt = build_prompt(pset, "How do tides work?")
    for p in pset.data.principles:
        assert prompt.count(f"{p.name}: {p.definition.strip()}") == 1, p.name
    for e in pset.data.exemplars:
        assert prompt.count(e.prompt.strip()) == 1
        assert prompt.count(e.internal_thoughts.strip()) == 1
        assert prompt.count(e.answer.strip()) == 1
    assert prompt.rstrip().endswith(f"{ASSISTANT_TAG} {THOUGHTS_TAG}")
    assert prompt.count("How do tides work?") == 1


def test_parse_with_and_without_internal_thoughts():
    text = (" The user asks about tides. [Informative] applies.\n"
            f"{ANSWER_TAG} Tides come from the Moon's pull.\n\nThey repeat twice a day.\n\n### User: next question")
    parsed = parse_generation(text)
    assert parsed.internal_thoughts == "The user asks about tides. [Informative] applies."
    assert parsed.answer == "Tides come from the Moon's pull.\n\nThey repeat twice a day."
    plain = parse_generation(" Tides come from the Moon.\n### Assistant: again")
    assert plain.internal_thoughts is None and plain.answer == "Tides come from the Moon."
    assert parse_generation("").answer == ""
    # a model that re-opens the assistant turn instead of writing thoughts still gives its answer
    reopened = parse_generation("\n\n### Assistant: Tides follow the Moon.\n\n### User: more")
    assert reopened.internal_thoughts is None and reopened.answer == "Tides follow the Moon."


def test_filters(pset):
    kw = dict(min_words=2, max_words=20, min_distinct_trigram_ratio=0.5, pset=pset)
    assert filter_reason("Tides follow the Moon.", "stop", **kw) is None
    assert filter_reason("   ", "stop", **kw) == "empty"
    assert filter_reason("Tides follow the Moon.", "length", **kw) == "truncated"
    assert filter_reason("Tides follow the Moon.", "length", **kw, keep_truncated=True) is None
    assert filter_reason("word " * 30, "stop", **kw) == "too_long"
    assert filter_reason("Yes", "stop", **kw) == "too_short"
    assert filter_reason("the cat sat the cat sat the cat sat the cat sat", "stop", **kw) == "repetitive"
    leak = pset.data.principles[0].definition
    assert filter_reason(leak, "stop", **{**kw, "max_words": 200}) == "prompt_leak"


def test_distinct_ngram_ratio():
    assert distinct_ngram_ratio("a b c d e f") == 1.0
    assert distinct_ngram_ratio("a b a b a b a b a b") < 0.3


def test_sft_data_keeps_every_prompt_with_its_parsed_answer_and_filter_reason(pset):
    import polars as pl

    from salmon_dag.config import SelfAlignConfig
    from salmon_dag.engine.base import Completion
    from salmon_dag.self_align import SFT_DATA_SCHEMA, filtered_counts, sft_data

    prompts = pl.DataFrame({"prompt_id": ["a", "b", "c"], "prompt": ["Tides?", "Hi?", "Cats?"]})
    generations = [
        [Completion(f" Thinking.\n{ANSWER_TAG} Tides follow the pull of the Moon.", (1, 2, 3), "stop")],
        [Completion(f"{ANSWER_TAG} Hello there friend", (4,) * 48, "length")],
        [Completion("", (), "stop")],
    ]
    df = sft_data(prompts, generations, [100, 90, 80], pset, SelfAlignConfig(min_words=3))
    assert df.schema == pl.Schema(SFT_DATA_SCHEMA)
    assert df["prompt_id"].to_list() == ["a", "b", "c"]
    assert df["response"][0] == "Tides follow the pull of the Moon." and df["internal_thoughts"][0] == "Thinking."
    assert df["filter_reason"].to_list() == [None, "truncated", "empty"]
    assert df["response_tokens"].to_list() == [3, 48, 0] and df["prompt_tokens"].to_list() == [100, 90, 80]
    assert filtered_counts(df) == (1, {"truncated": 1, "empty": 1})
    with pytest.raises(ValueError):  # a generation missing for a prompt is an error, not a silent cut
        sft_data(prompts, generations[:2], [100, 90, 80], pset, SelfAlignConfig())
