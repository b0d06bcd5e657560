"""The engine's section of a profile (``engine``): backend, device, precision and batching of every
model call (one engine interface for generation, judging and scoring)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from salmon_dag.config_base import _Strict

DType = Literal["auto", "float32", "bfloat16", "float16"]


class EngineConfig(_Strict):
    backend: Literal["hf", "vllm"] = "hf"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: DType = "auto"
    max_batch_size: int = Field(default=16, gt=0)
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)
    # vLLM: GPUs one model replica is split over (tensor parallel)
    tensor_parallel_size: int = Field(default=1, gt=0)
    # vLLM: model replicas that share the prompts of a call (data parallel); each replica uses
    # tensor_parallel_size GPUs, so a call uses tensor_parallel_size x data_parallel_size
    data_parallel_size: int = Field(default=1, gt=0)
    # Context window; None = the model's max_position_embeddings.
    max_context: int | None = Field(default=None, gt=0)
    # Prompts longer than the context: "error" (default) or "left" (keep the last tokens).
    truncation: Literal["error", "left"] = "error"
    # torch CPU threads for inference; None = torch's default. Small models decode faster on 1.
    cpu_threads: int | None = Field(default=None, gt=0)
    # vLLM: skip graph compilation (faster start, a little slower decoding); on by default on CPU.
    enforce_eager: bool | None = None
