"""Synthetic preferences (SALMON §1.2): judge every response pair under every reward-model principle.

Judgements are content-addressed by (pair id, principle content hash, judge model, template
version): a rebuild reuses every judgement whose key is unchanged, so adding or editing one
principle judges only that principle, and removing one just drops its rows. Principles with a
verifiable ``rule`` also get a model-free verdict, stored beside the model's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import polars as pl

from salmon_dag.config import stable_hash
from salmon_dag.engine.base import Engine
from salmon_dag.judge import JudgeItem, judge_scores
from salmon_dag.principles import Principle, PrincipleSet
from salmon_dag.progress import progress_line
from salmon_dag.resume import ChunkStore
from salmon_dag.rules import compare_rule
from salmon_dag.stage import DataStage, Log, Reads, StageInputs, TableResult
from salmon_dag.templates import JUDGE_TEMPLATE_VERSION

KEY = ("pair_id", "principle_content_hash", "judge_model", "template_version")
PREFERENCE_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8,
    "prompt_id": pl.Utf8,
    "principle": pl.Utf8,
    "principle_content_hash": pl.Utf8,  # this principle only (the lineage column hashes the file)
    "judge_model": pl.Utf8,
    "template_version": pl.Utf8,
    "score_ab": pl.Float64,  # preference for response_a, shown as (a)
    "score_ba": pl.Float64,  # preference for response_a, shown as (b)
    "consistent": pl.Boolean,
    "score": pl.Float64,  # mean of the two orders when they agree in sign, else 0
    "rule_type": pl.Utf8,
    "rule_a": pl.Boolean,
    "rule_b": pl.Boolean,
    "rule_score": pl.Int64,  # +1 only a satisfies the rule, -1 only b, 0 both/neither, null no rule
}
_JUDGED = ["score_ab", "score_ba"]  # what the cache keeps; the rest is derived


def principle_hash(p: Principle) -> str:
    """Content hash of one principle: editing its text or rule changes it; its position does not."""
    return stable_hash(p.model_dump(mode="json"))


def combine(score_ab: np.ndarray, score_ba: np.ndarray, inconsistent: str = "zero") -> tuple[np.ndarray, np.ndarray]:
    """(consistent, score). SALMON counts a judgement only when both orders agree in sign
    (``inconsistent="zero"``). ``"mean"`` keeps the mean of the two orders for every pair: a judge
    biased towards one letter shifts both orders' scores the same way, so the mean cancels it."""
    consistent = np.sign(score_ab) * np.sign(score_ba) > 0
    mean = (score_ab + score_ba) / 2
    if inconsistent == "mean":
        return consistent, mean
    if inconsistent != "zero":
        raise ValueError(f"judge.inconsistent must be 'zero' or 'mean', got {inconsistent!r}")
    return consistent, np.where(consistent, mean, 0.0)


def rule_verdicts(p: Principle, instruction: str, a: str, b: str) -> tuple[str | None, bool | None, bool | None, int | None]:
    """(rule type, a satisfies it, b satisfies it, a - b) for the principle's rule; all None
    without one. A comparative rule marks the preferred response of the two (neither on a tie)."""
    if p.rule is None:
        return None, None, None, None
    ok_a, ok_b = compare_rule(p.rule, instruction, a, b)
    return p.rule.type, ok_a, ok_b, int(ok_a) - int(ok_b)


