"""Aggregation of per-(pair, principle) judgements into reward-model training data (SALMON §1.3).

Per principle, the judge's scores are divided by that principle's variance over the dataset. Each
training example then draws a random subset of the principles judged for its pair (size from a
truncated geometric distribution), negates each with some probability (a negated principle uses
its *negative definition* and flips the sign of its score), and takes its label from the principle
with the largest |score|. Verifiable rules may override (or be blended into) the model's verdict,
the order of the two responses is randomised, and a small share of labels is flipped as noise.
Every pair is used ``cfg.passes`` times with fresh draws (with ``cfg.paired_negation``, every
second pass keeps the subsets of the pass before and flips each negation: a balanced design with
SALMON's marginal negation rate, under which no feature of the replies alone predicts a label).

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

from salmon_dag.rm_training_data.config import AggregationConfig
from salmon_dag.principles import PrincipleText
from salmon_dag.rules import LanguageMatchRule, is_comparative

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

STAT_KEYS: tuple[str, ...] = ("examples", "dropped_zero", "dropped_rule", "dropped_undecided", "rule_decided",
                              "flipped")


# --------------------------------------------------------------------------- normalisation
def normalise_scores(prefs: pl.DataFrame) -> pl.DataFrame:
    """Add ``norm_score`` = ``score`` / (per-principle variance of the raw per-order scores).

    As in SALMON, the divisor is the population variance (ddof 0) of *both* raw scores
    (``score_ab`` and ``score_ba``) over all judged pairs of that principle, order-inconsistent ones
    included. Dividing by the variance of the combined, already-zeroed ``score`` instead would
    inflate a principle the judge is position-biased on: its raw scores swing widely by letter,
    yet few of its judgements survive the consistency filter, so that variance is small.
    A principle whose raw scores have zero variance keeps its scores as they are.
    """
    missing = [c for c in ("score", "score_ab", "score_ba") if c not in prefs.columns]
    if missing:
        raise ValueError(f"normalise_scores: prefs lacks column(s) {', '.join(missing)}")
    ab, ba = pl.col("score_ab").cast(pl.Float64), pl.col("score_ba").cast(pl.Float64)
    # population variance of the 2n values {ab_i} ∪ {ba_i}: E[x²] - E[x]²
    mean = ((ab + ba) / 2).mean().over("principle")
    mean_sq = ((ab * ab + ba * ba) / 2).mean().over("principle")
    var = (mean_sq - mean * mean).clip(lower_bound=0.0)
    # Rounding leaves a tiny positive variance for a constant column (e.g. 0.1 repeated):
    # anything below ~1e-12 of the scores' mean square counts as zero variance.
    return prefs.with_columns(
        pl.when(var > _ZERO_VAR_REL * mean_sq).then(pl.col("score").cast(pl.Float64) / var)
        .otherwise(pl.col("score").cast(pl.Float64)).alias("norm_score")
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
def _with_neutral(subset: np.ndarray, neutral: np.ndarray, valid: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Per row: the first drawn (deciding) principle of ``subset``, then neutral ones, with the
    ``valid`` prefix shuffled so that the deciding principle's place in the list is random. The
    draws have outcome-independent shapes (determinism)."""
    n, width = subset.shape
    neutral_order = np.argsort(np.where(neutral, rng.random(neutral.shape), np.inf), axis=1, kind="stable")
    mixed = np.concatenate([subset[:, :1], neutral_order[:, : width - 1]], axis=1)
    place = np.argsort(np.where(valid, rng.random((n, width)), np.inf), axis=1, kind="stable")
    return np.take_along_axis(mixed, place, axis=1)


def _empty_examples() -> pl.DataFrame:
    return pl.DataFrame(schema=EXAMPLE_SCHEMA)


