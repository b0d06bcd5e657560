"""Aggregation of per-(pair, principle) judgements into reward-model training data (SALMON §1.3).

Per principle, the judge's scores are divided by that principle's variance over the dataset. Each
training example then draws a random subset of the principles judged for its pair (size from a
truncated geometric distribution), negates each with some probability (a negated principle uses
its *negative definition* and flips the sign of its score), and takes its label from the principle
with the largest |score|. Verifiable rules may override (or be blended into) the model's verdict,
the order of the two responses is randomised, and a small share of labels is flipped as noise.
Every pair is used ``cfg.passes`` times with fresh draws.

Everything is deterministic given ``seed``: pairs are processed in ``pair_id`` order, principles
are indexed in name order, and the random draws of a pass have shapes that depend only on the
number of pairs and principles (never on earlier outcomes).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from salmon_dag.config import AggregationConfig

EXAMPLE_SCHEMA: dict[str, pl.DataType] = {
    "example_id": pl.Utf8,
    "pass": pl.Int64,
    "pair_id": pl.Utf8,
    "prompt_id": pl.Utf8,
    "prompt": pl.Utf8,
    "response_1": pl.Utf8,
    "response_2": pl.Utf8,
    "preferred": pl.Int64,
    "principles": pl.Utf8,
    "n_principles": pl.Int64,
    "deciding_principle": pl.Utf8,
    "deciding_negated": pl.Boolean,
    "deciding_score": pl.Float64,
    "rule_decided": pl.Boolean,
    "flipped": pl.Boolean,
}

_ZERO_VAR_REL = 1e-12

STAT_KEYS: tuple[str, ...] = ("examples", "dropped_zero", "rule_decided", "flipped")


@dataclass(frozen=True)
class PrincipleText:
    """A reward-model principle as shown to the RM: its positive and its negative definition."""

    name: str
    definition: str
    negative_definition: str


# --------------------------------------------------------------------------- normalisation
def normalise_scores(prefs: pl.DataFrame) -> pl.DataFrame:
    """Add ``norm_score`` = ``score`` / (population variance of ``score`` over that principle).

    As in the paper the divisor is the variance (not the standard deviation). A principle whose
    scores have zero variance keeps its raw scores (so an all-zero principle stays zero).
    """
    score = pl.col("score").cast(pl.Float64)
    var = score.var(ddof=0).over("principle")
    # Rounding makes the variance of a constant column tiny rather than 0 (e.g. 0.1 repeated):
    # anything below ~1e-12 of the scores' mean square counts as zero variance.
    scale = (score * score).mean().over("principle")
    return prefs.with_columns(
        pl.when(var > _ZERO_VAR_REL * scale).then(score / var).otherwise(score).alias("norm_score")
    )


# --------------------------------------------------------------------------- subset sizes
def _geometric_from_uniform(u: np.ndarray, p: float, max_k: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw of a geometric(p) truncated to [1, max_k[i]] for each uniform ``u[i]``.

    With q = 1 - p the truncated CDF is F(k) = (1 - q^k) / (1 - q^m); the draw is 1 plus the
    number of k in [1, m) with F(k) < u.
    """
    u = np.asarray(u, dtype=np.float64)
    m = np.asarray(max_k, dtype=np.int64)
    if u.size == 0:
        return np.zeros(0, dtype=np.int64)
    q = 1.0 - p
    width = int(m.max())
    ks = np.arange(1, width + 1, dtype=np.float64)
    num = 1.0 - q ** ks  # (width,)
    den = 1.0 - q ** m.astype(np.float64)  # (n,), > 0 since p > 0 and m >= 1
    cdf = num[None, :] / den[:, None]
    below = (cdf < u[:, None]) & (ks[None, :] < m[:, None])
    return (1 + below.sum(axis=1)).astype(np.int64)


def truncated_geometric(
    rng: np.random.Generator, p: float, max_k: int, size: int, n_available: int | None = None
) -> np.ndarray:
    """``size`` ints in [1, K] with P(k) ∝ (1-p)^(k-1)·p, renormalised over the truncated support.

    K = ``max_k``, further capped by ``n_available`` (the number of principles one can draw from)
    when given. Raises ValueError for p outside (0, 1] or K < 1.
    """
    if not 0 < p <= 1:
        raise ValueError(f"truncated_geometric: p must be in (0, 1], got {p}")
    k_max = max_k if n_available is None else min(max_k, n_available)
    if k_max < 1:
        raise ValueError(f"truncated_geometric: support is empty (max_k={max_k}, n_available={n_available})")
    u = rng.random(size)
    return _geometric_from_uniform(u, p, np.full(size, k_max, dtype=np.int64))


