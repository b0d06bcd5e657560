"""One engine interface for every model call, with a transformers and a vLLM backend."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from salmon_dag.engine.config import EngineConfig
from salmon_dag.engine.base import (
    Completion,
    Engine,
    EngineError,
    PromptTooLongError,
    SamplingParams,
)

if TYPE_CHECKING:
    from salmon_dag.model_ref import ModelRef

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


def engine_for(cfg: EngineConfig, ref: ModelRef) -> Engine:
    """:func:`create_engine` for a warehouse model (its checkpoint, revision, adapter and
    remote-code setting)."""
    return create_engine(cfg, ref.model_id, ref.revision, ref.adapter_path, ref.trust_remote_code)


# prompts per engine call when a stage generates for many: a progress line after each
GENERATE_CHUNK = 64


def generate_in_chunks(engine: Engine, prompts: list[str], params: SamplingParams, what: str,
                       log: Callable[[str], None] = print, chunk: int = GENERATE_CHUNK) -> list[list[Completion]]:
    """``engine.generate`` over chunks of ``prompts``, with a progress line after each."""
    from salmon_dag.progress import progress_line

    out: list[list[Completion]] = []
    start = time.perf_counter()
    for i in range(0, len(prompts), chunk):
        out.extend(engine.generate(prompts[i : i + chunk], params))
        log(progress_line(what, len(out), len(prompts), f"prompts ({time.perf_counter() - start:.0f}s)"))
    return out


__all__ = ["BACKENDS", "Completion", "Engine", "EngineError", "GENERATE_CHUNK", "PromptTooLongError", "SamplingParams",
           "create_engine", "engine_for", "generate_in_chunks"]
