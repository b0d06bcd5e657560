import gzip
import json

import pytest

from salmon_dag.reward_model.hh_rlhf import (
    EMPTY_REPLY,
    IDENTICAL_REPLIES,
    INVALID_JSON,
    MISSING_FIELD,
    MULTI_TURN_REPLY,
    NO_ASSISTANT_TURN,
    HHPairError,
    HumanPair,
    disjoint_split,
    read_hh_pairs,
    split_hh_pair,
)
from salmon_dag.templates import ASSISTANT_TAG

CONTEXT = "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water.\n\nHuman: For how long?"
GOOD = CONTEXT + "\n\nAssistant: About nine minutes for a hard yolk."
BAD = CONTEXT + "\n\nAssistant: Forever."


def _row(chosen: str, rejected: str) -> dict:
    return {"chosen": chosen, "rejected": rejected}


# --------------------------------------------------------------------------- split_hh_pair
def test_split_multi_turn_dialogue():
    turns, chosen, rejected = split_hh_pair(GOOD, BAD)
    assert turns == [
        ("user", " How do I boil an egg?"),
        ("assistant", " Put it in boiling water."),
        ("user", " For how long?"),
    ]
    assert (chosen, rejected) == ("About nine minutes for a hard yolk.", "Forever.")


def test_split_backs_off_when_common_prefix_ends_mid_reply():
    # Both replies start with "About "; the split must still be at the assistant turn.
    turns, chosen, rejected = split_hh_pair(CONTEXT + "\n\nAssistant: About nine minutes.",
                                            CONTEXT + "\n\nAssistant: About an hour.")
    assert turns[-1] == ("user", " For how long?") and len(turns) == 3
    assert (chosen, rejected) == ("About nine minutes.", "About an hour.")


def test_split_when_one_reply_extends_the_other():
    _, chosen, rejected = split_hh_pair(CONTEXT + "\n\nAssistant: Nine", CONTEXT + "\n\nAssistant: Nine minutes.")
    assert (chosen, rejected) == ("Nine", "Nine minutes.")


def test_split_errors_name_the_problem():
    with pytest.raises(HHPairError, match="no assistant turn") as exc:
        split_hh_pair("\n\nHuman: Hi there", "\n\nHuman: Hello")
    assert exc.value.reason == NO_ASSISTANT_TURN and isinstance(exc.value, ValueError)
    with pytest.raises(ValueError, match="rejected reply is empty"):
        split_hh_pair(GOOD, CONTEXT + "\n\nAssistant:  ")
    with pytest.raises(ValueError, match="chosen reply runs on") as exc:
        split_hh_pair(CONTEXT + "\n\nAssistant: Nine.\n\nHuman: Thanks\n\nAssistant: Welcome.", BAD)
    assert exc.value.reason == MULTI_TURN_REPLY


# --------------------------------------------------------------------------- read_hh_pairs
def _write_jsonl(path, lines):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as fh:
        for line in lines:
            fh.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


@pytest.mark.parametrize("name", ["hh.jsonl", "hh.jsonl.gz"])
def test_read_renders_context_in_our_format(tmp_path, name):
    path = _write_jsonl(tmp_path / name, [_row(GOOD, BAD)])
    pairs, skipped = read_hh_pairs(str(path))
    assert skipped == {}
    assert pairs == [HumanPair(
        row=1,
        context=("### User: How do I boil an egg?\n\n### Assistant: Put it in boiling water.\n\n"
                 "### User: For how long?\n\n### Assistant:"),
        chosen="About nine minutes for a hard yolk.",
        rejected="Forever.",
    )]
    assert pairs[0].context.endswith(ASSISTANT_TAG) and "Human:" not in pairs[0].context


def test_read_skips_bad_rows_and_counts_them(tmp_path):
    path = _write_jsonl(tmp_path / "hh.jsonl.gz", [
        _row(GOOD, BAD),                                   # 1 ok
        {"chosen": GOOD},                                  # 2 missing field
        "{not json",                                       # 3 invalid JSON
        _row(GOOD, GOOD),                                  # 4 identical replies
        _row("\n\nHuman: a", "\n\nHuman: b"),              # 5 no assistant turn
        _row(GOOD, CONTEXT + "\n\nAssistant:"),            # 6 empty reply
        "",                                                # blank line: not a row
        _row(BAD, GOOD),                                   # 8 ok
        {"chosen": 3, "rejected": BAD},                    # 9 not text
    ])
    pairs, skipped = read_hh_pairs(str(path))
    assert [p.row for p in pairs] == [1, 8]
    assert skipped == {MISSING_FIELD: 2, INVALID_JSON: 1, IDENTICAL_REPLIES: 1, NO_ASSISTANT_TURN: 1, EMPTY_REPLY: 1}
    limited, _ = read_hh_pairs(str(path), limit=1)
    assert [p.row for p in limited] == [1]


def test_read_missing_file_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.jsonl.gz"
    with pytest.raises(FileNotFoundError, match="nope.jsonl.gz") as exc:
        read_hh_pairs(str(missing))
    assert "\n" not in str(exc.value)


