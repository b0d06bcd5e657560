"""Aggregation of judgements into reward-model training examples (SALMON §1.3)."""

import json

import numpy as np
import polars as pl
import pytest

from salmon_dag.aggregation import (
    EXAMPLE_SCHEMA,
    aggregate,
    normalise_scores,
    truncated_geometric,
)
from salmon_dag.config import AggregationConfig
from salmon_dag.principles import PrincipleText
from salmon_dag.preferences import combine
from salmon_dag.rules import ForbiddenPhraseRule, LanguageMatchRule, LengthRule

PRINCIPLES = [PrincipleText(f"p{i}", f"be good {i}", f"be bad {i}") for i in range(10)]


def make_pairs(n: int) -> pl.DataFrame:
    return pl.DataFrame({
        "pair_id": [f"pair{i:05d}" for i in range(n)],
        "prompt_id": [f"q{i}" for i in range(n)],
        "prompt": [f"question {i}?" for i in range(n)],
        "response_a": [f"A{i}" for i in range(n)],
        "response_b": [f"B{i}" for i in range(n)],
    })


def make_prefs(rows: list[tuple[str, str, float, int | None]]) -> pl.DataFrame:
    """Consistent judgements: both per-order scores equal the combined score."""
    return pl.DataFrame(
        {"pair_id": [r[0] for r in rows], "principle": [r[1] for r in rows],
         "score_ab": [float(r[2]) for r in rows], "score_ba": [float(r[2]) for r in rows],
         "score": [float(r[2]) for r in rows], "rule_score": [r[3] for r in rows]},
        schema={"pair_id": pl.Utf8, "principle": pl.Utf8, "score_ab": pl.Float64, "score_ba": pl.Float64,
                "score": pl.Float64, "rule_score": pl.Int64},
    )


def judged(rows: list[tuple[str, str, float, float]], inconsistent: str = "zero") -> pl.DataFrame:
    """Judgements from raw per-order scores (pair_id, principle, score_ab, score_ba), combined as
    synthetic_preferences does."""
    ab = np.array([r[2] for r in rows], dtype=float)
    ba = np.array([r[3] for r in rows], dtype=float)
    _, score = combine(ab, ba, inconsistent)
    return pl.DataFrame({"pair_id": [r[0] for r in rows], "principle": [r[1] for r in rows],
                         "score_ab": ab, "score_ba": ba, "score": score})


def with_rules(prefs: pl.DataFrame, verdicts: dict[str, tuple[bool, bool]]) -> pl.DataFrame:
    """Add rule_a / rule_b: ``verdicts[pair_id]`` for principle "rule", null elsewhere."""
    a = [verdicts[p][0] if n == "rule" else None for p, n in prefs.select("pair_id", "principle").iter_rows()]
    b = [verdicts[p][1] if n == "rule" else None for p, n in prefs.select("pair_id", "principle").iter_rows()]
    return prefs.with_columns(pl.Series("rule_a", a, dtype=pl.Boolean), pl.Series("rule_b", b, dtype=pl.Boolean))


def cfg(**kw) -> AggregationConfig:
    base = dict(passes=1, subset_p=0.3, max_principles=8, negation_prob=0.0, label_noise=0.0,
                rule_label_noise=0.0, rule_mode="override", rule_weight=1.0)
    return AggregationConfig(**{**base, **kw})


def preferred_text(df: pl.DataFrame) -> list[str]:
    return [r1 if p == 1 else r2 for r1, r2, p in df.select("response_1", "response_2", "preferred").iter_rows()]


# --------------------------------------------------------------------------- normalisation
def test_variance_normalisation_per_principle():
    prefs = make_prefs([
        ("x", "p0", 1.0, None), ("y", "p0", -1.0, None),          # var 1 → unchanged
        ("x", "p1", 4.0, None), ("y", "p1", 0.0, None),           # mean 2, var 4 → 1.0, 0.0
        ("x", "p2", 0.0, None), ("y", "p2", 0.0, None),           # zero variance → raw
        ("x", "p3", 3.0, None), ("y", "p3", 3.0, None),           # zero variance, non-zero → raw
    ])
    out = normalise_scores(prefs).sort("principle", "pair_id")
    assert out["norm_score"].to_list() == [1.0, -1.0, 1.0, 0.0, 0.0, 0.0, 3.0, 3.0]
    assert out.columns[-1] == "norm_score" and out.height == prefs.height
    # a constant column whose float variance is not exactly 0 still counts as zero variance
    const = normalise_scores(make_prefs([(f"x{i}", "p0", 0.1, None) for i in range(7)]))
    assert const["norm_score"].to_list() == [0.1] * 7


