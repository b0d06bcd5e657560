"""Scoring with a trained reward model: batched scores and a per-principle breakdown.

The one scoring path of the project: RL and evaluation call :class:`RewardScorer`. Prompts are
left-padded, so every row's last position holds its own last token (the cue's), and position ids
count real tokens only, so a score does not depend on what else is in the batch or on padding.
Identical prompts within one call are run once. Evaluation also memoizes across calls
(``cache_size``): it asks for the same reviewer prompt many times (the aggregation passes repeat a
pair under the same principle; the probes reuse the held-out prompts). RL does not: a memoized
score comes from another batch, equal only to float tolerance, and a resumed run must see the
rewards of the uninterrupted one bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.encode import encode_review, review_parts


@dataclass(frozen=True)
class PrincipleScore:
    """Scores of one (prompt, response) under one principle alone and under its negation."""

    principle: str
    score: float
    negated_score: float

    @property
    def delta(self) -> float:
        return self.score - self.negated_score


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token, for left or right padding alike (never pad ids:
    a tokenizer whose pad token is its eos token would confuse an id-based search)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).max(dim=1).values


class RewardScorer:
    """A loaded reward model (``load_reward_model``) that scores reviewer prompts.

    The model is frozen while a scorer holds it: ``cache_size`` > 0 memoizes scores by token ids
    across calls (at most that many; off by default). ``cpu_bf16_autocast``: forward passes under bf16
    autocast (the numeric path a CPU-trained model learned in; the head reads float32). ``layout``:
    the reviewer layout the model trained on (its manifest's ``reviewer_layout``)."""

    def __init__(self, model, tokenizer, max_len: int, batch_size: int = 16, cache_size: int = 0,
                 cpu_bf16_autocast: bool = False, layout: str = "standard"):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_len = max_len
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.cache_size = cache_size
        self.cpu_bf16_autocast = cpu_bf16_autocast
        self.layout = layout
        self._cache: dict[tuple[int, ...], float] = {}

    # ------------------------------------------------------------------ ids
    def encode(self, principle_texts: Sequence[str] | None, instruction: str, response: str) -> list[int]:
        return encode_review(self.tokenizer, review_parts(principle_texts, self.layout), instruction, response, self.max_len)

    def score_ids(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Scores of pre-tokenized reviewer prompts, in input order; each distinct sequence is
        run through the model once (and, with a memo, not again while it is in it)."""
        keys = [tuple(int(t) for t in s) for s in sequences]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        fresh = dict(zip(todo, self._forward(todo)))
        if self.cache_size > 0:
            if len(self._cache) + len(fresh) > self.cache_size:
                self._cache.clear()
            self._cache.update(fresh)
        return [fresh[k] if k in fresh else self._cache[k] for k in keys]

    @torch.no_grad()
    def _forward(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Scores of pre-tokenized reviewer prompts from the model. Batches are formed by length
        (less padding) and results come back in input order."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        backbone, head = self._backbone_and_head()
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = [0.0] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            width = max(len(sequences[i]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for row, i in enumerate(idx):
                seq = torch.as_tensor(list(sequences[i]), dtype=torch.long)
                ids[row, width - len(seq):] = seq  # left padding
                mask[row, width - len(seq):] = 1
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16_autocast):
                hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state
            last = hidden[torch.arange(len(idx), device=self.device), last_token_index(mask)]
            values = head(last.to(next(head.parameters()).dtype)).float().squeeze(-1).tolist()
            for row, i in enumerate(idx):
                out[i] = float(values[row])
        return out

    def _backbone_and_head(self):
        """(transformer body, scalar head) of the model; a PEFT model keeps its LoRA layers in place."""
        model = self.model
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        return model.base_model, model.score

    # ------------------------------------------------------------------ text
    def score(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        principle_texts: Sequence[Sequence[str]] | Sequence[str] | None,
    ) -> list[float]:
        """Score each (prompt, response) under principles: one list for all rows, one list per
        row, or None for the principle-free (PMP) prompt."""
        if len(prompts) != len(responses):
            raise ValueError(f"score: {len(prompts)} prompts but {len(responses)} responses")
        if principle_texts is None or (principle_texts and isinstance(principle_texts[0], str)):
            per_row = [principle_texts] * len(prompts)
        else:
            per_row = list(principle_texts)
            if len(per_row) != len(prompts):
                raise ValueError(f"score: {len(prompts)} prompts but {len(per_row)} principle lists")
        seqs = [self.encode(p, q, r) for p, q, r in zip(per_row, prompts, responses)]
        return self.score_ids(seqs)

    def breakdown(
        self, prompt: str, response: str, principles: Sequence[PrincipleText]
    ) -> tuple[float | None, list[PrincipleScore]]:
        """The score under all ``principles`` together (None when their reviewer prompt does not
        fit in ``max_len``), and under each alone and negated."""
        texts = [[p.definition] for p in principles] + [[p.negative_definition] for p in principles]
        values = self.score([prompt] * len(texts), [response] * len(texts), texts)
        n = len(principles)
        rows = [PrincipleScore(p.name, values[i], values[n + i]) for i, p in enumerate(principles)]
        try:
            total = self.score([prompt], [response], [p.definition for p in principles])[0]
        except ValueError:  # the principles alone are longer than max_len
            total = None
        return total, rows