def test_read_local_dataset_folder(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    folder = tmp_path / "hh"
    folder.mkdir()
    _write_jsonl(folder / "test.jsonl", [_row(GOOD, BAD), _row(BAD, BAD)])
    pairs, skipped = read_hh_pairs(str(folder), split="test")
    assert [(p.row, p.chosen) for p in pairs] == [(1, "About nine minutes for a hard yolk.")]
    assert skipped == {IDENTICAL_REPLIES: 1}


# --------------------------------------------------------------------------- disjoint_split
def _pairs(n: int) -> list[HumanPair]:
    return [HumanPair(row=i + 1, context=f"### User: q{i}\n\n### Assistant:", chosen=f"good {i}", rejected=f"bad {i}")
            for i in range(n)]


def test_split_is_disjoint_deterministic_and_order_free():
    pairs = _pairs(1000)
    pmp, ev = disjoint_split(pairs, 0.3, seed=7)
    assert {p.row for p in pmp}.isdisjoint({p.row for p in ev})
    assert len(pmp) + len(ev) == 1000
    assert 250 < len(pmp) < 350  # fraction roughly respected
    assert disjoint_split(pairs, 0.3, seed=7) == (pmp, ev)
    rev_pmp, rev_ev = disjoint_split(pairs[::-1], 0.3, seed=7)
    assert {p.row for p in rev_pmp} == {p.row for p in pmp} and {p.row for p in rev_ev} == {p.row for p in ev}
    other_pmp, _ = disjoint_split(pairs, 0.3, seed=8)
    assert {p.row for p in other_pmp} != {p.row for p in pmp}
    assert disjoint_split(pairs, 0.0, seed=7) == ([], pairs)
    assert disjoint_split(pairs, 1.0, seed=7) == (pairs, [])


def test_split_keeps_duplicates_together():
    pairs = _pairs(200)
    # Same content at different rows (as in a file with repeated rows).
    dupes = [HumanPair(row=1000 + p.row, context=p.context, chosen=p.chosen, rejected=p.rejected) for p in pairs]
    pmp, ev = disjoint_split(pairs + dupes, 0.5, seed=0)
    pmp_content = {(p.context, p.chosen, p.rejected) for p in pmp}
    ev_content = {(p.context, p.chosen, p.rejected) for p in ev}
    assert pmp_content and ev_content and pmp_content.isdisjoint(ev_content)


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan")])
def test_split_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="pmp_fraction"):
        disjoint_split(_pairs(3), fraction, seed=0)


# --------------------------------------------------------------------------- real data
def test_real_harmless_base_test_split(shared_data):
    pairs, skipped = read_hh_pairs(str(shared_data / "hh_rlhf_harmless_base_test.jsonl.gz"))
    assert len(pairs) > 2000
    assert len(pairs) + sum(skipped.values()) == 2312
    assert all(p.chosen != p.rejected and p.chosen and p.rejected for p in pairs)
    assert all(p.context.startswith("### User:") and p.context.endswith(ASSISTANT_TAG) for p in pairs)
    assert not any("\n\nHuman:" in p.context or "\n\nAssistant:" in p.context for p in pairs)
    pmp, ev = disjoint_split(pairs, 0.5, seed=0)
    assert pmp and ev and {p.row for p in pmp}.isdisjoint({p.row for p in ev})


# --------------------------------------------------------------------------- SHP (SALMON's PMP)
def _shp(history="Why is the sky blue?", a="Light scatters off air molecules; blue scatters most.", b="Magic.",
         labels=1, score_a=30, score_b=5):
    return {"history": history, "human_ref_A": a, "human_ref_B": b, "labels": labels, "score_A": score_a,
            "score_B": score_b}


def test_shp_pairs_follow_the_label_and_keep_only_clear_score_ratios(tmp_path):
    path = _write_jsonl(tmp_path / "shp.jsonl", [
        _shp(),                                   # A preferred, ratio 6
        _shp(labels=0, score_a=2, score_b=20),    # B preferred, ratio 10
        _shp(score_a=10, score_b=5),              # ratio 2: not above 2
        _shp(labels=None),                        # no label
        "{not json",
    ])
    pairs, skipped = read_hh_pairs(str(path), format="shp", score_ratio_above=2.0)
    assert [(p.row, p.chosen, p.rejected) for p in pairs] == [
        (1, "Light scatters off air molecules; blue scatters most.", "Magic."),
        (2, "Magic.", "Light scatters off air molecules; blue scatters most."),
    ]
    assert pairs[0].context.endswith(ASSISTANT_TAG) and "Why is the sky blue?" in pairs[0].context
    assert skipped == {"score_ratio_not_above": 1, MISSING_FIELD: 1, INVALID_JSON: 1}
    every, _ = read_hh_pairs(str(path), format="shp")  # no ratio filter: the ratio-2 pair stays
    assert len(every) == 3


def test_pmp_trains_on_every_source_and_evaluates_on_none_of_them(tmp_path):
    from salmon_dag.config import HumanPairsConfig, PMPConfig, RewardModelConfig
    from salmon_dag.reward_model.stage import human_data

    hh = _write_jsonl(tmp_path / "hh.jsonl", [_row(GOOD, BAD), _row(GOOD.replace("nine", "ten"), BAD)])
    held = _write_jsonl(tmp_path / "hh_test.jsonl", [_row(GOOD.replace("nine", "eight"), BAD)])
    shp = _write_jsonl(tmp_path / "shp.jsonl", [_shp(), _shp(score_a=6, score_b=5)])
    cfg = RewardModelConfig(
        human_eval=HumanPairsConfig(source=str(held), split="test"),
        pmp=PMPConfig(data=HumanPairsConfig(source=str(hh), split="train"),
                      more_data=[HumanPairsConfig(source=str(shp), format="shp", score_ratio_above=2)]))
    data = human_data(cfg, seed=0, log=lambda _: None)
    assert [p.group for p in data.pmp] == ["pmp:1", "pmp:2", "pmp2:1"]
    assert [p.group for p in data.evaluation] == ["hh:1"] and "eight" in data.evaluation[0].chosen
    with pytest.raises(ValueError, match="score_ratio_above applies to format 'shp' only"):
        HumanPairsConfig(source=str(hh), score_ratio_above=2)
