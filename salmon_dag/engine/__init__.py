"""One engine interface for every model call, with a transformers and a vLLM backend."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
    from salmon_dag.resume import ChunkStore

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
                       log: Callable[[str], None] = print, chunk: int = GENERATE_CHUNK,
                       store: ChunkStore | None = None, model: Any = None) -> list[list[Completion]]:
    """``engine.generate`` over chunks of ``prompts``, with a progress line after each.

    With a ``store`` every finished chunk is saved there and a chunk already saved is read back
    instead of generated, so a killed run resumes where it stopped. A chunk's key hashes ``model``
    (what identifies the model and engine: the caller's), the sampling parameters and the chunk's
    prompts; every chunk reseeds the sampler (``params.seed``), so a resumed run's completions are
    those of an uninterrupted one."""
    from salmon_dag.progress import progress_line

    out: list[list[Completion]] = []
    start, resumed = time.perf_counter(), 0
    for i in range(0, len(prompts), chunk):
        batch = prompts[i : i + chunk]
        key = store.key(model, dataclasses.asdict(params), batch) if store is not None else ""
        saved = store.load(key) if store is not None else None
        if saved is not None and len(saved) == len(batch):
            out.extend([_completion(c) for c in comps] for comps in saved)
            resumed += len(batch)
            continue
        made = engine.generate(batch, params)
        if store is not None:
            store.save(key, [[dataclasses.asdict(c) for c in comps] for comps in made])
        out.extend(made)
        log(progress_line(what, len(out), len(prompts), f"prompts ({time.perf_counter() - start:.0f}s)"))
    if resumed:
        log(f"{what}: {resumed} of {len(prompts)} prompts resumed from an unfinished run's saved chunks")
    return out


def _completion(data: dict) -> Completion:
    logprobs = data.get("logprobs")
    return Completion(data["text"], tuple(data["token_ids"]), data["finish_reason"],
                      None if logprobs is None else tuple(logprobs))


__all__ = ["BACKENDS", "Completion", "Engine", "EngineError", "GENERATE_CHUNK", "PromptTooLongError", "SamplingParams",
           "create_engine", "engine_for", "generate_in_chunks"]