def test_normalisation_divides_by_variance_of_both_raw_orders():
    # Hand-computed. Raw per-order scores of p0: (2, 4), (1, -1), (-3, -1); combined ("zero"):
    # 3, 0 (the orders disagree), -2. The six raw values have mean 1/3 and mean square 32/6, so
    # the population variance is 32/6 - 1/9 = 47/9. The combined scores alone have variance 38/9:
    # dividing by that (the old normaliser) would give 27/38, not 27/47.
    prefs = judged([("x", "p0", 2.0, 4.0), ("y", "p0", 1.0, -1.0), ("z", "p0", -3.0, -1.0)])
    assert prefs["score"].to_list() == [3.0, 0.0, -2.0]
    got = normalise_scores(prefs).sort("pair_id")["norm_score"].to_numpy()
    np.testing.assert_allclose(got, [27 / 47, 0.0, -18 / 47], rtol=1e-12)
    # inconsistent judgements count towards the variance: without pair y it is different
    only_xz = normalise_scores(prefs.filter(pl.col("pair_id") != "y")).sort("pair_id")["norm_score"].to_numpy()
    np.testing.assert_allclose(only_xz, np.array([3.0, -2.0]) / np.var([2.0, 4.0, -3.0, -1.0]), rtol=1e-12)


def test_position_biased_principle_no_longer_decides_disproportionately():
    # 8 principles. Seven are honest, noisy readings of the true preference t. On p7 the judge is
    # position-biased: a per-pair letter preference c (as large as the signal) is added to the
    # letter (a), so its two orders agree only when the weak signal 0.5·t beats c, and the
    # judgements that survive the consistency filter are small. Dividing by the variance of the
    # zeroed combined scores (mostly zeros) inflates those survivors; dividing by the variance of
    # the raw per-order scores (SALMON) does not.
    rng = np.random.default_rng(0)
    n, names = 3000, [f"p{j}" for j in range(8)]
    truth = rng.normal(size=n)
    pairs = make_pairs(n)
    rows = []
    for i, pid in enumerate(pairs["pair_id"]):
        for j, name in enumerate(names):
            if j == 7:
                c, signal = rng.normal(), 0.5 * truth[i]
                rows.append((pid, name, signal + c, signal - c))
            else:
                noise = rng.normal(scale=0.5, size=2)
                rows.append((pid, name, truth[i] + noise[0], truth[i] + noise[1]))
    prefs = judged(rows)
    assert 0.2 < (prefs.filter(pl.col("principle") == "p7")["score"] != 0).mean() < 0.4
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(subset_p=0.2, passes=2), seed=0)
    shares = {p: (df["deciding_principle"] == p).mean() for p in names}
    assert shares["p7"] < 0.03, f"biased principle decides {shares['p7']:.1%} of labels"
    assert min(shares[p] for p in names[:7]) > 0.1  # each honest one keeps about its fair share (1/8)
    # today's normaliser (the variance of the zeroed combined score) let it decide > 10% of labels
    old = prefs.with_columns(pl.col("score").alias("score_ab"), pl.col("score").alias("score_ba"))
    df_old, _ = aggregate(old, pairs, PRINCIPLES, cfg(subset_p=0.2, passes=2), seed=0)
    assert (df_old["deciding_principle"] == "p7").mean() > 0.1


def test_normalisation_uses_population_variance():
    prefs = make_prefs([("a", "p0", 1.0, None), ("b", "p0", 2.0, None), ("c", "p0", 6.0, None)])
    var = np.var([1.0, 2.0, 6.0])  # ddof=0
    got = normalise_scores(prefs).sort("pair_id")["norm_score"].to_numpy()
    np.testing.assert_allclose(got, np.array([1.0, 2.0, 6.0]) / var)


