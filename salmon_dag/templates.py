"""The one place for every prompt template of the project.

All stages (pre-training corpus, self-align prompting, SFT, judging, reward model, PPO, evaluation)
format conversations through these functions, so the base model sees at pre-training time exactly
the turn markers that later stages generate and stop on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

USER_TAG = "### User:"
ASSISTANT_TAG = "### Assistant:"
# Generation of an assistant turn stops when the model starts the next user turn.
TURN_SEPARATOR = "\n\n### User:"
STOP_SEQUENCES: tuple[str, ...] = (TURN_SEPARATOR,)


def format_turn(role: str, text: str) -> str:
    """One turn: ``### User: text`` or ``### Assistant: text``."""
    tag = {"user": USER_TAG, "assistant": ASSISTANT_TAG}.get(role)
    if tag is None:
        raise ValueError(f"unknown role {role!r} (expected 'user' or 'assistant')")
    return f"{tag} {text.strip()}"


def format_dialogue(turns: Iterable[tuple[str, str]]) -> str:
    """A whole conversation; turns are separated by one blank line."""
    return "\n\n".join(format_turn(role, text) for role, text in turns)


def format_chat_prompt(user_prompt: str) -> str:
    """A single-turn prompt that ends where the assistant starts answering."""
    return f"{format_turn('user', user_prompt)}\n\n{ASSISTANT_TAG}"


# --------------------------------------------------------------------------- judge (SALMON §1.2)
# The long, pair-specific part comes first and is shared by every principle; the principle comes
# last, so an engine can encode the prefix once and score all principles from its KV cache.
# Version 2: the answer lead names the principle right before the verdict letter.
JUDGE_TEMPLATE_VERSION = "2"
JUDGE_LETTERS: tuple[str, str] = ("a", "b")
# The judge prompt ends right before the letter, so the next token is the verdict.
JUDGE_ANSWER_LEAD = "Output ("


def judge_prefix(instruction: str, output_a: str, output_b: str) -> str:
    """Shared part of a judge prompt: the request, both outputs and the question.

    Everything that does not depend on the principle is here, so the per-principle suffix stays
    a few tokens long and prefix sharing saves the most.
    """
    return (
        f"{USER_TAG} You are reviewing two replies that an AI assistant wrote to the same request. "
        "Read the request and both replies carefully.\n\n"
        f"Request:\n{instruction.strip()}\n\n"
        f"Output (a):\n{output_a.strip()}\n\n"
        f"Output (b):\n{output_b.strip()}\n\n"
        "Which output follows the principle below better, (a) or (b)? "
        "Judge by that one principle only.\n\n"
    )


def judge_suffix(principle_name: str, principle_definition: str) -> str:
    """Principle-specific tail of a judge prompt. It ends where the verdict letter is due, with an
    answer lead that names the principle again right before the letter (as SALMON's does)."""
    return (
        f"Principle: {principle_definition.strip()}\n\n"
        f"{ASSISTANT_TAG} Judging by {principle_name}, the better reply is {JUDGE_ANSWER_LEAD}"
    )


# --------------------------------------------------------------------------- self-align (Dromedary)
# The base model sees the principles and worked exemplars, then continues the last assistant turn:
# first its internal thoughts (which principles apply), then the answer after ANSWER_TAG.
THOUGHTS_TAG = "Internal thoughts:"
ANSWER_TAG = "Answer:"
PRINCIPLES_HEADER = "Principles the assistant follows:"


def self_align_turn(thoughts: str, answer: str) -> str:
    """An assistant turn with internal thoughts, as exemplars show it and the model continues it."""
    return f"{ASSISTANT_TAG} {THOUGHTS_TAG} {thoughts.strip()}\n{ANSWER_TAG} {answer.strip()}"


def self_align_prompt(
    preamble: str,
    principles: list[tuple[str, str]],
    exemplars: list[tuple[str, str, str]],
    user_prompt: str,
) -> str:
    """Preamble, numbered principles, exemplar dialogues, then the new request; it ends where the
    assistant's internal thoughts begin."""
    rules = "\n".join(f"{i}. {name}: {definition.strip()}" for i, (name, definition) in enumerate(principles, 1))
    shots = "\n\n".join(
        f"{format_turn('user', prompt)}\n\n{self_align_turn(thoughts, answer)}" for prompt, thoughts, answer in exemplars
    )
    return (
        f"{preamble.strip()}\n\n{PRINCIPLES_HEADER}\n{rules}\n\n{shots}\n\n"
        f"{format_turn('user', user_prompt)}\n\n{ASSISTANT_TAG} {THOUGHTS_TAG}"
    )


# --------------------------------------------------------------------------- reward model (SALMON §1.4)
# The reviewer prompt of the instructable reward model, in SALMON's order: a reviewer framing, the
# reply, the request, the principles to judge by (negated ones appear as their negative
# definitions, names are not shown), then a fixed cue. The scalar score is read at the cue's last
# token, so the cue must never be cut and never end in a padding token. Version 1 put the
# principles first and the reply last; with the principles right before the cue a 4M reward model
# learns five principles at once where it learned at most two (docs/benchmarks.md).
REWARD_TEMPLATE_VERSION = "2"
REWARD_PRINCIPLES_HEADER = "Rate the reply by these principles only:"
REWARD_CUE = f"{ASSISTANT_TAG} The reply's rating under these principles is"
PMP_CUE = f"{ASSISTANT_TAG} The reply's rating is"
# Layouts of the reviewer prompt (``reward_model.reviewer_layout``): the same order, in words
# ("standard", every real profile) or with only the labels ("compact"). The tiny profile's
# ~4M-parameter RM learns its principles better and faster from the compact one: the framing was
# 74 of an example's ~173 tokens (seed 3: held-out 0.82 -> 0.89, docs/benchmarks.md).
ReviewerLayout = Literal["standard", "compact"]
REVIEWER_LAYOUTS: tuple[str, ...] = get_args(ReviewerLayout)


