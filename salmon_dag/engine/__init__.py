"""One engine interface for every model call, with a transformers and a vLLM backend."""

from __future__ import annotations

from salmon_dag.config import EngineConfig
from salmon_dag.engine.base import (
    Completion,
    Engine,
    EngineError,
    PromptTooLongError,
    SamplingParams,
)

BACKENDS = ("hf", "vllm")


def create_engine(
    cfg: EngineConfig,
    model_id: str,
    revision: str | None = None,
    adapter_path: str | None = None,
    trust_remote_code: bool = False,
) -> Engine:
    """Load ``model_id`` (a local checkpoint dir or Hub id, plus an optional PEFT adapter) on the
    configured backend."""
    if cfg.backend == "hf":
        from salmon_dag.engine.hf_loading import load_hf_engine

        return load_hf_engine(cfg, model_id, revision, adapter_path, trust_remote_code)
    if cfg.backend == "vllm":
        from salmon_dag.engine.vllm_backend import load_vllm_engine

        return load_vllm_engine(cfg, model_id, revision, adapter_path, trust_remote_code)
    raise EngineError(f"engine.backend: unknown backend {cfg.backend!r} (expected one of {', '.join(BACKENDS)})")


__all__ = ["BACKENDS", "Completion", "Engine", "EngineError", "PromptTooLongError", "SamplingParams", "create_engine"]