def sampled_principles(cfg: AggregationConfig, names: Sequence[str]) -> list[str]:
    """The principles of ``names`` that training examples may list: ``cfg.include_principles``
    (all when unset) minus ``cfg.exclude_principles``."""
    include = set(names) if cfg.include_principles is None else set(cfg.include_principles)
    return [n for n in names if n in include and n not in cfg.exclude_principles]


def _validate(prefs: pl.DataFrame, pairs: pl.DataFrame, principles: Sequence[PrincipleText],
              cfg: AggregationConfig) -> None:
    missing = [c for c in ("pair_id", "principle", "score", "score_ab", "score_ba") if c not in prefs.columns]
    if missing:
        raise ValueError(f"aggregate: prefs lacks column(s) {', '.join(missing)}")
    missing = [c for c in ("pair_id", "prompt_id", "prompt", "response_a", "response_b") if c not in pairs.columns]
    if missing:
        raise ValueError(f"aggregate: pairs lacks column(s) {', '.join(missing)}")
    names = [p.name for p in principles]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"aggregate: duplicate principle name(s) {', '.join(dup)}")
    for field in ("exclude_principles", "include_principles"):
        unknown = sorted(set(getattr(cfg, field) or ()) - set(names))
        if unknown:
            raise ValueError(f"aggregation.{field}: unknown principle(s) {', '.join(map(repr, unknown))}")
    if names and not sampled_principles(cfg, names):
        raise ValueError("aggregation.exclude_principles/include_principles: no principle left to aggregate")
    unknown = sorted(set(prefs["principle"].unique().to_list()) - set(names))
    if unknown:
        raise ValueError(f"aggregate: principle(s) in prefs but not in the principle set: {', '.join(map(str, unknown))}")
    if prefs.select(pl.struct("pair_id", "principle").is_duplicated().any()).item():
        raise ValueError("aggregate: prefs has duplicate (pair_id, principle) rows")
    for col in ("score", "score_ab", "score_ba"):
        values = prefs[col].cast(pl.Float64)
        if values.null_count() or not np.isfinite(values.to_numpy()).all():
            raise ValueError(f"aggregate: prefs.{col} has null or non-finite values")
    unknown_pairs = sorted(set(prefs["pair_id"].unique().to_list()) - set(pairs["pair_id"].to_list()))
    if unknown_pairs:
        shown = ", ".join(unknown_pairs[:5]) + (" ..." if len(unknown_pairs) > 5 else "")
        raise ValueError(f"aggregate: {len(unknown_pairs)} pair_id(s) in prefs but not in pairs: {shown}")
    if pairs["pair_id"].is_duplicated().any():
        raise ValueError("aggregate: pairs has duplicate pair_id values")


def _with_rule_verdicts(prefs: pl.DataFrame) -> pl.DataFrame:
    """Ensure ``rule_a`` / ``rule_b`` (null = no rule); they may be derived from ``rule_score``.

    A ``rule_score`` of 0 ("both or neither") is read as both passing, so that it never drops an
    example under a global language rule (which drops only when both responses fail)."""
    if "rule_a" in prefs.columns and "rule_b" in prefs.columns:
        return prefs
    if "rule_score" in prefs.columns:
        r = pl.col("rule_score")
        return prefs.with_columns((r >= 0).alias("rule_a"), (r <= 0).alias("rule_b"))
    return prefs.with_columns(pl.lit(None, dtype=pl.Boolean).alias("rule_a"),
                              pl.lit(None, dtype=pl.Boolean).alias("rule_b"))


