"""The reward model's training examples (SALMON §1.3): the judgements aggregated into sampled
principle subsets with negations (``salmon_dag.aggregation``), as the ``rm_training_data`` stage."""

from __future__ import annotations

from salmon_dag.stage import DataStage, Log, Reads, StageInputs, TableResult


def run(inputs: StageInputs, log: Log = print) -> TableResult:
    """Every judgement of ``synthetic_preferences`` with its pair's texts, aggregated under the
    reward-model principles it was judged from."""
    from salmon_dag.aggregation import aggregate
    from salmon_dag.principles import principle_texts

    pset = inputs.principles("reward_model")
    prefs, pairs = inputs.table("synthetic_preferences"), inputs.table("response_pairs")
    df, stats = aggregate(prefs.select("pair_id", "principle", "score_ab", "score_ba", "score", "rule_a", "rule_b"),
                          pairs, principle_texts(pset), inputs.section("aggregation"), inputs.seed)
    log(f"rm_training_data: {stats}")
    deciding = dict(df.group_by("deciding_principle").len().iter_rows()) if df.height else {}
    metadata = {
        **{k: int(v) for k, v in stats.items()},
        "share_preferred_1": round(float((df["preferred"] == 1).mean()), 3) if df.height else 0.0,
        "share_rule_decided": round(float(df["rule_decided"].mean()), 3) if df.height else 0.0,
        "deciding_principles": dict(sorted(deciding.items())),
    }
    return TableResult(df, metadata, principle_hash=pset.content_hash,
                       model_id=prefs["judge_model"][0] if prefs.height else None)


STAGE = DataStage("rm_training_data",
                  Reads(("aggregation",), ("synthetic_preferences", "response_pairs", "principles/reward_model")), run)
