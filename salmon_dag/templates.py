"""The one place for every prompt template of the project.

All stages (pre-training corpus, self-align prompting, SFT, judging, reward model, PPO, evaluation)
format conversations through these functions, so the base model sees at pre-training time exactly
the turn markers that later stages generate and stop on.
"""

from __future__ import annotations

from collections.abc import Iterable

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
