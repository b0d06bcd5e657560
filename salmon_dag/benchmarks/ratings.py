"""MT-Bench-style single-answer ratings: parse a judge's ``[[n]]`` verdict and average the
parseable ones per turn, keeping count of what could not be read.

The judge is asked to end with ``Rating: [[n]]`` (1-10). As in MT-Bench's reference grader, the
first ``[[n]]`` counts, and ``[n]`` is the fallback when the double brackets are missing; a number
outside 1-10 or no bracketed number at all is *unparseable*: recorded, and excluded from the means.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from salmon_dag.benchmarks.results import mean_stderr

_DOUBLE = re.compile(r"\[\[\s*(\d+(?:\.\d+)?)\s*\]\]")
_SINGLE = re.compile(r"\[\s*(\d+(?:\.\d+)?)\s*\]")
LOW, HIGH = 1.0, 10.0


def parse_rating(text: str | None) -> float | None:
    """The rating in a judge's output, or None when there is none in 1-10."""
    if not text:
        return None
    match = _DOUBLE.search(text) or _SINGLE.search(text)
    if match is None:
        return None
    value = float(match.group(1))
    return value if LOW <= value <= HIGH else None


@dataclass(frozen=True)
class RatingSummary:
    """Mean of the parseable ratings, its standard error, and how many were (not) parseable."""

    mean: float
    stderr: float
    n: int
    unparseable: int


def summarize(ratings: Iterable[float | None]) -> RatingSummary:
    values = list(ratings)
    kept = [v for v in values if v is not None]
    mean, stderr = mean_stderr(kept)
    return RatingSummary(mean, stderr, len(kept), len(values) - len(kept))
