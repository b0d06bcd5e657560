"""The tiny world: pre-training dialogues whose replies vary the way a real base model's do.

A 4M-parameter model cannot judge helpfulness, so the tiny profile proves SALMON's mechanisms with
*verifiable* principles. Those only have something to act on when the policy's samples vary along
their axes, so the bundled dialogues are written out in several forms, at fixed rates:

- **length**, both ways: every dialogue once at length (its first sentences, up to
  :data:`FULL_MAX_WORDS` words) and once cut to its first sentence. Both end well before the tiny
  pairs' 48-token cap (RL samples up to 64): a world whose long replies ran past it (the written
  dialogues are ~76 words, ~110 tokens) taught the policy not to stop, and RL's no-stop penalty
  then shortened every steered policy, ``Complete and Thorough`` included (docs/benchmarks.md);
- **AI boilerplate**: some replies open with an "As an AI language model, ..." sentence;
- **stock sign-offs**: some replies end with "I hope this helps!"-style closings;
- **the user's language**: ``language_slips.jsonl`` holds English requests answered in Spanish
  (a base model drifting into another language), cut to their first sentence for the same reason
  (this tokenizer spends ~77 tokens on a two-sentence Spanish reply), and the same requests
  written in Spanish (``user_es``), answered in Spanish or, at :data:`ENGLISH_REPLY_SHARE`, in
  English (``assistant_en``). The Spanish dialogues are there for the model's Spanish: with them
  the 4M policy writes its slips on English requests legibly enough for the language detector
  (seed 1234, the tiny pool's English requests: 99 of 680 pairs differ in a language it names
  with confidence, against 23 without; docs/benchmarks.md). One language, not three: with 60 replies each in
  Spanish, French and German the policy wrote a salad of the three that the detector could
  rarely name.

Which form a dialogue gets depends on a hash of its request only: the world is data, the same on
every machine and under every profile seed. All text here is original to the salmon project.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

LANGUAGE_SLIPS = "language_slips.jsonl"

# The long copy's whole first sentences, up to this many words: ~32 tokens on the median (this
# tokenizer: ~1.5 a word); with a boilerplate opening or a sign-off 23% of long copies, and 21% of
# all replies, still run past the 48-token cap (before: ~66%). The short copy is the first
# sentence (~10 words); 57% of the dialogues have a second sentence within this limit (24 words:
# 44%, 32 words: 68% but 31% of long copies past the cap).
FULL_MAX_WORDS = 28
# Shares of boilerplate openings and sign-offs, in the full and in the cut copies. A 4M-parameter
# model reproduces a habit at about half its rate in the corpus, and SFT on the few self-align
# answers dilutes it further: these put each habit in roughly a tenth of the policy's samples.
BOILERPLATE_SHARE = {"full": 0.15, "cut": 0.4}
SIGN_OFF_SHARE = {"full": 0.15, "cut": 0.4}
# Share of the Spanish requests answered in English: a base model asked in another language often
# answers in English. The tiny profile's prompt pool is English, so the policy is never asked in
# Spanish; these dialogues teach it Spanish, and that the language can change between turns.
ENGLISH_REPLY_SHARE = 0.4

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


def cut_reply(reply: str, max_words: int = 0) -> str:
    """The longest run of whole first sentences within ``max_words`` words: at least one sentence
    (``max_words`` 0: just that one), and a sentence that introduces a list keeps its first item."""
    units = _units(reply)
    if not units:
        return reply.strip()
    out, words = units[0][1], len(_WORD.findall(units[0][1]))
    for sep, text in units[1:]:
        needed = out.endswith(":")  # "...:" is no answer on its own
        words += len(_WORD.findall(text))
        if not needed and words > max_words:
            break
        out += sep + text
    return out


def varied_reply(user: str, reply: str, copy: str) -> str:
    """The ``full`` (long) or ``cut`` (short) copy of a reply, with boilerplate and a sign-off at
    their shares."""
    text = cut_reply(reply, FULL_MAX_WORDS if copy == "full" else 0)
    if _draw(user, f"boilerplate-{copy}") < BOILERPLATE_SHARE[copy]:
        text = f"{_pick(BOILERPLATE, user, 'boilerplate-text')} {text}"
    if _draw(user, f"sign-off-{copy}") < SIGN_OFF_SHARE[copy]:
        text = f"{text} {_pick(SIGN_OFFS, user, 'sign-off-text')}"
    return text


def _language_rows(bundled_dir: Path) -> list[dict]:
    path = bundled_dir / LANGUAGE_SLIPS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def language_slips(bundled_dir: Path) -> list[tuple[str, str]]:
    """(English request, first sentence of a reply in another language) pairs of
    ``language_slips.jsonl``, if present."""
    return [(r["user"], cut_reply(r["assistant"])) for r in _language_rows(bundled_dir)]


def spanish_requests(bundled_dir: Path) -> list[tuple[str, str]]:
    """(Spanish request, reply) of the ``language_slips.jsonl`` rows that have a Spanish request
    (``user_es``): the reply's first sentence in Spanish, or at :data:`ENGLISH_REPLY_SHARE` in
    English (``assistant_en``)."""
    out = []
    for r in _language_rows(bundled_dir):
        if not r.get("user_es"):
            continue
        english = r.get("assistant_en") and _draw(r["user_es"], "english-reply") < ENGLISH_REPLY_SHARE
        out.append((r["user_es"], r["assistant_en"] if english else cut_reply(r["assistant"])))
    return out


def world_dialogues(dialogues: list[tuple[str, str]], bundled_dir: Path) -> list[tuple[str, str]]:
    """Every dialogue in full, then cut, each with its habits; then the language slips, then the
    Spanish requests."""
    return ([(user, varied_reply(user, reply, "full")) for user, reply in dialogues]
            + [(user, varied_reply(user, reply, "cut")) for user, reply in dialogues]
            + language_slips(bundled_dir) + spanish_requests(bundled_dir))