def check_reviewer_layout(layout: str) -> None:
    """Raise ValueError naming ``REVIEWER_LAYOUTS`` unless ``layout`` is one of them."""
    if layout not in REVIEWER_LAYOUTS:
        raise ValueError(f"unknown reviewer layout {layout!r} (one of {', '.join(REVIEWER_LAYOUTS)})")


def reward_prompt_parts(principle_texts: list[str], instruction: str, layout: str = "standard") -> tuple[str, str]:
    """(head, tail) of a reviewer prompt in ``layout`` (``REVIEWER_LAYOUTS``): the reply goes
    between them.

    Kept as two parts so a long reply can be shortened without ever cutting the principles, the
    request or the cue."""
    if not principle_texts:
        raise ValueError("a reviewer prompt needs at least one principle (use pmp_prompt_parts for none)")
    check_reviewer_layout(layout)
    rules = "\n".join(f"- {t.strip()}" for t in principle_texts)
    request = instruction.strip()
    if layout == "compact":
        return f"{USER_TAG} Reply:\n", f"\n\nRequest:\n{request}\n\nPrinciples:\n{rules}\n\n{ASSISTANT_TAG} Rating:"
    head = f"{USER_TAG} You are reviewing a reply that an AI assistant wrote to a request.\n\nReply:\n"
    return head, f"\n\nRequest:\n{request}\n\n{REWARD_PRINCIPLES_HEADER}\n{rules}\n\n{REWARD_CUE}"


def pmp_prompt_parts(context: str) -> tuple[str, str]:
    """(head, tail) of the principle-free reviewer prompt used for preference-model pre-training:
    ``context`` is the conversation so far (it ends where the assistant's reply begins)."""
    context = context.strip().removesuffix(ASSISTANT_TAG).strip()
    head = (
        f"{USER_TAG} You are reviewing the last reply of an AI assistant in the conversation below.\n\n"
        f"Conversation:\n{context}\n\nReply:\n"
    )
    return head, f"\n\n{PMP_CUE}"


# --------------------------------------------------------------------------- benchmarks: MT-Bench-style grading
# Single-answer grading on a 1-10 scale; the judge ends with "Rating: [[n]]" (parsed by
# salmon_dag.benchmarks.ratings). Original text of this project.
RATING_TEMPLATE_VERSION = "1"
RATING_INSTRUCTIONS = (
    "You are grading one reply of an AI assistant. Judge how helpful, correct, relevant, deep and "
    "clear the reply is for the user's request. Write a short explanation first, then give a "
    "rating from 1 (useless) to 10 (excellent) in exactly this form: Rating: [[5]]"
)
RATING_REFERENCE_NOTE = (
    "A reference answer is given. Compare the reply with it and count any error in the reply "
    "heavily; a reply that reaches a wrong final answer cannot score above 3."
)


def rating_request(conversation: list[tuple[str, str]], reference: str | None = None) -> str:
    """The judge's request to grade the assistant's last turn of ``conversation`` ((role, text)
    turns); earlier turns are context. With ``reference``, the reference-guided variant (math,
    reasoning, coding). Plain text: an HTTP judge gets it as its user message."""
    if not conversation or conversation[-1][0] != "assistant":
        raise ValueError("rating_request: the conversation must end with the assistant's reply to grade")
    parts = [RATING_INSTRUCTIONS]
    if reference is not None:
        parts += [RATING_REFERENCE_NOTE, f"[Reference answer]\n{reference.strip()}\n[End of reference answer]"]
    transcript = "\n\n".join(f"[{role.capitalize()}]\n{text.strip()}" for role, text in conversation)
    parts.append(f"[Conversation; grade the last Assistant turn]\n{transcript}\n[End of conversation]")
    return "\n\n".join(parts)


# Pairwise comparison for open-ended win rates: the judge ends with [[A]], [[B]] or [[C]] (a tie).
PAIRWISE_INSTRUCTIONS = (
    "You are comparing two replies of AI assistants to the same request. Judge which reply serves "
    "the user better: helpful, correct, relevant and clear. Do not let the order of the replies or "
    "their length sway you. Write a short explanation first, then give your verdict in exactly one "
    "of these forms: [[A]] if reply A is better, [[B]] if reply B is better, [[C]] for a tie."
)


def pairwise_request(instruction: str, reply_a: str, reply_b: str) -> str:
    """The judge's request to compare two replies to ``instruction`` (plain text)."""
    return (f"{PAIRWISE_INSTRUCTIONS}\n\n[Request]\n{instruction.strip()}\n[End of request]\n\n"
            f"[Reply A]\n{reply_a.strip()}\n[End of reply A]\n\n[Reply B]\n{reply_b.strip()}\n[End of reply B]")


# --------------------------------------------------------------------------- benchmarks: code completion (HumanEval)
# The assistant turn is pre-filled with an open ```python fence and the code to finish, so base and
# chat models alike just continue the function body; generation stops at the closing fence.
CODE_COMPLETION_INSTRUCTIONS = (
    "Finish the Python function that your reply begins with. Continue the code exactly where it "
    "stops: write the rest of the function body using only the standard library, then close the "
    "code block right after the function."
)


def code_completion_prompt(code: str) -> str:
    """A prompt whose assistant turn opens a ```python block holding ``code`` verbatim (imports, the
    signature and docstring), so the model's continuation is the rest of the function."""
    return f"{format_chat_prompt(CODE_COMPLETION_INSTRUCTIONS)} ```python\n{code}"