# --------------------------------------------------------------------------- subset sizes
def test_truncated_geometric_matches_formula():
    rng = np.random.default_rng(0)
    p, max_k, n = 0.3, 5, 20_000
    k = truncated_geometric(rng, p, max_k, n)
    assert k.min() >= 1 and k.max() <= max_k and k.dtype.kind == "i"
    expected = (1 - p) ** np.arange(max_k) * p
    expected /= expected.sum()
    observed = np.bincount(k, minlength=max_k + 1)[1:] / n
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_truncated_geometric_caps_and_edges():
    rng = np.random.default_rng(1)
    assert (truncated_geometric(rng, 1.0, 8, 1000) == 1).all()
    capped = truncated_geometric(rng, 0.01, 8, 5000, n_available=3)
    assert set(np.unique(capped)) == {1, 2, 3}
    assert len(truncated_geometric(rng, 0.5, 4, 0)) == 0
    with pytest.raises(ValueError):
        truncated_geometric(rng, 0.0, 4, 10)
    with pytest.raises(ValueError):
        truncated_geometric(rng, 0.5, 4, 10, n_available=0)


# --------------------------------------------------------------------------- labels
def test_negation_flips_label_and_uses_negative_definition():
    pairs = make_pairs(50)
    prefs = make_prefs([(pid, "p0", 2.0, None) for pid in pairs["pair_id"]])
    neg, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(negation_prob=1.0), seed=0)
    assert neg.height == 50
    assert preferred_text(neg) == [f"B{i}" for i in range(50)]
    for row in neg["principles"].to_list():
        assert json.loads(row) == [{"name": "p0", "negated": True, "text": "be bad 0"}]
    assert neg["deciding_negated"].all() and (neg["deciding_score"] < 0).all()

    pos, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(negation_prob=0.0), seed=0)
    assert preferred_text(pos) == [f"A{i}" for i in range(50)]
    assert json.loads(pos["principles"][0]) == [{"name": "p0", "negated": False, "text": "be good 0"}]


def test_dominant_principle_by_absolute_score():
    # Every pair has the same scores, so each principle has zero variance and keeps raw scores.
    pairs = make_pairs(30)
    prefs = make_prefs([(pid, p, s, None) for pid in pairs["pair_id"]
                        for p, s in (("p0", 0.1), ("p1", -5.0), ("p2", 2.0))])
    df, stats = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=3, subset_p=1e-9, passes=10), seed=1)
    full = df.filter(pl.col("n_principles") == 3)
    assert full.height > 20
    assert set(full["deciding_principle"]) == {"p1"}
    assert (full["deciding_score"] == -5.0).all()
    assert preferred_text(full) == [f"B{int(pid[4:])}" for pid in full["pair_id"]]
    assert stats["examples"] == df.height == 300


def test_dominant_principle_is_taken_after_normalisation():
    # var(p0) = .01, var(p1) = 25, var(p2) = 4 → pair 0 normalised: p0 10, p1 -0.2, p2 0.5.
    pairs = make_pairs(2)
    prefs = make_prefs([(pid, p, s if pid == "pair00000" else -s, None) for pid in pairs["pair_id"]
                        for p, s in (("p0", 0.1), ("p1", -5.0), ("p2", 2.0))])
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=3, subset_p=1e-9, passes=30), seed=3)
    full = df.filter((pl.col("pair_id") == "pair00000") & (pl.col("n_principles") == 3))
    assert full.height > 0
    assert set(full["deciding_principle"]) == {"p0"}
    np.testing.assert_allclose(full["deciding_score"].to_numpy(), 10.0)
    assert set(preferred_text(full)) == {"A0"}


def test_ties_take_first_in_subset_order():
    pairs = make_pairs(40)
    prefs = make_prefs([(pid, p, s, None) for pid in pairs["pair_id"] for p, s in (("p0", 1.0), ("p1", -1.0))])
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=2, subset_p=1e-9), seed=2)
    for row in df.filter(pl.col("n_principles") == 2).iter_rows(named=True):
        assert row["deciding_principle"] == json.loads(row["principles"])[0]["name"]


def test_zero_scores_dropped_and_counted():
    pairs = make_pairs(10)
    prefs = make_prefs([(pid, "p0", 0.0 if i < 4 else 1.0, None) for i, pid in enumerate(pairs["pair_id"])])
    df, stats = aggregate(prefs, pairs, PRINCIPLES, cfg(passes=3), seed=0)
    assert stats["dropped_zero"] == 12 and stats["examples"] == df.height == 18
    assert set(df["pair_id"]) == set(pairs["pair_id"][4:])


