"""SALMON's RL reward, one module: sampled principles, RM score, length bonus, stop penalty,
and a symbolic term for the verifiable rules of the principles shown.

For every rollout sample: up to ``max_principles`` principles are drawn by weight without
replacement from the ``rl.yaml`` group of the prompt's question type and shown to the reward
model after the file's ``always_on`` lines; the RM scores the (prompt, response) under that list;
a length bonus ``coef * min(tokens / norm * m, cap)`` with a per-question-type multiplier ``m``
(negative = a penalty, not clamped) and a penalty for a response that never produced a stop
sequence are added, and ``rule_penalty`` for every principle of the list whose single-response
rule (``forbidden_phrase``, ``language_match``, absolute ``length``) the response breaks. With
``show_always_on`` off the RM's prompt lists only the drawn principles, while the always-on lines'
rules still count. Every part of every sample is returned, so it can be stored and read.
Draws depend on (seed, rollout step) only: the same step redraws the same principles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from salmon_dag.config import RLRewardConfig
from salmon_dag.principles import Principle, PrincipleSet
from salmon_dag.rules import check_rule, is_comparative


@dataclass(frozen=True)
class RewardParts:
    """One sample's reward and where it came from."""

    principles: tuple[str, ...]  # names shown to the RM, always-on lines first
    rm_score: float
    length_bonus: float
    stop_penalty: float
    rule_penalty: float = 0.0

    @property
    def total(self) -> float:
        return self.rm_score + self.length_bonus + self.stop_penalty + self.rule_penalty


def sample_principles(group: Sequence[Principle], k: int, rng: np.random.Generator) -> list[Principle]:
    """``min(k, len(group))`` principles drawn by weight without replacement (successive draws,
    each proportional to the weight among those left), in draw order."""
    k = min(k, len(group))
    if k == 0:
        return []
    weights = np.array([p.weight for p in group], dtype=float)
    picked = rng.choice(len(group), size=k, replace=False, p=weights / weights.sum())
    return [group[i] for i in picked]


def length_bonus(response_tokens: int, question_type: str, cfg: RLRewardConfig) -> float:
    """``coef * min(tokens / norm * m, cap)``; ``m`` < 0 (reasoning in SALMON) makes it a penalty."""
    m = cfg.length_multiplier.get(question_type, 0.0)
    return cfg.length_bonus_coef * min(response_tokens / cfg.length_norm_tokens * m, cfg.length_bonus_cap)


def stop_penalty(stopped: bool, cfg: RLRewardConfig) -> float:
    """``no_stop_penalty`` for a response that ran to the token cap (neither a stop sequence nor EOS), else 0."""
    return 0.0 if stopped else cfg.no_stop_penalty


def broken_rules(principles: Sequence[Principle], instruction: str, response: str) -> list[str]:
    """Names of ``principles`` whose single-response rule ``response`` breaks (comparative rules,
    which need a second response, are skipped)."""
    return [p.name for p in principles
            if p.rule is not None and not is_comparative(p.rule) and not check_rule(p.rule, instruction, response)]


class SalmonReward:
    """The RL reward: ``reward(step, prompts, responses, question_types, response_tokens, stopped)``.

    ``scorer`` is a :class:`salmon_dag.reward_model.scoring.RewardScorer` (anything with its
    ``score(prompts, responses, principle_lists)``); it re-tokenizes the text with the RM's own
    tokenizer, so policy and RM tokenizers may differ.
    """

    def __init__(self, scorer, rl_principles: PrincipleSet, cfg: RLRewardConfig, seed: int):
        if rl_principles.kind != "rl":
            raise ValueError(f"SalmonReward needs the rl principle file, got {rl_principles.kind!r}")
        self.scorer = scorer
        self.cfg = cfg
        self.seed = seed
        self.always_on = rl_principles.always_on()
        self.groups: dict[str, list[Principle]] = {}
        for qt, p in rl_principles.principles():
            self.groups.setdefault(qt, []).append(p)

    def draw(self, step: int, question_types: Sequence[str], offset: int = 0,
             step_types: Sequence[str] | None = None) -> list[list[Principle]]:
        """The principle list of each sample of rollout ``step`` (always-on lines first).

        Data parallel: ``step_types`` are the question types of the step's whole batch over all
        processes and this process's rows start at ``offset``; the draws are made for the whole
        batch and sliced, so a row gets the same principles however the batch is split.
        """
        rng = np.random.default_rng([self.seed, step])
        out = []
        for qt in question_types if step_types is None else step_types:
            out.append(self.always_on + sample_principles(self.groups.get(qt, []), self.cfg.max_principles, rng))
        return out[offset: offset + len(question_types)]

    def shown(self, principles: Sequence[Principle]) -> list[Principle]:
        """The principles of a drawn list that the RM's prompt lists (``show_always_on``)."""
        if self.cfg.show_always_on:
            return list(principles)
        hidden = {p.name for p in self.always_on}
        return [p for p in principles if p.name not in hidden]

    def __call__(
        self,
        step: int,
        prompts: Sequence[str],
        responses: Sequence[str],
        question_types: Sequence[str],
        response_tokens: Sequence[int],
        stopped: Sequence[bool],
        *,
        offset: int = 0,
        step_types: Sequence[str] | None = None,
    ) -> list[RewardParts]:
        """``offset`` / ``step_types``: this process's place in the step's batch (see :meth:`draw`)."""
        n = len(prompts)
        if not (len(responses) == len(question_types) == len(response_tokens) == len(stopped) == n):
            raise ValueError("SalmonReward: prompts, responses, question_types, response_tokens and stopped "
                             "must have the same length")
        lists = self.draw(step, question_types, offset, step_types)
        # an empty list (no group for the type, no always-on lines) scores with the principle-free prompt
        texts = [[p.definition for p in self.shown(ps)] or None for ps in lists]
        scores = self.scorer.score(list(prompts), list(responses), texts)
        return [
            RewardParts(
                principles=tuple(p.name for p in ps),
                rm_score=float(score),
                length_bonus=length_bonus(int(tokens), qt, self.cfg),
                stop_penalty=stop_penalty(bool(done), self.cfg),
                rule_penalty=self.cfg.rule_penalty * len(broken_rules(ps, prompt, response)) if self.cfg.rule_penalty else 0.0,
            )
            for ps, score, qt, tokens, done, prompt, response
            in zip(lists, scores, question_types, response_tokens, stopped, prompts, responses)
        ]
