"""MT-Bench-style inputs (issue 11 groundwork): question files in two formats, turn-by-turn answers
with earlier turns in context, and the judge prompt."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from salmon_dag.benchmarks.mt_bench import (
    CATEGORY_TEMPERATURE,
    conversation_prompt,
    generate_answers,
    load_questions,
    with_samples,
)
from salmon_dag.config import MTBenchConfig
from salmon_dag.engine.base import Completion
from salmon_dag.templates import rating_request

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write(path: Path, rows) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_both_question_formats_load(tmp_path):
    mt = _write(tmp_path / "mt.jsonl", [{"question_id": 7, "category": "math", "turns": ["1+1?", "Times 3?"],
                                         "reference": ["2", "6"]}])
    plain = _write(tmp_path / "plain.jsonl", [{"instruction": "Sort these.", "input": "b, a"}, {"prompt": "Hi"}])
    (q,) = load_questions(mt)
    assert (q.question_id, q.category, q.turns, q.reference) == ("7", "math", ("1+1?", "Times 3?"), ("2", "6"))
    a, b = load_questions(plain)
    assert a.turns == ("Sort these.\n\nb, a",) and a.category == "general" and b.turns == ("Hi",)
    bad = _write(tmp_path / "bad.jsonl", [{"turns": []}])
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 1: 'turns'"):
        load_questions(bad)


@pytest.mark.skipif(not (SHARED / "mt_bench_questions.jsonl").is_file(), reason="../shared/data is absent")
def test_the_public_mt_bench_files_load_with_references():
    qs = load_questions(SHARED / "mt_bench_questions.jsonl", SHARED / "mt_bench_reference_answers_gpt4.jsonl")
    assert len(qs) == 80 and all(len(q.turns) == 2 for q in qs)
    assert {q.category for q in qs} == set(CATEGORY_TEMPERATURE)
    assert all(q.reference and len(q.reference) == 2 for q in qs if q.category in ("math", "reasoning", "coding"))


class Recorder:
    """A stand-in engine: answers "A<turn>" and records prompts and temperatures."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params.temperature))
        return [[Completion(f"A{p.count('### User:')}", (1,), "stop")] for p in prompts]


def test_answers_are_generated_turn_by_turn_with_the_earlier_answers_in_context(tmp_path):
    qs = load_questions(_write(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "math", "turns": ["Q1", "Q2"]},
        {"question_id": 2, "category": "writing", "turns": ["W1"]},
    ]))
    engine = Recorder()
    assert generate_answers(engine, qs, max_new_tokens=8, seed=0) == [["A1", "A2"], ["A1"]]
    temps = sorted(t for _, t in engine.calls)
    assert temps == [0.0, 0.0, 0.7]  # math deterministic on both turns, writing sampled
    second_turn = [p for prompts, _ in engine.calls for p in prompts if "Q2" in p][0]
    assert second_turn == conversation_prompt(["Q1", "Q2"], ["A1"])
    assert second_turn.index("Q1") < second_turn.index("A1") < second_turn.index("Q2")
    assert second_turn.endswith("### Assistant:")


def test_rating_request_grades_the_last_turn_and_can_carry_a_reference():
    conv = [("user", "What is 2+2?"), ("assistant", "5")]
    plain, guided = rating_request(conv), rating_request(conv, reference="4")
    assert "Rating: [[5]]" in plain and "[Reference answer]" not in plain
    assert "[Reference answer]\n4" in guided and guided.index("[Reference answer]") < guided.index("[Assistant]\n5")
    with pytest.raises(ValueError, match="must end with the assistant"):
        rating_request([("user", "hi")])


@pytest.mark.skipif(not (SHARED / "self_instruct_user_oriented_instructions.jsonl").is_file(), reason="../shared/data is absent")
def test_self_instruct_user_oriented_instructions_keep_their_input():
    qs = load_questions(SHARED / "self_instruct_user_oriented_instructions.jsonl")
    assert len(qs) == 252 and qs[0].question_id == "user_oriented_task_0" and len(qs[0].turns) == 1
    instruction, given = qs[0].turns[0].split("\n\n", 1)
    assert instruction.startswith("The sentence you are given") and given.startswith("If you have any questions")


def test_samples_are_independent_conversations_at_one_temperature(tmp_path):
    qs = with_samples(load_questions(_write(tmp_path / "q.jsonl", [
        {"question_id": 1, "category": "math", "turns": ["Q1", "Q2"]}])), 3)
    assert [(q.question_id, q.sample) for q in qs] == [("1", 0), ("1", 1), ("1", 2)]
    engine = Recorder()
    assert generate_answers(engine, qs, max_new_tokens=8, seed=0, temperature=1.0) == [["A1", "A2"]] * 3
    assert {t for _, t in engine.calls} == {1.0} and [len(p) for p, _ in engine.calls] == [3, 3]
    with pytest.raises(ValidationError, match="needs a temperature above 0"):
        MTBenchConfig(samples=2)