# --------------------------------------------------------------------------- aggregation
def _empty_examples() -> pl.DataFrame:
    return pl.DataFrame(schema=EXAMPLE_SCHEMA)


def _validate(prefs: pl.DataFrame, pairs: pl.DataFrame, principles: Sequence[PrincipleText]) -> None:
    missing = [c for c in ("pair_id", "principle", "score") if c not in prefs.columns]
    if missing:
        raise ValueError(f"aggregate: prefs lacks column(s) {', '.join(missing)}")
    missing = [c for c in ("pair_id", "prompt_id", "prompt", "response_a", "response_b") if c not in pairs.columns]
    if missing:
        raise ValueError(f"aggregate: pairs lacks column(s) {', '.join(missing)}")
    names = [p.name for p in principles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"aggregate: duplicate principle name(s) {', '.join(dup)}")
    unknown = sorted(set(prefs["principle"].unique().to_list()) - set(names))
    if unknown:
        raise ValueError(f"aggregate: principle(s) in prefs but not in the principle set: {', '.join(map(str, unknown))}")
    if prefs.select(pl.struct("pair_id", "principle").is_duplicated().any()).item():
        raise ValueError("aggregate: prefs has duplicate (pair_id, principle) rows")
    score = prefs["score"].cast(pl.Float64)
    if score.null_count() or not np.isfinite(score.to_numpy()).all():
        raise ValueError("aggregate: prefs.score has null or non-finite values")
    unknown_pairs = sorted(set(prefs["pair_id"].unique().to_list()) - set(pairs["pair_id"].to_list()))
    if unknown_pairs:
        shown = ", ".join(unknown_pairs[:5]) + (" ..." if len(unknown_pairs) > 5 else "")
        raise ValueError(f"aggregate: {len(unknown_pairs)} pair_id(s) in prefs but not in pairs: {shown}")
    if pairs["pair_id"].is_duplicated().any():
        raise ValueError("aggregate: pairs has duplicate pair_id values")