def test_label_noise_rates():
    n = 2000
    pairs = make_pairs(n)
    prefs = make_prefs([(pid, "p0", 1.0, None) for pid in pairs["pair_id"]])
    df, stats = aggregate(prefs, pairs, PRINCIPLES, cfg(label_noise=0.1, rule_label_noise=0.3), seed=5)
    share = df["flipped"].mean()
    assert abs(share - 0.1) < 0.02 and stats["flipped"] == df["flipped"].sum()
    # flipped ones point at b, the rest at a
    texts = preferred_text(df)
    for t, f, i in zip(texts, df["flipped"], range(n)):
        assert t == (f"B{i}" if f else f"A{i}")

    rule_prefs = make_prefs([(pid, "p0", 1.0, 1) for pid in pairs["pair_id"]])
    df, stats = aggregate(rule_prefs, pairs, PRINCIPLES, cfg(label_noise=0.1, rule_label_noise=0.3), seed=5)
    assert df["rule_decided"].all() and stats["rule_decided"] == n
    assert abs(df["flipped"].mean() - 0.3) < 0.03


def test_order_randomised_and_label_follows_text():
    n = 2000
    pairs = make_pairs(n)
    rng = np.random.default_rng(9)
    scores = rng.normal(size=(n, 3))
    prefs = make_prefs([(pid, f"p{j}", scores[i, j], None) for i, pid in enumerate(pairs["pair_id"])
                        for j in range(3)])
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(negation_prob=0.5, max_principles=3), seed=4)
    a_first = (df["response_1"].str.starts_with("A")).mean()
    assert abs(a_first - 0.5) < 0.04
    for row, text in zip(df.iter_rows(named=True), preferred_text(df)):
        i = int(row["pair_id"][4:])
        assert text == (f"A{i}" if row["deciding_score"] > 0 else f"B{i}")
        chosen = json.loads(row["principles"])
        assert len(chosen) == row["n_principles"] and 1 <= len(chosen) <= 3
        names = [c["name"] for c in chosen]
        assert len(set(names)) == len(names) and row["deciding_principle"] in names
        # the deciding score is the signed score of the dominant principle
        dec = next(c for c in chosen if c["name"] == row["deciding_principle"])
        assert dec["negated"] == row["deciding_negated"]
        assert dec["text"] == (f"be bad {dec['name'][1:]}" if dec["negated"] else f"be good {dec['name'][1:]}")


def test_rule_modes():
    # Two pairs; p0 has model score +3 on the first pair (zero variance → raw: same on both).
    pairs = make_pairs(2)
    prefs = make_prefs([(pid, "p0", 3.0, -1) for pid in pairs["pair_id"]])
    over, st = aggregate(prefs, pairs, PRINCIPLES, cfg(rule_mode="override"), seed=0)
    assert over["rule_decided"].all() and st["rule_decided"] == 2
    assert preferred_text(over) == ["B0", "B1"] and (over["deciding_score"] == -1.0).all()

    off, st = aggregate(prefs, pairs, PRINCIPLES, cfg(rule_mode="off"), seed=0)
    assert not off["rule_decided"].any() and st["rule_decided"] == 0
    assert preferred_text(off) == ["A0", "A1"] and (off["deciding_score"] == 3.0).all()

    blend, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(rule_mode="blend", rule_weight=5.0), seed=0)
    assert not blend["rule_decided"].any()
    assert preferred_text(blend) == ["B0", "B1"] and (blend["deciding_score"] == -2.0).all()

    weak, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(rule_mode="blend", rule_weight=1.0), seed=0)
    assert preferred_text(weak) == ["A0", "A1"]


def test_undecided_drop_draws_only_principles_whose_rule_decides_the_pair():
    pairs = make_pairs(300)
    # p1's rule decides every third pair, p2's every other pair; p0 has no rule
    prefs = make_prefs([(pid, p, s, r) for i, pid in enumerate(pairs["pair_id"])
                        for p, s, r in (("p0", 3.0, None), ("p1", 0.5, 1 if i % 3 == 0 else 0),
                                        ("p2", 0.2, -1 if i % 2 == 0 else 0))])
    df, st = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=3, passes=2, undecided="drop"), seed=3)
    assert df["rule_decided"].all()
    for row in df.iter_rows(named=True):
        i = int(row["pair_id"][4:])
        decisive = ({"p1"} if i % 3 == 0 else set()) | ({"p2"} if i % 2 == 0 else set())
        assert {p["name"] for p in json.loads(row["principles"])} <= decisive and decisive
    undecided = sum(1 for i in range(300) if i % 3 and i % 2)
    assert st["dropped_undecided"] == 2 * undecided and df.height == 2 * (300 - undecided)
    judge, st_judge = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=3, passes=2), seed=3)
    assert st_judge["dropped_undecided"] == 0 and not judge["rule_decided"].all()


