"""The reward-model stage end to end, without Dagster: data, optional PMP, principle fine-tune,
evaluation. The Dagster assets (assets_defs/reward_model.py) and a bare GPU machine call these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from pathlib import Path

import polars as pl

from salmon_dag.config import HumanPairsConfig, RewardModelConfig
from salmon_dag.reward_model.config import AGREEMENT_METRIC
from salmon_dag.model_ref import ModelRef
from salmon_dag.paths import resolve_local
from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.data import (
    ReviewPair,
    heldout_groups,
    heldout_split,
    pairs_from_examples,
    tokenize_pairs,
)
from salmon_dag.reward_model.evaluate import (
    Metric,
    heldout_metrics,
    pairwise_accuracy,
    principle_pair_probes,
    rule_probes,
)
from salmon_dag.stage import DataStage, Reads, StageInputs, TableResult

if TYPE_CHECKING:  # torch: the Dagster definitions import this module (EVAL_STAGE)
    from salmon_dag.reward_model.scoring import RewardScorer

Log = Callable[[str], None]
# The principle whose text scores human harmlessness labels, when the principle set has it.
HARMLESS = "Harmless"


@dataclass(frozen=True)
class HumanData:
    """Human pairs for PMP and for evaluation (never the same rows), and why either is empty."""

    pmp: list[ReviewPair]
    evaluation: list[ReviewPair]
    note: str = ""


def resolve_source(source: str) -> str:
    """A relative local file is read from the working directory, else from the project root
    (profiles name ``../shared/data/...`` relative to the project, and Dagster may run elsewhere)."""
    if not source.endswith((".jsonl", ".jsonl.gz")):
        return source  # a Hub dataset id
    path = resolve_local(source)
    return str(path) if path.exists() else source


def _read_human(cfg: HumanPairsConfig, log: Log):
    from salmon_dag.reward_model.hh_rlhf import read_hh_pairs

    try:
        pairs, skipped = read_hh_pairs(resolve_source(cfg.source), cfg.split, cfg.max_pairs, format=cfg.format,
                                       score_ratio_above=cfg.score_ratio_above)
    except FileNotFoundError:
        if cfg.optional:
            log(f"reward_model: human pairs {cfg.source} not found; skipped (optional)")
            return None
        raise
    if skipped:
        log(f"reward_model: {cfg.source}: skipped rows {skipped}")
    return pairs


def _as_review(pairs, group: str) -> list[ReviewPair]:
    return [ReviewPair(f"{group}:{p.row}", p.context, None, p.chosen, p.rejected) for p in pairs]


def human_data(cfg: RewardModelConfig, seed: int, log: Log = print) -> HumanData:
    """PMP pairs and evaluation pairs from ``cfg.human_eval`` / ``cfg.pmp.data`` (plus every
    ``cfg.pmp.more_data`` source's pairs for PMP). When PMP reads the same source as the evaluation
    (or none of its own), a fixed share by content hash goes to PMP and the rest to evaluation, so
    no row is used for both."""
    from salmon_dag.reward_model.hh_rlhf import disjoint_split

    ev = _read_human(cfg.human_eval, log) if cfg.human_eval else None
    pmp_cfg = cfg.pmp
    if pmp_cfg is None:
        return HumanData([], _as_review(ev or [], "hh")[: cfg.human_eval_max_pairs])
    more = [pair for i, src in enumerate(pmp_cfg.more_data)
            for pair in _as_review(_read_human(src, log) or [], f"pmp{i + 2}")]
    own = pmp_cfg.data
    shared = own is None or (cfg.human_eval is not None and (own.source, own.split) == (cfg.human_eval.source, cfg.human_eval.split))
    if shared:
        pmp_rows, eval_rows = disjoint_split(ev, pmp_cfg.share, seed) if ev else ([], [])
    else:
        pmp_rows, eval_rows = _read_human(own, log) or [], ev or []
    pmp = _as_review(pmp_rows, "pmp") + more
    return HumanData(pmp, _as_review(eval_rows, "hh")[: cfg.human_eval_max_pairs],
                     "" if pmp else "pmp skipped: no human pairs")


def heldout_examples(examples: pl.DataFrame, cfg: RewardModelConfig, seed: int) -> pl.DataFrame:
    """The held-out rows of rm_training_data (the same response pairs :func:`reward_data` holds out)."""
    held = heldout_groups(examples["pair_id"].to_list(), cfg.eval_fraction, seed)
    return examples.filter(pl.col("pair_id").is_in(sorted(held)))


def reward_data(tok, examples: pl.DataFrame, cfg: RewardModelConfig, seed: int):
    """Tokenized train / held-out pairs of ``rm_training_data``."""
    from salmon_dag.reward_model.train import RewardData

    train, held = heldout_split(pairs_from_examples(examples), cfg.eval_fraction, seed)
    return RewardData(tokenize_pairs(tok, train, cfg.max_seq_len, cfg.reviewer_layout),
                      tokenize_pairs(tok, held, cfg.max_seq_len, cfg.reviewer_layout) if held else None)


def pmp_training_config(cfg: RewardModelConfig) -> RewardModelConfig:
    """The reward model's training settings with PMP's own: learning rate, epochs, steps, and (where
    ``reward_model.pmp`` sets them) length and warm-up; saved as an adapter under LoRA."""
    pmp = cfg.pmp
    update = {"learning_rate": pmp.learning_rate, "epochs": pmp.epochs, "max_steps": pmp.max_steps,
              "save": "adapter" if cfg.lora is not None else "merged"}
    if pmp.max_seq_len is not None:
        update["max_seq_len"] = pmp.max_seq_len
    if pmp.warmup_ratio is not None:
        update["warmup_ratio"] = pmp.warmup_ratio
    return cfg.model_copy(update=update)


def train_stage(
    base: ModelRef,
    examples: pl.DataFrame,
    cfg: RewardModelConfig,
    out_dir: Path,
    seed: int,
    device: str = "auto",
    log: Log = print,
):
    """Optional PMP, then the principle fine-tune into ``out_dir``. Returns (result, pmp result)."""
    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.reward_model.train import RewardData, train_reward_model

    tok = load_tokenizer(base.model_id, base.revision, base.trust_remote_code)
    pmp_result, init_from = None, None
    if cfg.pmp is not None:
        human = human_data(cfg, seed, log)
        if human.pmp:
            pmp_cfg = pmp_training_config(cfg)
            data = RewardData(tokenize_pairs(tok, human.pmp, pmp_cfg.max_seq_len), None)
            init_from = Path(out_dir).parent / f".{Path(out_dir).name}.pmp"
            pmp_result = train_reward_model("pmp", base, data, pmp_cfg, init_from, seed, device,
                                            save=pmp_cfg.save, log=log)
        else:
            log(f"reward_model: {human.note}")
    data = reward_data(tok, examples, cfg, seed)
    result = train_reward_model("reward_model", base, data, cfg, out_dir, seed, device,
                                save=cfg.save, init_from=init_from, log=log)
    return result, pmp_result


def human_agreement_sets(cfg: RewardModelConfig, principles: Sequence[PrincipleText], seed: int,
                         log: Log = print) -> list[tuple[str, list[ReviewPair]]]:
    """The human-label agreement metrics and their pairs (``reward_model.human_eval``'s held-out
    pairs, disjoint from PMP's): under the Harmless principle when the RM has it, and principle-free.
    Empty when there are no human pairs."""
    human = human_data(cfg, seed, log).evaluation if cfg.human_eval else []
    if not human:
        return []
    harmless = next((p for p in principles if p.name == HARMLESS), None)
    sets = []
    if harmless is not None:
        sets.append((AGREEMENT_METRIC,
                     [ReviewPair(p.group, p.prompt, (harmless.definition,), p.chosen, p.rejected) for p in human]))
    sets.append((f"{AGREEMENT_METRIC}/principle_free", human))
    return sets


def evaluate(
    scorer: RewardScorer,
    examples: pl.DataFrame,
    pairs: pl.DataFrame,
    principles: Sequence[PrincipleText],
    cfg: RewardModelConfig,
    seed: int,
    log: Log = print,
) -> list[Metric]:
    """Every ``reward_model_eval`` metric (see salmon_dag.reward_model.evaluate) on held-out data."""
    held = heldout_examples(examples, cfg, seed)
    held_pairs = pairs.filter(pl.col("pair_id").is_in(held["pair_id"].unique().to_list()))
    metrics = []
    if held.height:
        metrics += heldout_metrics(scorer, held, principles)
    metrics += rule_probes(scorer, held_pairs, principles)
    if cfg.principle_pairs:
        metrics += principle_pair_probes(scorer, cfg.principle_pairs, principles)
    for metric, human in human_agreement_sets(cfg, principles, seed, log):
        acc = pairwise_accuracy(scorer, human)
        metrics.append(Metric(metric, acc.value, acc.n))
    for m in metrics:
        log(f"reward_model_eval: {m.metric} = {m.value:.3f} (n={m.n})")
    return metrics


# scores memoized by reward_model_eval (a few MB): more than any evaluation asks for
EVAL_MEMO = 200_000


def run_eval(inputs: StageInputs, log: Callable[[str], None] = print) -> TableResult:
    """The ``reward_model_eval`` stage: :func:`evaluate` of the warehouse's reward model on its
    held-out examples, the rule probes on the pairs and the configured human pairs."""
    from salmon_dag.principles import principle_texts
    from salmon_dag.reward_model.checkpoint import checkpoint_dir, load_scorer
    from salmon_dag.reward_model.evaluate import metrics_frame

    cfg = inputs.section("reward_model")
    pset, ref = inputs.principles("reward_model"), inputs.model("reward_model")
    checkpoint = checkpoint_dir(ref)
    # the held-out examples and the probes repeat reviewer prompts: score each once
    scorer = load_scorer(checkpoint, batch_size=cfg.eval_batch_size, cache_size=EVAL_MEMO)
    metrics = evaluate(scorer, inputs.table("rm_training_data"), inputs.table("response_pairs"), principle_texts(pset),
                       cfg, inputs.seed, log=log)
    return TableResult(metrics_frame(metrics), {m.metric: round(float(m.value), 4) for m in metrics},
                       principle_hash=pset.content_hash, model_id=str(checkpoint))


# the training stage's sections: it scores with the trained model on that device
EVAL_STAGE = DataStage("reward_model_eval", Reads(("reward_model", "engine.device"),
                                                  ("reward_model", "rm_training_data", "response_pairs",
                                                   "principles/reward_model")), run_eval)