def _matrix(prefs: pl.DataFrame, column: str, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Dense (pair × principle) float matrix of ``column``; NaN where not judged or null."""
    out = np.full(shape, np.nan)
    out[rows, cols] = prefs[column].cast(pl.Float64).fill_null(np.nan).to_numpy()
    return out


def _global_rules(principles: Sequence[PrincipleText], names: list[str]) -> tuple[list[int], list[int]]:
    """Column indices (in ``names``) of the global-scope rules, in file order:
    (hard rules: language match; coin rules: every other single-response rule)."""
    index = {n: j for j, n in enumerate(names)}
    hard, coin = [], []
    for p in principles:
        if p.rule is None or is_comparative(p.rule) or p.name not in index:
            continue
        (hard if isinstance(p.rule, LanguageMatchRule) else coin).append(index[p.name])
    return hard, coin


def aggregate(
    prefs: pl.DataFrame,
    pairs: pl.DataFrame,
    principles: Sequence[PrincipleText],
    cfg: AggregationConfig,
    seed: int,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """Reward-model training examples from judgements; returns ``(examples, stats)``.

    ``prefs`` has one row per judged (pair_id, principle) with ``score_ab`` / ``score_ba`` (the
    raw per-order preferences for response_a), ``score`` (their combination, > 0 = a better) and
    optionally the rule verdicts ``rule_a`` / ``rule_b`` (or ``rule_score`` = a - b; null when the
    principle has no rule). ``pairs`` gives the texts. Scores are normalised per principle
    (:func:`normalise_scores`). For each pass and each judged pair (in pair_id order) a subset of
    the pair's judged principles, minus ``cfg.exclude_principles``, is drawn, each is negated with
    probability ``cfg.negation_prob`` (with ``cfg.paired_negation`` every odd pass repeats the
    pass before it with each negation flipped), and the label comes from the principle with the largest
    |signed score| (first in subset order on ties).

    Rules, ``cfg.rule_scope="principle"``: a sampled principle's rule, signed by its negation,
    either decides (``rule_mode="override"``: the first chosen principle whose rule is decisive),
    or is added to the model scores with ``rule_weight`` (``"blend"``), or is ignored (``"off"``).
    A rule-decided example is never dropped. With ``cfg.undecided="drop"`` (a judge without signal;
    override mode) a pair's subset is drawn only from the principles whose rule decides that pair,
    so every example is rule-decided, and a pair no rule decides gives none
    (``stats["dropped_undecided"]``, per pass).

    Rules, ``cfg.rule_scope="global"`` (the public SALMON code): after the model label (an example
    whose deciding score is 0 is dropped first), every single-response rule in the file acts on
    every example, never negated: a decisive one overrides the label with probability
    ``cfg.global_rule_prob``; then a language rule always does, and drops the example when both
    responses fail it (``stats["dropped_rule"]``). Comparative rules are not used in this scope.

    Responses are shown in random order and ``preferred`` (1 or 2) follows the swap; it is then
    flipped with probability ``cfg.rule_label_noise`` (rule-decided) or ``cfg.label_noise``.
    Output columns: :data:`EXAMPLE_SCHEMA`; stats keys: :data:`STAT_KEYS`.
    """
    _validate(prefs, pairs, principles, cfg)
    stats = dict.fromkeys(STAT_KEYS, 0)
    if prefs.height == 0:
        return _empty_examples(), stats
    ix = _index(prefs, pairs, principles, cfg)
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {c: [] for c in EXAMPLE_SCHEMA}
    draw = None
    for pass_no in range(cfg.passes):
        paired = cfg.paired_negation and pass_no % 2 == 1
        draw = _mirror(draw, ix, rng) if paired else _draw(ix, cfg, rng)
        _emit(ix, draw, _label(ix, draw, cfg, stats), pass_no, out)
    df = pl.DataFrame(out, schema=EXAMPLE_SCHEMA)
    stats["examples"] = df.height
    stats["rule_decided"] = int(df["rule_decided"].sum())
    stats["flipped"] = int(df["flipped"].sum())
    return df, stats


@dataclass(frozen=True)
class _Index:
    """The judgements as dense (pair × principle) matrices, pairs in pair_id order and principles
    in name order, with what every pass draws from."""

    pair_ids: list[str]
    names: list[str]
    by_name: dict[str, PrincipleText]
    norm: np.ndarray  # normalised judge scores
    rule_a: np.ndarray  # 1 / 0 rule verdicts; NaN = no rule (or not judged)
    rule_b: np.ndarray
    rule: np.ndarray  # rule_a - rule_b: +1 only a satisfies the rule, -1 only b, 0 both or neither
    tied_rule: np.ndarray  # the rules a sampled principle carries (all NaN when they do not act)
    avail: np.ndarray  # drawable (pair, principle)
    n_avail: np.ndarray  # per pair: how many are drawable
    neutral: np.ndarray  # undecided_neutral: principles listed beside the deciding one
    undecidable: np.ndarray  # pairs no rule decides (rules_only)
    weight: np.ndarray  # per principle: its weight in the draw
    k_cap: np.ndarray  # per pair: the largest subset
    width: int
    rules_only: bool
    hard: list[int]  # global scope: the language rule(s)
    coin: list[int]  # global scope: every other single-response rule
    texts: pl.DataFrame  # pair_id, prompt_id, prompt, response_a, response_b in pair_id order

    @property
    def n_pairs(self) -> int:
        return len(self.pair_ids)


def _index(prefs: pl.DataFrame, pairs: pl.DataFrame, principles: Sequence[PrincipleText],
           cfg: AggregationConfig) -> _Index:
    # Sorted first so the variance sums (hence norm_score bits) do not depend on input row order.
    prefs = normalise_scores(_with_rule_verdicts(prefs).sort("principle", "pair_id"))
    pair_ids = sorted(prefs["pair_id"].unique().to_list())
    names = sorted(prefs["principle"].unique().to_list())
    pair_idx = {p: i for i, p in enumerate(pair_ids)}
    name_idx = {n: j for j, n in enumerate(names)}
    shape = (len(pair_ids), len(names))
    rows = np.array([pair_idx[p] for p in prefs["pair_id"].to_list()], dtype=np.int64)
    cols = np.array([name_idx[n] for n in prefs["principle"].to_list()], dtype=np.int64)
    rule_a = _matrix(prefs, "rule_a", rows, cols, shape)
    rule_b = _matrix(prefs, "rule_b", rows, cols, shape)
    rule = rule_a - rule_b
    avail = np.zeros(shape, dtype=bool)
    avail[rows, cols] = True
    sampled = set(sampled_principles(cfg, names))
    avail &= np.array([n in sampled for n in names], dtype=bool)[None, :]
    # a judge without signal: draw only among the principles whose rule decides the pair, so each
    # verifiable principle gets every pair it can teach; a pair no rule decides gives no example
    rules_only = cfg.undecided == "drop" and cfg.rule_scope == "principle" and cfg.rule_mode == "override"
    neutral = np.zeros(shape, dtype=bool)
    undecidable = np.zeros(shape[0], dtype=bool)
    if rules_only:
        undecidable = avail.any(axis=1)
        if cfg.undecided_neutral:
            neutral = avail & (rule == 0)  # NaN (no rule) compares False
        avail &= np.nan_to_num(rule) != 0
        undecidable &= ~avail.any(axis=1)
        neutral &= avail.any(axis=1)[:, None]
    n_avail = avail.sum(axis=1)
    # balance_principles: a principle's weight is 1 / the number of pairs it is available on, so
    # a rarely decisive principle is drawn about as often in all as a common one
    weight = 1.0 / np.maximum(avail.sum(axis=0), 1) if cfg.balance_principles else np.ones(len(names))
    global_scope = cfg.rule_scope == "global"
    hard, coin = _global_rules(principles, names) if global_scope else ([], [])
    # undecided_neutral: one deciding principle and up to all the neutral ones
    k_cap = np.minimum(np.where(n_avail > 0, 1 + neutral.sum(axis=1), 0) if cfg.undecided_neutral else n_avail,
                       cfg.max_principles)
    texts = (pl.DataFrame({"pair_id": pair_ids})
             .join(pairs.select("pair_id", "prompt_id", "prompt", "response_a", "response_b"), on="pair_id", how="left"))
    return _Index(
        pair_ids=pair_ids, names=names, by_name={p.name: p for p in principles},
        norm=_matrix(prefs, "norm_score", rows, cols, shape), rule_a=rule_a, rule_b=rule_b, rule=rule,
        tied_rule=np.full(shape, np.nan) if global_scope or cfg.rule_mode == "off" else rule,
        avail=avail, n_avail=n_avail, neutral=neutral, undecidable=undecidable, weight=weight, k_cap=k_cap,
        width=max(int(k_cap.max()), 1), rules_only=rules_only, hard=hard, coin=coin, texts=texts,
    )


@dataclass(frozen=True)
class _Draw:
    """One pass's random draws: per pair its subset (``k`` principles, in ``subset``'s first
    columns where ``valid``), which of them are negated, the response order and the noise."""

    k: np.ndarray
    subset: np.ndarray
    valid: np.ndarray
    negated: np.ndarray
    swap: np.ndarray
    noise_u: np.ndarray
    coin_u: np.ndarray


def _draw(ix: _Index, cfg: AggregationConfig, rng: np.random.Generator) -> _Draw:
    """All draws of a pass, in a fixed order and with outcome-independent shapes."""
    k = _geometric_from_uniform(rng.random(ix.n_pairs), cfg.subset_p, np.maximum(ix.k_cap, 1))
    # exponential keys: the ascending order is a draw without replacement, weighted by `weight`
    keys = np.where(ix.avail, -np.log1p(-rng.random(ix.avail.shape)) / ix.weight[None, :], np.inf)
    negate_draw = rng.random(ix.avail.shape) < cfg.negation_prob
    swap, noise_u, coin_u = _order_and_noise(ix, rng)
    subset = np.argsort(keys, axis=1, kind="stable")[:, : ix.width]  # random order of available ones
    valid = (np.arange(ix.width)[None, :] < k[:, None]) & (ix.n_avail[:, None] > 0)
    if cfg.undecided_neutral:
        subset = _with_neutral(subset, ix.neutral, valid, rng)
    return _Draw(k, subset, valid, negate_draw[:, : ix.width] & valid, swap, noise_u, coin_u)


def _order_and_noise(ix: _Index, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pass's per-pair response swap, label-noise uniforms and global-rule coin uniforms."""
    return rng.random(ix.n_pairs) < 0.5, rng.random(ix.n_pairs), rng.random((ix.n_pairs, len(ix.coin)))