def test_undecided_neutral_lists_one_deciding_principle_among_tied_ones():
    pairs = make_pairs(300)
    # p1 decides every third pair (a first) and ties elsewhere; p2 decides every other pair (b
    # first) and ties elsewhere; p0 has no rule, so it is never listed
    prefs = make_prefs([(pid, p, s, r) for i, pid in enumerate(pairs["pair_id"])
                        for p, s, r in (("p0", 3.0, None), ("p1", 0.5, 1 if i % 3 == 0 else 0),
                                        ("p2", 0.2, -1 if i % 2 == 0 else 0))])
    c = cfg(max_principles=3, passes=4, undecided="drop", undecided_neutral=True, negation_prob=0.5)
    df, st = aggregate(prefs, pairs, PRINCIPLES, c, seed=3)
    undecided = sum(1 for i in range(300) if i % 3 and i % 2)
    assert st["dropped_undecided"] == 4 * undecided and df.height == 4 * (300 - undecided)
    places = set()
    for row in df.iter_rows(named=True):
        i = int(row["pair_id"][4:])
        listed = [p["name"] for p in json.loads(row["principles"])]
        deciding = [n for n in listed if (n == "p1" and i % 3 == 0) or (n == "p2" and i % 2 == 0)]
        assert len(deciding) == 1 and deciding[0] == row["deciding_principle"] and "p0" not in listed
        places.add(listed.index(deciding[0]))
        # the label follows the deciding rule (a for p1, b for p2), flipped by its negation
        wants_a = (deciding[0] == "p1") != row["deciding_negated"]
        shown_first = row["response_1"] == f"A{i}"
        assert (row["preferred"] == 1) == (wants_a == shown_first)
    assert places == {0, 1} and df["n_principles"].mean() > 1.3  # pairs decided by one rule list the other
    # off, a pair decided by both rules may list both; on, never
    off, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=3, passes=4, undecided="drop", subset_p=0.3), seed=3)
    assert off["n_principles"].max() == 2 and df.height == off.height


def test_override_takes_first_rule_principle_and_respects_negation():
    pairs = make_pairs(200)
    prefs = make_prefs([(pid, p, s, r) for pid in pairs["pair_id"]
                        for p, s, r in (("p0", 3.0, None), ("p1", 0.5, 0), ("p2", 0.2, 1))])
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(negation_prob=0.5, max_principles=3, passes=3), seed=7)
    for row, text in zip(df.iter_rows(named=True), preferred_text(df)):
        chosen = json.loads(row["principles"])
        names = [c["name"] for c in chosen]
        i = int(row["pair_id"][4:])
        if "p2" in names:  # the only principle with a non-zero rule score
            neg = chosen[names.index("p2")]["negated"]
            assert row["rule_decided"] and row["deciding_principle"] == "p2"
            assert row["deciding_score"] == (-1.0 if neg else 1.0)
            assert text == (f"B{i}" if neg else f"A{i}")
        else:
            assert not row["rule_decided"]


def test_rule_decides_even_when_model_scores_are_zero():
    pairs = make_pairs(3)
    prefs = make_prefs([(pid, "p0", 0.0, 1) for pid in pairs["pair_id"]])
    df, st = aggregate(prefs, pairs, PRINCIPLES, cfg(), seed=0)
    assert st["dropped_zero"] == 0 and df["rule_decided"].all()
    df, st = aggregate(prefs, pairs, PRINCIPLES, cfg(rule_mode="off"), seed=0)
    assert st["dropped_zero"] == 3 and df.height == 0


# --------------------------------------------------------------------------- determinism, shape, errors
def _random_case(n: int = 300, n_princ: int = 8):
    pairs = make_pairs(n)
    rng = np.random.default_rng(123)
    scores = rng.normal(size=(n, n_princ))
    prefs = make_prefs([(pid, f"p{j}", scores[i, j], None) for i, pid in enumerate(pairs["pair_id"])
                        for j in range(n_princ)])
    return prefs, pairs


