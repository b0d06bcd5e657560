"""The base-model stage: the tiny Llama pre-trained here, or a configured checkpoint validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from salmon_dag.stage import DataStage, Log, Reads, StageInputs


@dataclass(frozen=True)
class BaseModel:
    """What the stage made: the model to load, its scalars and (pre-trained here) its loss curve."""

    model_id: str
    revision: str | None = None
    trust_remote_code: bool = False
    info: dict = field(default_factory=dict)
    losses: list[tuple[int, float]] = field(default_factory=list)


def run(inputs: StageInputs, out_dir: Path, log: Log = print) -> BaseModel:
    """``base_model.kind: tiny``: pre-train on the bundled corpus into ``out_dir``; ``random``: build
    a random-weight model of a real one's shape there; otherwise check that the configured
    checkpoint loads (nothing is copied)."""
    cfg = inputs.section("base_model")
    if cfg.kind == "tiny":
        from salmon_dag.base_model.corpus import build_corpus
        from salmon_dag.base_model.pretrain import pretrain_tiny_llama

        report = pretrain_tiny_llama(cfg.tiny, build_corpus(cfg.tiny.shared_data_dir), out_dir, seed=inputs.seed, log=log)
        losses = [(i + 1, loss) for i, loss in enumerate(report.pop("losses"))]
        info = {k: v for k, v in report.items() if isinstance(v, (int, float, str))}
        return BaseModel(str(out_dir), info=info, losses=losses)
    if cfg.kind == "random":
        from salmon_dag.base_model.corpus import build_corpus
        from salmon_dag.base_model.random_model import build_random_llama

        info = build_random_llama(cfg.random, build_corpus(None), out_dir, seed=inputs.seed)
        log(f"base_model: random {cfg.random.like}-shaped Llama, {info['n_params']:,} parameters")
        return BaseModel(str(out_dir), info=info)
    from salmon_dag.base_model.loading import validate_pretrained

    info = validate_pretrained(cfg.model_id, cfg.revision, cfg.trust_remote_code)
    return BaseModel(cfg.model_id, cfg.revision, cfg.trust_remote_code, info)


# the base_model section only (and, for the tiny model, the corpus files' content)
STAGE = DataStage("base_model", Reads(("base_model",)), run)