def _mirror(d: _Draw, ix: _Index, rng: np.random.Generator) -> _Draw:
    """Pass ``d``'s subsets with every negation flipped; order, noise and coins drawn afresh."""
    return _Draw(d.k, d.subset, d.valid, ~d.negated & d.valid, *_order_and_noise(ix, rng))


@dataclass(frozen=True)
class _Labels:
    """Per pair: whether it gives an example, its deciding principle and score, and its label."""

    keep: np.ndarray
    score: np.ndarray
    rule_decided: np.ndarray
    deciding: np.ndarray
    deciding_negated: np.ndarray
    preferred: np.ndarray  # 1 or 2: which shown response is preferred (after noise)
    flip: np.ndarray


def _label(ix: _Index, d: _Draw, cfg: AggregationConfig, stats: dict[str, int]) -> _Labels:
    """The label of every pair's example under pass draws ``d`` (see :func:`aggregate`); counts
    the dropped examples into ``stats``."""
    ar = np.arange(ix.n_pairs)
    sign = np.where(d.negated, -1.0, 1.0)
    s = sign * ix.norm[ar[:, None], d.subset]
    r = sign * ix.tied_rule[ar[:, None], d.subset]
    if cfg.rule_mode == "blend":
        s = s + cfg.rule_weight * np.nan_to_num(r, nan=0.0)

    dominant = np.argmax(np.where(d.valid, np.abs(s), -1.0), axis=1)  # first max on ties
    rule_hit = d.valid & ~np.isnan(r) & (r != 0)
    rule_decided = rule_hit.any(axis=1) & (cfg.rule_mode == "override")
    first_rule = np.argmax(rule_hit, axis=1)
    position = np.where(rule_decided, first_rule, dominant)
    score = np.where(rule_decided, r[ar, first_rule], s[ar, dominant])
    keep = (score != 0) & (ix.n_avail > 0)
    deciding = np.array([ix.names[d.subset[i, position[i]]] for i in range(ix.n_pairs)], dtype=object)
    deciding_negated = d.negated[ar, position]

    def override(hit: np.ndarray, j: int) -> None:
        """Rule j (never negated) sets the label of the ``hit`` examples."""
        score[hit] = ix.rule[hit, j]
        rule_decided[hit] = True
        deciding[hit] = ix.names[j]
        deciding_negated[hit] = False

    # Global rules override the label in file order; the language rule last.
    for c, j in enumerate(ix.coin):
        override(keep & (np.nan_to_num(ix.rule[:, j]) != 0) & (d.coin_u[:, c] < cfg.global_rule_prob), j)
    for j in ix.hard:
        both_fail = keep & (ix.rule_a[:, j] == 0) & (ix.rule_b[:, j] == 0)
        stats["dropped_rule"] += int(both_fail.sum())
        keep &= ~both_fail
        override(keep & (np.nan_to_num(ix.rule[:, j]) != 0), j)
    if ix.rules_only:
        stats["dropped_undecided"] += int(ix.undecidable.sum())
    stats["dropped_zero"] += int(((score == 0) & (ix.n_avail > 0)).sum())

    preferred = np.where((score > 0) ^ d.swap, 1, 2)  # a shown first iff not swapped
    flip = d.noise_u < np.where(rule_decided, cfg.rule_label_noise, cfg.label_noise)
    preferred = np.where(flip, 3 - preferred, preferred)
    return _Labels(keep, score, rule_decided, deciding, deciding_negated, preferred, flip)


