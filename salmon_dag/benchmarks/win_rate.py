"""Open-ended win rate of a policy against a reference policy, judged in both orders.

Each item is judged twice, the policy's answer shown first and then second, so a judge's bias
towards one position cancels. A verdict is ``"policy"``, ``"reference"``, ``"tie"`` or None
(unparseable): a win counts 1, a tie 0.5, a loss 0; an item's score is the mean of its readable
verdicts, and items with none are excluded. The length-adjusted variant regresses the
judgements on the (squashed) length difference and reports the win rate the fit predicts at equal
lengths. It is AlpacaEval's length-controlled GLM without its instruction-difficulty term (whose
per-instruction difficulties AlpacaEval fits over its whole leaderboard of models), so its numbers
are not AlpacaEval "LC" numbers, and it is named apart from them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from salmon_dag.benchmarks.results import mean_stderr

Verdict = Literal["policy", "reference", "tie"] | None
_SCORE = {"policy": 1.0, "tie": 0.5, "reference": 0.0}


_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")


def parse_verdict(text: str | None, policy_is_a: bool) -> Verdict:
    """The first ``[[A]]`` / ``[[B]]`` / ``[[C]]`` of a pairwise judge's output, as a verdict for the
    policy (which was shown as reply A when ``policy_is_a``); None when there is none."""
    match = _VERDICT.search(text or "")
    if match is None:
        return None
    letter = match.group(1)
    if letter == "C":
        return "tie"
    return "policy" if (letter == "A") == policy_is_a else "reference"


@dataclass(frozen=True)
class WinRate:
    win_rate: float
    stderr: float
    n: int  # items with at least one readable verdict
    excluded: int


def item_scores(verdicts: Sequence[Sequence[Verdict]]) -> list[float | None]:
    """Per item: the mean of its readable verdicts (win 1, tie 0.5, loss 0), or None."""
    out = []
    for item in verdicts:
        readable = [_SCORE[v] for v in item if v is not None]
        out.append(sum(readable) / len(readable) if readable else None)
    return out


def win_rate(verdicts: Sequence[Sequence[Verdict]]) -> WinRate:
    """Win rate over items (each a list of verdicts, one per judged order) with its standard error."""
    scores = [s for s in item_scores(verdicts) if s is not None]
    excluded = len(verdicts) - len(scores)
    if not scores:
        return WinRate(float("nan"), float("nan"), 0, excluded)
    mean, stderr = mean_stderr(scores)
    return WinRate(mean, stderr, len(scores), excluded)


def length_adjusted_win_rate(
    verdicts: Sequence[Sequence[Verdict]],
    policy_lengths: Sequence[int],
    reference_lengths: Sequence[int],
    l2: float = 1e-3,
    iterations: int = 50,
) -> float:
    """Win rate at equal length: fit ``P(win) = sigmoid(a + b * tanh(d / s))`` (d = policy length
    minus reference length, s = its standard deviation; ties are half a win) by regularised
    Newton steps, and return ``sigmoid(a)``."""
    scores = item_scores(verdicts)
    rows = [(s, p - r) for s, p, r in zip(scores, policy_lengths, reference_lengths, strict=True) if s is not None]
    if not rows:
        return float("nan")
    y = np.array([s for s, _ in rows], dtype=float)
    d = np.array([diff for _, diff in rows], dtype=float)
    scale = d.std() or 1.0
    x = np.stack([np.ones_like(d), np.tanh(d / scale)], axis=1)
    theta = np.zeros(2)
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ theta)))
        grad = x.T @ (p - y) + l2 * theta
        hess = (x.T * (p * (1 - p))) @ x + l2 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1.0 / (1.0 + math.exp(-theta[0])))
