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
_MAX_FIT_ROUNDS = 8

PartsFn = Callable[[str], tuple[str, str]]


def review_parts(principle_texts: Sequence[str] | None, layout: str = "standard") -> PartsFn:
    """``instruction -> (head, tail)`` for the reviewer prompt under ``principle_texts`` in
    ``layout`` (``templates.REVIEWER_LAYOUTS``), or the principle-free (PMP) prompt when
    ``principle_texts`` is None (the instruction is then the conversation so far)."""
    if principle_texts is None:
        return templates.pmp_prompt_parts
    templates.check_reviewer_layout(layout)  # here, not per example
    texts = list(principle_texts)
    return lambda instruction: templates.reward_prompt_parts(texts, instruction, layout)


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
    head, tail = parts("")
    fixed = len(tok(head + tail)["input_ids"])
    if fixed > max_len:
        raise ValueError(
            f"reward_model.max_seq_len {max_len} is too small: the principles and cue alone take {fixed} tokens"
        )
    n_instr, n_resp = _n_tokens(tok, instruction), _n_tokens(tok, response)
    # Token budgets for the two variable parts; the request keeps at least its floor.
    room = max_len - fixed
    instr_budget = min(n_instr, max(int(REQUEST_SHARE * max_len), room - n_resp))
    resp_budget = min(n_resp, room - instr_budget)
    for _ in range(_MAX_FIT_ROUNDS):
        instr = instruction if instr_budget >= n_instr else _keep_tokens(tok, instruction, instr_budget, from_end=True)
        resp = response if resp_budget >= n_resp else _keep_tokens(tok, response, resp_budget, from_end=False)
        head, tail = parts(instr)
        ids = tok(head + resp + tail)["input_ids"]
        over = len(ids) - max_len
        if over <= 0:
            break
        # Cut text retokenizes differently (merges across the cut): take the excess, and a little
        # more, from the reply first, then from the request.
        cut = over + 2
        take = min(cut, resp_budget)
        resp_budget -= take
        instr_budget = max(0, instr_budget - (cut - take))
    else:
        head, tail = parts("")
        ids = tok(head + tail)["input_ids"]  # fits: checked above
    if tok.pad_token_id is not None and ids[-1] == tok.pad_token_id:
        raise ValueError("the reviewer prompt ends in the padding token, so its score cannot be located")
    return ids
