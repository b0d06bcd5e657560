"""The tiny world: pre-training dialogues whose replies vary the way a real base model's do.

A 4M-parameter model cannot judge helpfulness, so the tiny profile proves SALMON's mechanisms with
*verifiable* principles. Those only have something to act on when the policy's samples vary along
their axes, so the bundled dialogues are written out in several forms, at fixed rates:

- **length**, both ways: every dialogue once in full (most run past the tiny policy's 48-token
  cap) and once cut to its first sentence or its first few sentences;
- **AI boilerplate**: some replies open with an "As an AI language model, ..." sentence;
- **stock sign-offs**: some replies end with "I hope this helps!"-style closings;
- **the user's language**: ``language_slips.jsonl`` holds English requests answered in Spanish,
  French or German (a base model drifting into another language).

Which form a dialogue gets depends on a hash of its request only: the world is data, the same on
every machine and under every profile seed. All text here is original to the salmon project.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

LANGUAGE_SLIPS = "language_slips.jsonl"

# Of the cut copies: one sentence; the rest keep up to MEDIUM_MAX_WORDS words of whole sentences.
SHORT_SHARE = 0.5
MEDIUM_MAX_WORDS = 40
# Shares of boilerplate openings and sign-offs, in the full and in the cut copies. A 4M-parameter
# model reproduces a habit at about half its rate in the corpus, and SFT on the few self-align
# answers dilutes it further: these put each habit in roughly a tenth of the policy's samples.
BOILERPLATE_SHARE = {"full": 0.15, "cut": 0.4}
SIGN_OFF_SHARE = {"full": 0.15, "cut": 0.4}

# Each contains the phrase the "No Boilerplate Self-Reference" rule forbids.
BOILERPLATE = (
    "As an AI language model, I do not have personal experience with this, but I can share what is generally known.",
    "As an AI language model, I can only give general information here.",
    "As an AI language model, I cannot see your situation, but here is some general guidance.",
    "As an AI language model, I don't have opinions of my own, but I can explain the basics.",
)
# Each contains a phrase the "No Stock Sign-Offs" rule forbids.
SIGN_OFFS = (
    "I hope this helps!",
    "I hope this helps! Let me know if you have any other questions.",
    "Let me know if you have any other questions.",
    "I hope this helps, and feel free to ask if anything is unclear.",
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\w+")
_LIST_ITEM = re.compile(r"^(\d+[.)]|[-*•])\s")


def _draw(text: str, what: str) -> float:
    """A uniform number in [0, 1) from the request text and the behaviour's name."""
    digest = hashlib.sha256(f"{what}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _pick(options: tuple[str, ...], text: str, what: str) -> str:
    return options[int(_draw(text, what) * len(options))]


def _units(reply: str) -> list[tuple[str, str]]:
    """(separator before it, text) of each sentence; a list item is one unit, on its own line."""
    units: list[tuple[str, str]] = []
    for line in (ln.strip() for ln in reply.split("\n")):
        if not line:
            continue
        parts = [line] if _LIST_ITEM.match(line) else [p for p in _SENTENCE_END.split(line) if p.strip()]
        for i, part in enumerate(parts):
            units.append(("\n" if i == 0 and units else " ", part.strip()))
    return units


def cut_reply(reply: str, short: bool) -> str:
    """The first sentence (``short``) or the longest run of whole first sentences within
    :data:`MEDIUM_MAX_WORDS` words (at least one sentence; a sentence that introduces a list
    keeps at least its first item)."""
    units = _units(reply)
    if not units:
        return reply.strip()
    out, words = units[0][1], len(_WORD.findall(units[0][1]))
    for sep, text in units[1:]:
        needed = out.endswith(":")  # "...:" is no answer on its own
        words += len(_WORD.findall(text))
        if not needed and (short or words > MEDIUM_MAX_WORDS):
            break
        out += sep + text
    return out


def varied_reply(user: str, reply: str, copy: str) -> str:
    """The ``full`` or ``cut`` copy of a reply, with boilerplate and a sign-off at their shares."""
    text = reply if copy == "full" else cut_reply(reply, short=_draw(user, "short") < SHORT_SHARE)
    if _draw(user, f"boilerplate-{copy}") < BOILERPLATE_SHARE[copy]:
        text = f"{_pick(BOILERPLATE, user, 'boilerplate-text')} {text}"
    if _draw(user, f"sign-off-{copy}") < SIGN_OFF_SHARE[copy]:
        text = f"{text} {_pick(SIGN_OFFS, user, 'sign-off-text')}"
    return text


def language_slips(bundled_dir: Path) -> list[tuple[str, str]]:
    """(English request, reply in another language) pairs of ``language_slips.jsonl``, if present."""
    path = bundled_dir / LANGUAGE_SLIPS
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["user"], r["assistant"]) for r in rows]


def world_dialogues(dialogues: list[tuple[str, str]], bundled_dir: Path) -> list[tuple[str, str]]:
    """Every dialogue in full, then cut, each with its habits; then the language slips."""
    return ([(user, varied_reply(user, reply, "full")) for user, reply in dialogues]
            + [(user, varied_reply(user, reply, "cut")) for user, reply in dialogues]
            + language_slips(bundled_dir))