def aggregate(
    prefs: pl.DataFrame,
    pairs: pl.DataFrame,
    principles: Sequence[PrincipleText],
    cfg: AggregationConfig,
    seed: int,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Reward-model training examples from judgements; returns ``(examples, stats)``.

    ``prefs`` has one row per judged (pair_id, principle) with ``score`` (order-consistent
    preference for response_a, > 0 = a better) and optionally ``rule_score`` (+1/-1/0, null when
    the principle has no rule). ``pairs`` gives the texts. For each pass and each judged pair (in
    pair_id order) a subset of the pair's judged principles is drawn, each is negated with
    probability ``cfg.negation_prob``, and the label comes from the principle with the largest
    |signed score| (first in subset order on ties) — or, with ``rule_mode="override"``, from the
    first chosen principle whose signed rule score is non-zero. ``rule_mode="blend"`` adds
    ``rule_weight * signed_rule_score`` to each model score; ``"off"`` ignores rules. An example
    whose deciding score is 0 is dropped (``stats["dropped_zero"]``); a rule-decided example is
    never dropped. Responses are shown in random order and ``preferred`` (1 or 2) follows the
    swap; it is then flipped with probability ``cfg.rule_label_noise`` (rule-decided) or
    ``cfg.label_noise``. Output columns: :data:`EXAMPLE_SCHEMA`; stats keys: :data:`STAT_KEYS`.
    """
    _validate(prefs, pairs, principles)
    stats = dict.fromkeys(STAT_KEYS, 0)
    if prefs.height == 0:
        return _empty_examples(), stats

    by_name = {p.name: p for p in principles}
    if "rule_score" not in prefs.columns:
        prefs = prefs.with_columns(pl.lit(None, dtype=pl.Int64).alias("rule_score"))
    # Sorted first so the variance sums (hence norm_score bits) do not depend on input row order.
    prefs = normalise_scores(prefs.sort("principle", "pair_id"))

    # Dense (pair × principle) matrices; pairs in pair_id order, principles in name order.
    pair_ids = sorted(prefs["pair_id"].unique().to_list())
    names = sorted(prefs["principle"].unique().to_list())
    pair_idx = {p: i for i, p in enumerate(pair_ids)}
    name_idx = {n: j for j, n in enumerate(names)}
    n_pairs, n_princ = len(pair_ids), len(names)
    rows = np.array([pair_idx[p] for p in prefs["pair_id"].to_list()], dtype=np.int64)
    cols = np.array([name_idx[n] for n in prefs["principle"].to_list()], dtype=np.int64)
    norm = np.full((n_pairs, n_princ), np.nan)
    rule = np.full((n_pairs, n_princ), np.nan)  # NaN = no rule (or not judged)
    avail = np.zeros((n_pairs, n_princ), dtype=bool)
    norm[rows, cols] = prefs["norm_score"].to_numpy()
    rule[rows, cols] = prefs["rule_score"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    avail[rows, cols] = True
    n_avail = avail.sum(axis=1)

    text = (
        pl.DataFrame({"pair_id": pair_ids})
        .join(pairs.select("pair_id", "prompt_id", "prompt", "response_a", "response_b"), on="pair_id", how="left")
    )
    prompt_ids, prompts = text["prompt_id"].to_list(), text["prompt"].to_list()
    resp_a, resp_b = text["response_a"].to_list(), text["response_b"].to_list()

    k_cap = np.minimum(n_avail, cfg.max_principles)
    width = int(k_cap.max())
    ar = np.arange(n_pairs)
    use_rules = cfg.rule_mode != "off"
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {c: [] for c in EXAMPLE_SCHEMA}

    for pass_no in range(cfg.passes):
        # All draws of a pass, in a fixed order and with outcome-independent shapes.
        k = _geometric_from_uniform(rng.random(n_pairs), cfg.subset_p, k_cap)
        keys = np.where(avail, rng.random((n_pairs, n_princ)), np.inf)
        negate_draw = rng.random((n_pairs, n_princ)) < cfg.negation_prob
        swap = rng.random(n_pairs) < 0.5
        noise_u = rng.random(n_pairs)

        subset = np.argsort(keys, axis=1, kind="stable")[:, :width]  # random order of available ones
        valid = np.arange(width)[None, :] < k[:, None]
        negated = negate_draw[:, :width] & valid
        sign = np.where(negated, -1.0, 1.0)
        s = sign * norm[ar[:, None], subset]
        r = sign * rule[ar[:, None], subset] if use_rules else np.full_like(s, np.nan)
        if cfg.rule_mode == "blend":
            s = s + cfg.rule_weight * np.nan_to_num(r, nan=0.0)

        dominant = np.argmax(np.where(valid, np.abs(s), -1.0), axis=1)  # first max on ties
        rule_hit = valid & ~np.isnan(r) & (r != 0)
        rule_decided = rule_hit.any(axis=1) & (cfg.rule_mode == "override")
        first_rule = np.argmax(rule_hit, axis=1)
        decider = np.where(rule_decided, first_rule, dominant)
        score = np.where(rule_decided, r[ar, first_rule], s[ar, dominant])
        keep = score != 0

        chosen_a = score > 0
        preferred = np.where(chosen_a ^ swap, 1, 2)  # a shown first iff not swapped
        flip = noise_u < np.where(rule_decided, cfg.rule_label_noise, cfg.label_noise)
        preferred = np.where(flip, 3 - preferred, preferred)

        stats["dropped_zero"] += int((~keep).sum())
        for i in np.flatnonzero(keep):
            chosen = []
            for pos in range(k[i]):
                pt = by_name[names[subset[i, pos]]]
                neg = bool(negated[i, pos])
                chosen.append({"name": pt.name, "negated": neg,
                               "text": pt.negative_definition if neg else pt.definition})
            d = decider[i]
            pid = pair_ids[i]
            first, second = (resp_b[i], resp_a[i]) if swap[i] else (resp_a[i], resp_b[i])
            out["example_id"].append(f"{pid}-{pass_no}")
            out["pass"].append(pass_no)
            out["pair_id"].append(pid)
            out["prompt_id"].append(prompt_ids[i])
            out["prompt"].append(prompts[i])
            out["response_1"].append(first)
            out["response_2"].append(second)
            out["preferred"].append(int(preferred[i]))
            out["principles"].append(json.dumps(chosen, ensure_ascii=False))
            out["n_principles"].append(int(k[i]))
            out["deciding_principle"].append(names[subset[i, d]])
            out["deciding_negated"].append(bool(negated[i, d]))
            out["deciding_score"].append(float(score[i]))
            out["rule_decided"].append(bool(rule_decided[i]))
            out["flipped"].append(bool(flip[i]))

    df = pl.DataFrame(out, schema=EXAMPLE_SCHEMA)
    stats["examples"] = df.height
    stats["rule_decided"] = int(df["rule_decided"].sum())
    stats["flipped"] = int(df["flipped"].sum())
    return df, stats
