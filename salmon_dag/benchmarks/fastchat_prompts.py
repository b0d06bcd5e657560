"""MT-Bench grading with FastChat's own judge prompts, read from a file the user supplies.

FastChat (lm-sys/FastChat, ``fastchat/llm_judge/data/judge_prompts.jsonl``) grades single answers
with four prompts: ``single-v1`` and, for the categories graded against a reference answer,
``single-math-v1``; their ``-multi-turn`` variants grade the second turn with the whole
conversation (and both reference turns). Each has a system prompt and a template with
``{question}`` / ``{answer}`` / ``{ref_answer_1}`` (or ``{question_1}`` … ``{answer_2}``,
``{ref_answer_2}``) fields. We ship no copy: ``benchmarks.mt_bench.judge_prompts`` names the file,
and published MT-Bench scores are comparable only with it (and ``benchmarks.judge.max_new_tokens:
2048``, FastChat's).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from salmon_dag.benchmarks.mt_bench import Question

# (reference-guided, second turn) -> FastChat's prompt name
PROMPT_NAMES = {(False, False): "single-v1", (True, False): "single-math-v1",
                (False, True): "single-v1-multi-turn", (True, True): "single-math-v1-multi-turn"}


class JudgePromptError(ValueError):
    """A judge-prompt file that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class JudgePrompt:
    name: str
    system_prompt: str
    prompt_template: str


def load_judge_prompts(path: str | Path) -> dict[str, JudgePrompt]:
    """The four single-answer prompts of a FastChat ``judge_prompts.jsonl`` (others are ignored)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise JudgePromptError(f"benchmarks.mt_bench.judge_prompts: {path} not found (FastChat's "
                               "fastchat/llm_judge/data/judge_prompts.jsonl)")
    found: dict[str, JudgePrompt] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if row.get("name") in PROMPT_NAMES.values():
                found[row["name"]] = JudgePrompt(row["name"], row["system_prompt"], row["prompt_template"])
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise JudgePromptError(f"{path}: line {number}: not a judge prompt ({exc!r})") from None
    missing = [n for n in PROMPT_NAMES.values() if n not in found]
    if missing:
        raise JudgePromptError(f"{path}: no {', '.join(missing)} prompt (FastChat's single-answer grading needs all four)")
    return found


def judge_request(prompts: dict[str, JudgePrompt], question: Question, answers: Sequence[str], turn: int,
                  reference: Sequence[str] | None) -> tuple[str, str]:
    """(system prompt, user message) grading turn ``turn`` (0 or 1) of ``answers`` to ``question``;
    ``reference``: the question's reference turns when it is graded against them."""
    prompt = prompts[PROMPT_NAMES[(reference is not None, turn > 0)]]
    if turn == 0:
        fields = {"question": question.turns[0], "answer": answers[0]}
        if reference is not None:
            fields["ref_answer_1"] = reference[0]
    else:
        fields = {"question_1": question.turns[0], "answer_1": answers[0],
                  "question_2": question.turns[1], "answer_2": answers[1]}
        if reference is not None:
            fields |= {"ref_answer_1": reference[0], "ref_answer_2": reference[1] if len(reference) > 1 else ""}
    try:
        return prompt.system_prompt, prompt.prompt_template.format(**fields)
    except (KeyError, IndexError) as exc:
        raise JudgePromptError(f"judge prompt {prompt.name}: its template asks for {exc} "
                               f"(it may fill {', '.join(sorted(fields))})") from None
