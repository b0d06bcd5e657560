"""The tiny profile's claims, read back from a materialized warehouse: each as one row (value,
threshold, direction, passed, detail). ``salmon bench seeds`` (``study.py``) collects them per
seed; the thresholds are the README's and issue 20's.

Plain Python: no dagster import here (the failed asset checks are passed in).
"""

from __future__ import annotations

import math
import operator
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from salmon_dag.benchmarks.report import PAR, headline
from salmon_dag.config import Profile
from salmon_dag.warehouse import Warehouse

PROBE_THRESHOLD = 0.85
RL_POLICY = "ppo_policy"
STEER_DIRECTIONS = ("Concise", "Complete and Thorough")
STEER_EMPTY_MAX = 0.5
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}

Claim = dict[str, Any]  # keys: claim, value, threshold, direction, passed, detail
Log = Callable[[str], None]


def claim(name: str, value: float | None, threshold: float | None = None, direction: str | None = None,
          detail: str = "") -> Claim:
    """One claim row; ``passed`` is ``value <direction> threshold``, None when informational
    (no threshold) or when there is no value."""
    if value is not None and math.isnan(value):
        value = None
    passed = None if threshold is None or value is None else OPERATORS[direction](value, threshold)
    return {"claim": name, "value": value, "threshold": threshold, "direction": direction, "passed": passed,
            "detail": detail}


def probe_claims(eval_table: pl.DataFrame) -> list[Claim]:
    """The reward model's verifiable probes (``probe/<principle>/principle|negation``) against
    PROBE_THRESHOLD, and its held-out accuracy and negation flip rate as information."""
    rows = [claim(f"rm/{r['metric']}", r["value"], PROBE_THRESHOLD, ">=", f"n={r['n']}")
            for r in eval_table.sort("metric").iter_rows(named=True) if r["metric"].startswith("probe/")]
    # the same probes on hand-written pairs (not the policy's own samples): information
    rows += [claim(f"rm/{r['metric']}", r["value"], detail=f"n={r['n']}")
             for r in eval_table.sort("metric").iter_rows(named=True) if r["metric"].startswith("pairs/")]
    for metric in ("heldout_accuracy", "negation_flip_rate"):
        hit = eval_table.filter(pl.col("metric") == metric)
        if hit.height:
            rows.append(claim(f"rm/{metric}", hit["value"][0], detail=f"n={hit['n'][0]}"))
    return rows


def rm_bench_claims(bench_table: pl.DataFrame) -> list[Claim]:
    """``rm_benchmarks``' accuracies of the reward model (not of compared models), per file and
    subset: information."""
    from salmon_dag.reward_model.bench import OURS

    return [claim(f"rm/bench/{r['file']}/{r['subset']}", r["accuracy"], detail=f"n={r['n']}")
            for r in bench_table.filter(pl.col("model") == OURS).iter_rows(named=True)]


def rl_claims(ppo_steps: pl.DataFrame) -> list[Claim]:
    """RL's mean RM score in the first and last quarter of the rollout steps, and its rise (> 0)."""
    from salmon_dag.rl.stage import rise  # here: the RL stage imports torch, the other claims need none

    scores = ppo_steps.filter(pl.col("metric") == "objective/rm_score").sort("step")["value"].to_list()
    first, last = rise(scores)
    detail = f"{len(scores)} steps"
    return [claim("rl/rm_score_first_quarter", first, detail=detail),
            claim("rl/rm_score_last_quarter", last, detail=detail),
            claim("rl/rm_score_rise", last - first, 0.0, ">", detail)]