def test_determinism_and_seed_sensitivity():
    prefs, pairs = _random_case()
    c = cfg(passes=2, negation_prob=0.5, label_noise=0.1)
    a, sa = aggregate(prefs, pairs, PRINCIPLES, c, seed=11)
    b, sb = aggregate(prefs.sample(fraction=1.0, shuffle=True, seed=1), pairs.reverse(), PRINCIPLES, c, seed=11)
    assert a.equals(b) and sa == sb
    other, _ = aggregate(prefs, pairs, PRINCIPLES, c, seed=12)
    assert a["principles"].to_list() != other["principles"].to_list()
    assert a["example_id"].to_list()[:2] == ["pair00000-0", "pair00001-0"]
    assert a.filter(pl.col("pass") == 1).height > 0


def test_schema_and_empty_input():
    prefs, pairs = _random_case(20, 3)
    df, stats = aggregate(prefs, pairs, PRINCIPLES, cfg(passes=2), seed=0)
    assert df.schema == pl.Schema(EXAMPLE_SCHEMA)
    assert set(stats) == {"examples", "dropped_zero", "dropped_rule", "dropped_undecided", "rule_decided", "flipped"}
    assert set(df["preferred"]) <= {1, 2}
    assert df["example_id"].is_unique().all()

    empty, stats = aggregate(prefs.clear(), pairs.clear(), PRINCIPLES, cfg(), seed=0)
    assert empty.height == 0 and empty.schema == pl.Schema(EXAMPLE_SCHEMA)
    assert stats == {"examples": 0, "dropped_zero": 0, "dropped_rule": 0, "dropped_undecided": 0, "rule_decided": 0,
                     "flipped": 0}


def test_subset_sizes_capped_by_available_principles():
    prefs, pairs = _random_case(200, 3)
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(max_principles=8, subset_p=0.05, passes=3), seed=0)
    assert df["n_principles"].max() == 3 and df["n_principles"].min() == 1


def test_unknown_principle_raises():
    pairs = make_pairs(1)
    prefs = make_prefs([("pair00000", "mystery", 1.0, None), ("pair00000", "zzz", 1.0, None)])
    with pytest.raises(ValueError, match="mystery, zzz") as exc:
        aggregate(prefs, pairs, PRINCIPLES, cfg(), seed=0)
    assert "\n" not in str(exc.value)


def test_unknown_pair_raises():
    prefs = make_prefs([("ghost", "p0", 1.0, None)])
    with pytest.raises(ValueError, match="ghost"):
        aggregate(prefs, make_pairs(1), PRINCIPLES, cfg(), seed=0)


# --------------------------------------------------------------------------- excluded principles
def test_excluded_principles_are_judged_but_never_sampled():
    prefs, pairs = _random_case(200, 4)
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(exclude_principles=["p1", "p3"], passes=3), seed=0)
    used = {c["name"] for row in df["principles"].to_list() for c in json.loads(row)}
    assert used == {"p0", "p2"} and set(df["deciding_principle"]) <= {"p0", "p2"}
    assert df["n_principles"].max() == 2
    with pytest.raises(ValueError, match="exclude_principles: unknown principle.*'nope'"):
        aggregate(prefs, pairs, PRINCIPLES, cfg(exclude_principles=["nope"]), seed=0)
    with pytest.raises(ValueError, match="no principle left"):
        aggregate(prefs, pairs, PRINCIPLES[:4], cfg(exclude_principles=["p0", "p1", "p2", "p3"]), seed=0)


def test_included_principles_are_the_only_ones_sampled():
    prefs, pairs = _random_case(200, 4)
    df, _ = aggregate(prefs, pairs, PRINCIPLES, cfg(include_principles=["p0", "p1", "p2"],
                                                    exclude_principles=["p2"], passes=3), seed=0)
    used = {c["name"] for row in df["principles"].to_list() for c in json.loads(row)}
    assert used == {"p0", "p1"}
    with pytest.raises(ValueError, match="include_principles: unknown principle.*'nope'"):
        aggregate(prefs, pairs, PRINCIPLES, cfg(include_principles=["nope"]), seed=0)
    with pytest.raises(ValueError, match="no principle left"):
        aggregate(prefs, pairs, PRINCIPLES, cfg(include_principles=["p0"], exclude_principles=["p0"]), seed=0)