def judge_preferences(
    engine: Engine,
    pairs: pl.DataFrame,
    principles: Sequence[Principle],
    judge_model: str,
    cached: pl.DataFrame | None = None,
    log: Callable[[str], None] = print,
    inconsistent: str = "zero",
    chunk_pairs: int = 128,
    store: ChunkStore | None = None,
) -> tuple[pl.DataFrame, dict[str, int]]:
    """One row per (pair, principle). ``cached`` (the previous table) supplies every judgement
    whose key is unchanged; only the rest go to the judge, ``chunk_pairs`` pairs per call. With a
    ``store`` each call's judgements are saved there as they finish and a killed run's saved ones
    are reused like the cache's (they are keyed the same way). Returns (table, counts)."""
    hashes = {p.name: principle_hash(p) for p in principles}
    reuse: dict[tuple, tuple] = {}
    if cached is not None and cached.height:
        for row in cached.select(*KEY, *_JUDGED).iter_rows():
            reuse[row[:4]] = row[4:]
    resumed = set()
    for saved in store.values() if store is not None else ():
        for *key, score_ab, score_ba in saved:
            if tuple(key) not in reuse:
                reuse[tuple(key)] = (score_ab, score_ba)
                resumed.add(tuple(key))
    missing: dict[str, list[Principle]] = defaultdict(list)
    for pair_id in pairs["pair_id"].to_list():
        for p in principles:
            if (pair_id, hashes[p.name], judge_model, JUDGE_TEMPLATE_VERSION) not in reuse:
                missing[pair_id].append(p)
    # pairs that miss the same principles are judged together (one prefix per pair and order)
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for pair_id, ps in missing.items():
        groups[tuple(p.name for p in ps)].append(pair_id)
    by_id = {r["pair_id"]: r for r in pairs.iter_rows(named=True)}
    by_name = {p.name: p for p in principles}
    judged, to_judge = 0, sum(len(ids) for ids in groups.values())
    done = 0
    for names, pair_ids in groups.items():
        # in chunks, so a long judging step reports its progress
        for start in range(0, len(pair_ids), chunk_pairs):
            chunk = pair_ids[start:start + chunk_pairs]
            items = [JudgeItem(by_id[i]["prompt"], by_id[i]["response_a"], by_id[i]["response_b"]) for i in chunk]
            scores = judge_scores(engine, items, [(n, by_name[n].definition) for n in names])
            rows = []
            for i, pair_id in enumerate(chunk):
                for j, name in enumerate(names):
                    key = (pair_id, hashes[name], judge_model, JUDGE_TEMPLATE_VERSION)
                    reuse[key] = (float(scores[i, j, 0]), float(scores[i, j, 1]))
                    rows.append([*key, *reuse[key]])
            if store is not None:
                store.save(store.key([r[:4] for r in rows]), rows)
            done += len(chunk)
            log(progress_line("judging", done, to_judge, f"pairs x {len(names)} principles"))
        judged += len(pair_ids) * len(names)
        log(f"judged {len(pair_ids)} pairs x {len(names)} principles")
    rows, n_resumed = [], 0
    for pair in pairs.iter_rows(named=True):
        for p in principles:
            key = (pair["pair_id"], hashes[p.name], judge_model, JUDGE_TEMPLATE_VERSION)
            n_resumed += key in resumed
            rule_type, rule_a, rule_b, rule_score = rule_verdicts(p, pair["prompt"], pair["response_a"], pair["response_b"])
            score_ab, score_ba = reuse[key]
            consistent, score = combine(np.array([score_ab]), np.array([score_ba]), inconsistent)
            rows.append({
                "pair_id": pair["pair_id"], "prompt_id": pair["prompt_id"], "principle": p.name,
                "principle_content_hash": hashes[p.name], "judge_model": judge_model, "template_version": JUDGE_TEMPLATE_VERSION,
                "score_ab": score_ab, "score_ba": score_ba, "consistent": bool(consistent[0]), "score": float(score[0]),
                "rule_type": rule_type, "rule_a": rule_a, "rule_b": rule_b, "rule_score": rule_score,
            })
    total = pairs.height * len(principles)
    counts = {"judged": judged, "reused": total - judged - n_resumed, "resumed": n_resumed}
    return pl.DataFrame(rows, schema=PREFERENCE_SCHEMA), counts


# ``judge.model`` values that name a model of this pipeline (its asset), not a Hub id or a path
PIPELINE_JUDGES = ("sft_model", "base_model")


def judge_reads(profile) -> tuple[str, ...]:
    """The pipeline model ``judge.model`` names, which the stage then reads (none for a Hub id or a
    path: its name is in the judge section's hash)."""
    return (profile.judge.model,) if profile.judge.model in PIPELINE_JUDGES else ()


def judged_principles(pset: PrincipleSet, names: Sequence[str] | None) -> list[Principle]:
    """The principles of ``pset`` that ``judge.principles`` (``names``) selects: all when None."""
    principles = [p for _, p in pset.principles()]
    if names is None:
        return principles
    unknown = sorted(set(names) - {p.name for p in principles})
    if unknown:
        raise ValueError(f"judge.principles: unknown principle(s) {', '.join(map(repr, unknown))} in {pset.path}")
    return [p for p in principles if p.name in names]


def run(inputs: StageInputs, log: Log = print) -> TableResult:
    """The stage: every response pair (the first ``judge.max_pairs``) judged under each selected
    reward-model principle by the ``judge.model``, reusing the previous table's judgements whose
    key is unchanged. A pipeline judge is identified by the run that built it, so a retrained SFT
    policy never reuses the old policy's judgements."""
    from salmon_dag.engine import engine_for
    from salmon_dag.model_ref import ModelRef

    cfg = inputs.section("judge")
    pset = inputs.principles("reward_model")
    pairs = inputs.table("response_pairs").sort("pair_id")
    if cfg.max_pairs:
        pairs = pairs.head(cfg.max_pairs)
    if cfg.model in PIPELINE_JUDGES:
        ref = inputs.model(cfg.model)
        judge_id = f"{cfg.model}@{ref.lineage.get('run_id', '')}"
    else:
        ref, judge_id = ModelRef(name="judge", model_id=cfg.model), cfg.model
    principles = judged_principles(pset, cfg.principles)
    with engine_for(inputs.section("engine"), ref) as engine:
        df, counts = judge_preferences(engine, pairs, principles, judge_id, inputs.previous(), log=log,
                                       inconsistent=cfg.inconsistent, chunk_pairs=cfg.chunk_pairs,
                                       store=inputs.partial())
    log(f"synthetic_preferences: {df.height} judgements, {counts}")
    consistency = dict(df.group_by("principle").agg(pl.col("consistent").mean()).iter_rows())
    metadata = {"judged": counts["judged"], "reused_from_cache": counts["reused"],
                "resumed_from_unfinished_run": counts["resumed"],
                "consistency_rate": round(float(df["consistent"].mean() or 0), 3),
                "consistency_per_principle": {k: round(v, 3) for k, v in sorted(consistency.items())}}
    return TableResult(df, metadata, principle_hash=pset.content_hash, model_id=judge_id)


# the judge template's version counts too (the Dagster layer adds it to the code version)
STAGE = DataStage("synthetic_preferences",
                  Reads(("judge", "engine"), ("response_pairs", "principles/reward_model"), chosen=judge_reads), run)