def benchmark_claims(scores: pl.DataFrame, reference: str) -> list[Claim]:
    """Per benchmark the RL policy ran: its headline metric minus the reference policy's (for the
    win rate, which is against the reference already, minus PAR); passes when not below, as the
    ``rl_not_below_sft`` asset check (benchmarks.report.below_reference) judges it."""
    rows = []
    for bench in scores.filter(pl.col("policy") == RL_POLICY)["benchmark"].unique(maintain_order=True).to_list():
        lines = headline(scores, bench)
        mine = lines.filter(pl.col("policy") == RL_POLICY)["value"].to_list()
        theirs = [PAR[bench]] if bench in PAR else lines.filter(pl.col("policy") == reference)["value"].to_list()
        metric = lines["metric"][0] if lines.height else "no headline metric"
        if not (mine and theirs) or mine[0] is None or theirs[0] is None:
            rows.append(claim(f"bench/{bench}/rl_not_below_sft", None, detail=f"{metric}: no value"))
            continue
        against = "par" if bench in PAR else reference
        rows.append(claim(f"bench/{bench}/rl_not_below_sft", mine[0] - theirs[0], 0.0, ">=",
                          f"{metric}: rl {mine[0]:.3f} vs {against} {theirs[0]:.3f}"))
    return rows


def check_claims(failed_checks: Sequence[str]) -> list[Claim]:
    """The number of asset checks whose latest evaluation failed (``asset:check`` in the detail)."""
    return [claim("checks/failed", float(len(failed_checks)), 0.0, "<=", ", ".join(failed_checks))]


def steer_claims(means: dict[str, float]) -> list[Claim]:
    """``salmon bench steer``'s result: the two steered policies on either side of the SFT policy's
    mean response length, each mean as information, and (where measured) the empty-answer shares
    and stop rates (information)."""
    concise, thorough = STEER_DIRECTIONS
    ordered = means[concise] < means["sft"] < means[thorough]
    rows = [claim("steer/order", 1.0 if ordered else 0.0, 1.0, ">=",
                  f"{concise} {means[concise]:.2f} < sft {means['sft']:.2f} < {thorough} {means[thorough]:.2f}")]
    rows += [claim(f"steer/{name}/mean_tokens", value) for name, value in means.items() if "/" not in name]
    for name, value in means.items():
        if name.endswith("/near_empty_share"):
            bound = (STEER_EMPTY_MAX, "<") if name == f"{concise}/near_empty_share" else (None, None)
            rows.append(claim(f"steer/{name}", value, *bound))
        elif name.endswith("/stop_rate"):
            rows.append(claim(f"steer/{name}", value))
    return rows


def warehouse_claims(warehouse: Warehouse, reference: str, failed_checks: Sequence[str]) -> list[Claim]:
    """Claims 1-4 of a seed: reward-model probes, RL's rise, benchmarks, failed asset checks."""
    bench = warehouse.read_table("rm_benchmarks") if warehouse.table_path("rm_benchmarks").is_file() else None
    return [*probe_claims(warehouse.read_table("reward_model_eval")),
            *(rm_bench_claims(bench) if bench is not None else []),
            *rl_claims(warehouse.read_table("ppo_steps")),
            *benchmark_claims(warehouse.read_table("benchmark_scores"), reference),
            *check_claims(failed_checks)]


def steer_means(warehouse: Warehouse, principles_dir: Path, profile: Profile, log: Log) -> dict[str, float]:
    """``salmon bench steer`` on ``warehouse``: two policies trained from its SFT model against its
    RM under the Concise and the Complete and Thorough principles; the mean response tokens of the
    SFT policy and of both (raises WarehouseError / PrincipleError when an input is missing)."""
    from salmon_dag.model_ref import read_model_ref
    from salmon_dag.principles import load_principles
    from salmon_dag.reward_model.checkpoint import warehouse_checkpoint
    from salmon_dag.rl.steer import bench_steer

    sft, checkpoint = read_model_ref(warehouse, "sft_model"), warehouse_checkpoint(warehouse)
    pool = warehouse.read_table("prompt_pool").sort("prompt_id")
    rm_pset, rl_pset = load_principles(principles_dir, "reward_model"), load_principles(principles_dir, "rl")
    with tempfile.TemporaryDirectory(prefix="salmon-steer-") as tmp:
        return bench_steer(sft, checkpoint, rm_pset, rl_pset, pool.filter(pl.col("split") == "train"),
                           pool.filter(pl.col("split") == "eval"), profile, tmp, STEER_DIRECTIONS, log=log)
