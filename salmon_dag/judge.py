"""Principle-following judging of response pairs (SALMON §1.2), on any engine.

For a pair (output 1, output 2) and a principle, the judge prompt (templates.judge_prefix +
templates.judge_suffix) ends right before the verdict letter. The score is
``logit("a") - logit("b")``, computed in both orders; both are expressed here as the preference
for output 1, so they agree in sign when the judge is order-consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from salmon_dag.engine.base import Engine, EngineError
from salmon_dag.templates import JUDGE_LETTERS, judge_prefix, judge_suffix


def letter_token_id(tokenizer, context: str, letter: str) -> int:
    """The token id a model emits for ``letter`` right after ``context``.

    Tokenizers merge spaces and brackets differently ("(a", "▁a", "Ġa"), so the id is read off the
    tokenization of ``context + letter``: it must be ``encode(context)`` plus exactly one token that
    decodes to the letter. Otherwise a single token (the letter's standalone encoding, or its bare
    vocabulary piece) that, appended to the context's tokens, reads as context + letter; else this
    raises.
    """
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    full = tokenizer(context + letter, add_special_tokens=False)["input_ids"]
    if len(full) == len(ctx) + 1 and full[: len(ctx)] == ctx:
        if tokenizer.decode([full[-1]]).strip() == letter:
            return full[-1]
    # the standalone encoding may carry a word-start marker ("▁a" reads "( a"); the bare piece not
    alone = tokenizer(letter, add_special_tokens=False)["input_ids"]
    bare = tokenizer.convert_tokens_to_ids(letter)
    want = tokenizer.decode(ctx) + letter
    for tid in ([alone[0]] if len(alone) == 1 else []) + ([bare] if isinstance(bare, int) else []):
        if tid != tokenizer.unk_token_id and tokenizer.decode(ctx + [tid]) == want:
            return tid
    raise EngineError(
        f"no single token for the judge letter {letter!r} after {context[-20:]!r} "
        f"(tokenized as {full[len(ctx) - 1:]}); change the judge template's answer lead"
    )


def verdict_token_ids(tokenizer) -> tuple[int, int]:
    """Token ids of "a" and "b" where the judge template places them."""
    context = judge_prefix("Q", "A1", "A2") + judge_suffix("P", "D")
    a, b = (letter_token_id(tokenizer, context, letter) for letter in JUDGE_LETTERS)
    if a == b:
        raise EngineError("the judge letters 'a' and 'b' map to the same token")
    return a, b


@dataclass(frozen=True)
class JudgeItem:
    instruction: str
    output_1: str
    output_2: str


def judge_scores(
    engine: Engine,
    items: Sequence[JudgeItem],
    principles: Sequence[tuple[str, str]],
    shared_prefix: bool = True,
) -> np.ndarray:
    """[len(items), len(principles), 2] scores: preference for output 1 in order (1,2) and (2,1).

    ``principles`` are (name, definition) pairs. SALMON judges every principle by its positive
    definition only; negation happens later, in aggregation, by flipping the sign of the score.
    ``shared_prefix=False`` is the naive path (every principle re-encodes the whole prompt); both
    paths see the same tokens and give the same scores.
    """
    a, b = verdict_token_ids(engine.tokenizer)
    suffixes = [judge_suffix(name, definition) for name, definition in principles]
    prefixes, tails = [], []
    for it in items:
        for first, second in ((it.output_1, it.output_2), (it.output_2, it.output_1)):
            # Whole judge strings are tokenized once and split at their common token prefix, so
            # the model sees exactly the tokens of a plain call (a suffix encoded on its own can
            # differ at the seam, e.g. SentencePiece's dummy-prefix space).
            head, rest = engine.encode_shared([judge_prefix(it.instruction, first, second) + s for s in suffixes])
            prefixes.append(head)
            tails.append(rest)
    score = engine.shared_prefix_logits if shared_prefix else engine.naive_prefix_logits
    blocks = score(prefixes, tails, [a, b])
    scores = np.zeros((len(items), len(principles), 2), dtype=np.float64)
    for i in range(len(items)):
        forward, backward = blocks[2 * i], blocks[2 * i + 1]
        scores[i, :, 0] = forward[:, 0] - forward[:, 1]  # output 1 shown as (a)
        scores[i, :, 1] = backward[:, 1] - backward[:, 0]  # output 1 shown as (b)
    return scores
