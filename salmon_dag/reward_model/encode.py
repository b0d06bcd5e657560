"""Token ids of reviewer prompts: the one encoder the reward model's training and scoring share.

A prompt that is too long loses tokens from the request (its start, as the reference truncates
queries from the left) down to a quarter of the budget, then from the end of the reply; the
principles and the cue are never cut, because the score is read at the cue's last token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from salmon_dag import templates

# The request keeps at least this share of max_len before the reply is shortened.
REQUEST_SHARE = 0.25
_MAX_FIT_ROUNDS = 6

PartsFn = Callable[[str], tuple[str, str]]


def review_parts(principle_texts: Sequence[str] | None) -> PartsFn:
    """``instruction -> (head, tail)`` for the reviewer prompt under ``principle_texts``, or the
    principle-free (PMP) prompt when ``principle_texts`` is None (the instruction is then the
    conversation so far)."""
    if principle_texts is None:
        return templates.pmp_prompt_parts
    texts = list(principle_texts)
    return lambda instruction: templates.reward_prompt_parts(texts, instruction)


def _n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _keep_tokens(tok, text: str, n: int, *, from_end: bool) -> str:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    n = max(0, n)
    kept = (ids[len(ids) - n:] if n else []) if from_end else ids[:n]
    return tok.decode(kept, skip_special_tokens=True)


def encode_review(tok, parts: PartsFn, instruction: str, response: str, max_len: int) -> list[int]:
    """Token ids of the reviewer prompt for ``response``, at most ``max_len`` long.

    Raises ValueError when even an empty request and reply do not fit (the principles alone are
    too long for ``max_len``) or when the prompt would end in the padding token (its score could
    not be located)."""
    instruction, response = instruction.strip(), response.strip()
    for _ in range(_MAX_FIT_ROUNDS):
        head, tail = parts(instruction)
        ids = tok(head + response + tail)["input_ids"]
        over = len(ids) - max_len
        if over <= 0:
            break
        # Retokenizing a cut string may merge differently: cut a couple of tokens more.
        n_instr = _n_tokens(tok, instruction)
        floor = int(REQUEST_SHARE * max_len)
        if n_instr > floor:
            instruction = _keep_tokens(tok, instruction, max(floor, n_instr - over - 2), from_end=True)
            continue
        n_resp = _n_tokens(tok, response)
        if n_resp > 0:
            response = _keep_tokens(tok, response, n_resp - over - 2, from_end=False)
            continue
        if n_instr > 0:
            instruction = _keep_tokens(tok, instruction, n_instr - over - 2, from_end=True)
            continue
        break
    if len(ids) > max_len:
        raise ValueError(
            f"reward_model.max_seq_len {max_len} is too small: the principles and cue alone take "
            f"{len(ids)} tokens"
        )
    if tok.pad_token_id is not None and ids[-1] == tok.pad_token_id:
        raise ValueError("the reviewer prompt ends in the padding token, so its score cannot be located")
    return ids
