"""Judge-rating parsing and win-rate arithmetic (issue 11 groundwork), on hand-made data."""

import math

import pytest

from salmon_dag.benchmarks.ratings import parse_rating, summarize
from salmon_dag.benchmarks.win_rate import item_scores, length_adjusted_win_rate, parse_verdict, win_rate
from salmon_dag.templates import pairwise_request


@pytest.mark.parametrize("text, rating", [
    ("The answer is fine. Rating: [[7]]", 7.0),
    ("Rating: [[ 8.5 ]]", 8.5),
    ("first [[3]] then [[9]]", 3.0),  # the first verdict counts
    ("Rating: [6]", 6.0),  # single-bracket fallback
    ("[[4]] and [8]", 4.0),  # double brackets win over the fallback
    ("Rating: [[11]]", None),  # out of range
    ("Rating: [[0]]", None),
    ("Rating: 7/10", None),  # no brackets
    ("Rating: [[seven]]", None),
    ("", None),
    (None, None),
])
def test_ratings_parse_or_are_unparseable(text, rating):
    assert parse_rating(text) == rating


def test_summaries_exclude_and_count_unparseable_ratings():
    s = summarize([8.0, None, 6.0, None, 7.0])
    assert (s.mean, s.n, s.unparseable) == (7.0, 3, 2)
    assert s.stderr == pytest.approx(math.sqrt(1.0 / 3))
    empty = summarize([None])
    assert math.isnan(empty.mean) and empty.unparseable == 1


def test_win_rate_counts_ties_half_and_averages_both_orders():
    verdicts = [
        ["policy", "policy"],  # 1
        ["policy", "reference"],  # 0.5: the judge prefers a position, not an answer
        ["tie", "policy"],  # 0.75
        ["reference", None],  # 0: one readable order
        [None, None],  # excluded
    ]
    assert item_scores(verdicts) == [1.0, 0.5, 0.75, 0.0, None]
    wr = win_rate(verdicts)
    assert (wr.win_rate, wr.n, wr.excluded) == (pytest.approx(0.5625), 4, 1)
    mean = 0.5625
    var = sum((s - mean) ** 2 for s in (1.0, 0.5, 0.75, 0.0)) / 3
    assert wr.stderr == pytest.approx(math.sqrt(var / 4))


def test_length_control_removes_a_win_rate_that_length_alone_explains():
    # 40 items: the policy is longer on 30 and wins 27 of them; shorter on 10 and wins 1 of them.
    # Its raw win rate (0.7) comes from length: at equal length the fit predicts about a coin flip.
    verdicts = [["policy", "policy"] if i < 27 else ["reference", "reference"] for i in range(30)]
    verdicts += [["policy", "policy"] if i < 1 else ["reference", "reference"] for i in range(10)]
    policy_len = [200] * 30 + [100] * 10
    reference_len = [100] * 30 + [200] * 10
    assert win_rate(verdicts).win_rate == pytest.approx(0.7)
    assert length_adjusted_win_rate(verdicts, policy_len, reference_len) == pytest.approx(0.5, abs=0.02)
    # equal lengths everywhere: nothing to control for, the fit returns the raw rate
    assert length_adjusted_win_rate(verdicts, [100] * 40, [100] * 40) == pytest.approx(0.7, abs=1e-3)


@pytest.mark.parametrize("text, policy_is_a, verdict", [
    ("A is clearer. [[A]]", True, "policy"),
    ("A is clearer. [[A]]", False, "reference"),
    ("[[ B ]]", True, "reference"),
    ("[[B]]", False, "policy"),
    ("Equally good: [[C]]", True, "tie"),
    ("first [[B]] then [[A]]", True, "reference"),
    ("I prefer A.", True, None),
    ("[[D]]", True, None),
    (None, False, None),
])
def test_pairwise_verdicts_map_to_the_policy_whatever_the_order(text, policy_is_a, verdict):
    assert parse_verdict(text, policy_is_a) == verdict


def test_pairwise_request_shows_both_replies_in_the_given_order():
    p = pairwise_request("Name a colour.", "Blue.", "Red.")
    assert p.index("[Reply A]\nBlue.") < p.index("[Reply B]\nRed.") and p.rstrip().endswith("[End of reply B]")


def test_rm_agreement_rows_are_reward_model_evals_with_a_shares_standard_error():
    import polars as pl

    from salmon_dag.benchmarks.results import mean_stderr
    from salmon_dag.benchmarks.stage import RM_AGREEMENT, rm_agreement

    ev = pl.DataFrame({"metric": ["heldout_accuracy", "hh_harmless_agreement", "hh_harmless_agreement/principle_free"],
                       "value": [0.9, 0.75, 1.0], "n": [40, 16, 1]})
    scores = rm_agreement(ev)
    assert [(s.benchmark, s.metric, s.value, s.n) for s in scores] == [
        (RM_AGREEMENT, "hh_harmless_agreement", 0.75, 16), (RM_AGREEMENT, "hh_harmless_agreement/principle_free", 1.0, 1)]
    # the standard error that scoring the 16 pairs one by one gave (12 agreed)
    assert scores[0].stderr == pytest.approx(mean_stderr([1.0] * 12 + [0.0] * 4)[1])
    assert scores[1].stderr == 0.0