def _emit(ix: _Index, d: _Draw, lab: _Labels, pass_no: int, out: dict[str, list]) -> None:
    """Append pass ``pass_no``'s kept examples to the ``out`` columns (:data:`EXAMPLE_SCHEMA`)."""
    prompt_ids, prompts = ix.texts["prompt_id"].to_list(), ix.texts["prompt"].to_list()
    resp_a, resp_b = ix.texts["response_a"].to_list(), ix.texts["response_b"].to_list()
    for i in np.flatnonzero(lab.keep):
        chosen = []
        for pos in range(d.k[i]):
            pt = ix.by_name[ix.names[d.subset[i, pos]]]
            neg = bool(d.negated[i, pos])
            chosen.append({"name": pt.name, "negated": neg, "text": pt.negative_definition if neg else pt.definition})
        pid = ix.pair_ids[i]
        first, second = (resp_b[i], resp_a[i]) if d.swap[i] else (resp_a[i], resp_b[i])
        out["example_id"].append(f"{pid}-{pass_no}")
        out["pass"].append(pass_no)
        out["pair_id"].append(pid)
        out["prompt_id"].append(prompt_ids[i])
        out["prompt"].append(prompts[i])
        out["response_1"].append(first)
        out["response_2"].append(second)
        out["preferred"].append(int(lab.preferred[i]))
        out["principles"].append(json.dumps(chosen, ensure_ascii=False))
        out["n_principles"].append(int(d.k[i]))
        out["deciding_principle"].append(str(lab.deciding[i]))
        out["deciding_negated"].append(bool(lab.deciding_negated[i]))
        out["deciding_score"].append(float(lab.score[i]))
        out["rule_decided"].append(bool(lab.rule_decided[i]))
        out["flipped"].append(bool(lab.flip[i]))