# --------------------------------------------------------------------------- rule scope: global
GLOBAL = [PrincipleText("p0", "be good", "be bad"),
          PrincipleText("rule", "no boilerplate", "boilerplate", ForbiddenPhraseRule(type="forbidden_phrase", phrases=["x"])),
          PrincipleText("lang", "same language", "other language", LanguageMatchRule(type="language_match")),
          PrincipleText("short", "concise", "verbose", LengthRule(type="length", prefer="shorter"))]


def global_case(n: int, rule: tuple[bool, bool], lang: tuple[bool, bool] = (True, True),
                short: tuple[bool, bool] = (True, False), model: float = 1.0) -> tuple[pl.DataFrame, pl.DataFrame]:
    pairs = make_pairs(n)
    rows = []
    for pid in pairs["pair_id"]:
        for name, verdict in (("p0", None), ("rule", rule), ("lang", lang), ("short", short)):
            rows.append({"pair_id": pid, "principle": name, "score_ab": model, "score_ba": model, "score": model,
                         "rule_a": None if verdict is None else verdict[0],
                         "rule_b": None if verdict is None else verdict[1]})
    return pl.DataFrame(rows), pairs


def test_global_single_response_rule_is_a_coin_and_never_negated():
    # every model score prefers a; only b passes the boilerplate rule; negation is certain
    prefs, pairs = global_case(2000, rule=(False, True))
    c = cfg(rule_scope="global", negation_prob=1.0, max_principles=1, subset_p=1.0,
            exclude_principles=["rule", "lang", "short"])
    df, st = aggregate(prefs, pairs, GLOBAL, c, seed=3)
    assert df.height == 2000 and st["dropped_rule"] == 0
    by_rule = df.filter(pl.col("rule_decided"))
    assert abs(by_rule.height / df.height - 0.5) < 0.04  # global_rule_prob 0.5
    assert set(by_rule["deciding_principle"]) == {"rule"} and not by_rule["deciding_negated"].any()
    assert all(t.startswith("B") for t in preferred_text(by_rule))  # never negated
    # the model label (p0 negated → b) is what the others keep
    assert all(t.startswith("B") for t in preferred_text(df.filter(~pl.col("rule_decided"))))
    assert (df.filter(~pl.col("rule_decided"))["deciding_principle"] == "p0").all()
    # probability 1: every example; rule_label_noise applies to rule-decided labels
    df, _ = aggregate(prefs, pairs, GLOBAL, c.model_copy(update={"global_rule_prob": 1.0, "rule_label_noise": 0.25}), seed=3)
    assert df["rule_decided"].all() and abs(df["flipped"].mean() - 0.25) < 0.03


def test_global_language_rule_overrides_and_drops_when_both_fail():
    c = cfg(rule_scope="global", global_rule_prob=1.0, exclude_principles=["rule", "lang", "short"])
    # b passes the boilerplate rule, but only a is in the user's language: language wins, always
    prefs, pairs = global_case(300, rule=(False, True), lang=(True, False))
    df, st = aggregate(prefs, pairs, GLOBAL, c, seed=0)
    assert df.height == 300 and df["rule_decided"].all() and set(df["deciding_principle"]) == {"lang"}
    assert all(t.startswith("A") for t in preferred_text(df))
    # both in the wrong language: the example is dropped
    prefs, pairs = global_case(300, rule=(False, True), lang=(False, False))
    df, st = aggregate(prefs, pairs, GLOBAL, c, seed=0)
    assert df.height == 0 and st["dropped_rule"] == 300


def test_global_scope_ignores_comparative_rules_and_drops_zero_scores_first():
    # the comparative "short" rule is decisive for a, yet the model (negative) decides
    prefs, pairs = global_case(100, rule=(True, True), short=(True, False), model=-1.0)
    c = cfg(rule_scope="global", max_principles=4, subset_p=1e-9, exclude_principles=["rule", "lang"])
    df, _ = aggregate(prefs, pairs, GLOBAL, c, seed=0)
    assert df.height == 100 and not df["rule_decided"].any()
    assert all(t.startswith("B") for t in preferred_text(df))
    # principle scope: the same rule decides whenever "short" is sampled
    df, _ = aggregate(prefs, pairs, GLOBAL, c.model_copy(update={"rule_scope": "principle"}), seed=0)
    for row, text in zip(df.iter_rows(named=True), preferred_text(df)):
        sampled = "short" in {c["name"] for c in json.loads(row["principles"])}
        assert row["rule_decided"] == sampled and text.startswith("A" if sampled else "B")
    assert df["rule_decided"].any() and not df["rule_decided"].all()
    # a zero model score is dropped before global rules act (as in the public code)
    prefs, pairs = global_case(50, rule=(False, True), lang=(True, False), model=0.0)
    df, st = aggregate(prefs, pairs, GLOBAL, cfg(rule_scope="global", exclude_principles=["rule", "lang", "short"]), seed=0)
    assert df.height == 0 and st["dropped_zero"] == 50


