"""MT-Bench-style multi-turn benchmark inputs: question files and turn-by-turn answers.

A question file is JSON Lines in the MT-Bench format (``question_id``, ``category``, ``turns``,
optional ``reference``) or a plain instruction format (``instruction`` / ``prompt`` / ``question``,
optional ``input`` or Self-Instruct's ``instances[0].input``, ``category``, ``id``): one question per
line, any number of turns. Reference answers may also come from a separate file
(``{"question_id", "choices": [{"turns": [...]}]}``). Answers are generated turn by turn through the engine, the earlier turns and the policy's own
earlier answers in context, at a per-category temperature (MT-Bench's: deterministic for
extraction, math, coding and reasoning).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from salmon_dag.benchmarks.data import read_records, where
from salmon_dag.engine.base import Engine, SamplingParams
from salmon_dag.templates import ASSISTANT_TAG, format_dialogue

CATEGORY_TEMPERATURE = {
    "writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0, "reasoning": 0.0,
    "stem": 0.1, "humanities": 0.1,
}
DEFAULT_TEMPERATURE = 0.7
REFERENCE_CATEGORIES = frozenset({"math", "reasoning", "coding"})


@dataclass(frozen=True)
class Question:
    question_id: str
    category: str
    turns: tuple[str, ...]
    reference: tuple[str, ...] | None = None
    sample: int = 0  # which of a question's independent conversations (MTBenchConfig.samples)


def _question(row: dict, number: int, where: str) -> Question:
    qid = str(row.get("question_id", row.get("id", row.get("prompt_id", number))))
    turns = row.get("turns", row.get("prompt") if isinstance(row.get("prompt"), list) else None)
    if turns is not None:
        if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
            raise ValueError(f"{where}: line {number}: 'turns' must be a non-empty list of non-empty strings")
    else:
        text = next((row[k] for k in ("instruction", "prompt", "question") if isinstance(row.get(k), str)), None)
        if not text or not text.strip():
            raise ValueError(f"{where}: line {number}: no 'turns', 'instruction', 'prompt' or 'question' field")
        extra = row.get("input")
        instances = row.get("instances")  # Self-Instruct's layout: the input of the first instance
        if extra is None and isinstance(instances, list) and instances and isinstance(instances[0], dict):
            extra = instances[0].get("input")
        turns = [f"{text.strip()}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else text.strip()]
    reference = [r for r in (row.get("reference") or []) if isinstance(r, str)]
    return Question(qid, str(row.get("category") or "general"), tuple(turns), tuple(reference) if any(reference) else None)


def load_questions(source: str | Path, references: str | Path | None = None, limit: int | None = None,
                   split: str = "test", subset: str | None = None) -> list[Question]:
    """Questions from ``source`` (a local or bundled file, or a Hub dataset: see
    salmon_dag.benchmarks.data) in the MT-Bench or plain format (module docstring), with reference
    answers from ``references`` when given; the first ``limit`` when set."""
    source = str(source)
    questions = []
    for n, row in read_records(source, split, subset):
        questions.append(_question(row, n, where(source)))
        if limit and len(questions) >= limit:
            break
    if references is not None:
        refs = {}
        for _, row in read_records(str(references)):
            choices = row.get("choices") or [{}]
            refs[str(row.get("question_id"))] = tuple(choices[0].get("turns", []))
        questions = [q if q.reference or q.question_id not in refs else
                     Question(q.question_id, q.category, q.turns, refs[q.question_id]) for q in questions]
    return questions


def with_samples(questions: Sequence[Question], samples: int) -> list[Question]:
    """Each question ``samples`` times (sample 0, 1, ...): independent conversations, each turn 2
    seeing its own turn-1 answer. More than one only makes sense at a temperature above 0."""
    return [replace(q, sample=s) for s in range(samples) for q in questions]


def conversation_prompt(turns: Sequence[str], answers: Sequence[str]) -> str:
    """The policy prompt for the next turn: every earlier turn with its answer, then the new turn."""
    dialogue = []
    for i, turn in enumerate(turns):
        dialogue.append(("user", turn))
        if i < len(answers):
            dialogue.append(("assistant", answers[i]))
    return f"{format_dialogue(dialogue)}\n\n{ASSISTANT_TAG}"


def generate_answers(engine: Engine, questions: Sequence[Question], max_new_tokens: int, seed: int,
                     temperature: float | None = None) -> list[list[str]]:
    """Each question's answers, turn by turn (turn k sees turns 1..k and the answers so far), at
    ``temperature`` or, when None, MT-Bench's per-category temperature."""
    answers: list[list[str]] = [[] for _ in questions]
    for turn in range(max(len(q.turns) for q in questions)):
        by_temperature: dict[float, list[int]] = {}
        for i, q in enumerate(questions):
            if turn < len(q.turns):
                t = temperature if temperature is not None else CATEGORY_TEMPERATURE.get(q.category, DEFAULT_TEMPERATURE)
                by_temperature.setdefault(t, []).append(i)
        for t, rows in sorted(by_temperature.items()):
            prompts = [conversation_prompt(questions[i].turns[: turn + 1], answers[i]) for i in rows]
            params = SamplingParams(max_new_tokens=max_new_tokens, temperature=t, seed=seed + turn)
            for i, comps in zip(rows, engine.generate(prompts, params)):
                answers[i].append(comps[0].text.strip())
    return answers