def test_comparative_rule_follows_negation_in_principle_scope():
    # "short": a is the shorter one. Negated ("verbose") it prefers b, in every pass.
    prefs, pairs = global_case(400, rule=(True, True), model=0.0)
    c = cfg(negation_prob=0.5, max_principles=1, subset_p=1.0, exclude_principles=["p0", "rule", "lang"], passes=2)
    df, st = aggregate(prefs, pairs, GLOBAL, c, seed=1)
    assert df.height == 800 and df["rule_decided"].all()
    for row, text in zip(df.iter_rows(named=True), preferred_text(df)):
        assert text.startswith("B" if row["deciding_negated"] else "A")
    assert 0.4 < df["deciding_negated"].mean() < 0.6


def test_rule_score_alone_never_drops_an_example_in_global_scope():
    # only rule_score (a - b) known: 0 may mean both pass, so the language rule must not drop
    pairs = make_pairs(20)
    prefs = make_prefs([(pid, n, 1.0, 0 if n == "lang" else None) for pid in pairs["pair_id"] for n in ("p0", "lang")])
    df, st = aggregate(prefs, pairs, GLOBAL[:3], cfg(rule_scope="global", exclude_principles=["lang"]), seed=0)
    assert df.height == 20 and st["dropped_rule"] == 0 and not df["rule_decided"].any()


def test_paired_negation_shows_each_pair_and_principle_both_ways():
    pairs = make_pairs(200)
    # p1's rule prefers a on every pair, p2's prefers b on every other pair
    prefs = make_prefs([(pid, p, 0.0, r) for i, pid in enumerate(pairs["pair_id"])
                        for p, r in (("p1", 1), ("p2", -1 if i % 2 == 0 else 0))])
    c = cfg(passes=6, subset_p=1.0, negation_prob=0.5, undecided="drop", paired_negation=True)
    df, _ = aggregate(prefs, pairs, PRINCIPLES, c, seed=5)
    assert df.height == 6 * 200
    wants_a = [(r1 == f"A{int(pid[4:])}") == (p == 1) for pid, r1, p in
               df.select("pair_id", "response_1", "preferred").iter_rows()]
    df = df.with_columns(pl.Series("wants_a", wants_a))
    for pass_no in (0, 2, 4):
        first = df.filter(pl.col("pass") == pass_no).sort("pair_id")
        second = df.filter(pl.col("pass") == pass_no + 1).sort("pair_id")
        # the same principle, the other polarity, the other label; the order is drawn afresh
        assert first["deciding_principle"].to_list() == second["deciding_principle"].to_list()
        assert (first["deciding_negated"] != second["deciding_negated"]).all()
        assert (first["wants_a"] != second["wants_a"]).all()
        assert 0.3 < (first["response_1"] == second["response_1"]).mean() < 0.7
    # every (pair, principle) is negated exactly as often as not: a reply-only feature predicts nothing
    per = df.group_by("pair_id", "deciding_principle").agg(pl.col("deciding_negated").mean().alias("neg"),
                                                          pl.col("wants_a").mean().alias("a"))
    assert (per["neg"] == 0.5).all() and (per["a"] == 0.5).all()
    unpaired, _ = aggregate(prefs, pairs, PRINCIPLES, c.model_copy(update={"paired_negation": False}), seed=5)
    per_unpaired = unpaired.group_by("pair_id", "deciding_principle").agg(pl.col("deciding_negated").mean())
    assert (per_unpaired["deciding_negated"] != 0.5).any()
    with pytest.raises(ValueError, match="paired_negation needs negation_prob 0.5"):
        cfg(negation_prob=0.3, paired_negation=True)
