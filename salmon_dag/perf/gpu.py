"""GPU benchmark of the salmon_dag stages at a real model's shape, with random weights.

``python -m salmon_dag.perf.gpu --shape llama2-7b --device cuda --out results.json`` builds a
random Llama-2-7B in bf16 (nothing downloaded: throughput does not depend on what the weights
learned) and measures judge judgements/s (naive vs prefix-shared), hf-engine generation tokens/s,
and tokens/s with MFU of one SFT, reward-model and PPO training step, each with its peak memory.
``--shape tiny --device cpu`` runs the same code at the tiny profile's shape.

Imports torch, transformers (+ tokenizers), peft, numpy, pydantic and pyyaml (salmon_dag.config,
via the engine package), and polars for the PPO section only (salmon_dag.rl); never dagster, trl,
vllm, duckdb or pyarrow (salmon_dag.perf.inference, which reads principles with polars, is not imported).

MFU counts model FLOPs (no gradient-checkpointing recompute) per trained token:
``sum over Linear weights of (4 if frozen else 6) * numel + 6 * layers * seq_len * hidden``: a
frozen (LoRA base) weight costs a forward and an input-gradient matmul, a trained one also its
weight gradient; the last term is causal attention (half the s x s scores, forward + 2x backward).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import platform
import random
import resource
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from salmon_dag.paths import BUNDLED_PRINCIPLES_DIR

# bf16 dense peak of one H200 (= H100 SXM; the 1979 TFLOP/s of the data sheet assume 2:4 sparsity)
H200_BF16_PEAK_TFLOPS = 989.0
# Llama-2-7B's config.json, the tokenizer-dependent ids aside
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, tie_word_embeddings=False)
FIRST_PLAIN_ID = 4  # ids 0..3 are the trained tokenizer's <s> </s> <pad> <unk>


@dataclass(frozen=True)
class Sizes:
    """How much work each section does (GPU defaults follow the llama2-7b profile's batch of 4)."""

    judge_pairs: int = 16
    principle_counts: tuple[int, ...] = (1, 8)
    gen_batches: tuple[int, ...] = (1, 32)
    gen_new_tokens: int = 128
    engine_batch: int = 32
    train_batch: int = 4  # sequences per SFT / PPO step, pairs per RM step
    sft_len: int = 512
    rm_len: int = 512
    ppo_prompt_len: int = 128
    ppo_response_len: int = 384
    warmup: int = 2
    steps: int = 5  # timed training steps
    repeats: int = 2  # timed judge / generation runs


SIZES = {
    "llama2-7b": Sizes(),
    "tiny": Sizes(judge_pairs=8, gen_batches=(1, 8), gen_new_tokens=32, engine_batch=16, sft_len=256, rm_len=256,
                   ppo_prompt_len=64, ppo_response_len=192, warmup=1, steps=3),
}
PROFILES = {"llama2-7b": "llama2-7b-qlora", "tiny": "tiny"}  # LoRA settings come from these


@dataclass
class Row:
    section: str
    case: str
    value: float
    unit: str
    mfu: float | None = None
    peak_mem_gib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- plumbing
def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # every CUDA device too


def _timed(fn: Callable[[], Any], dev: torch.device, warmup: int, repeats: int) -> tuple[float, Any]:
    """Mean seconds per call over ``repeats`` calls after ``warmup`` untimed ones (kernels, caches);
    CUDA work is synchronised at both ends, since kernels run asynchronously."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
    for _ in range(warmup):
        fn()
    sync()
    start, out = time.perf_counter(), None
    for _ in range(repeats):
        out = fn()
    sync()
    return (time.perf_counter() - start) / repeats, out


def _reset_peak(dev: torch.device) -> None:
    gc.collect()  # the previous section's models go before the next one measures
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_gib(dev: torch.device) -> float:
    """CUDA: peak allocated since the reset. CPU: the process's peak RSS so far (no reset exists)."""
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def build(cls: Any, config: Any, dev: torch.device, dtype: torch.dtype, seed: int) -> nn.Module:
    """A random ``cls(config)`` created on ``dev`` in ``dtype`` (7B: no float32 copy on the host)."""
    seed_all(seed)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(dev):
            return cls(config).eval()
    finally:
        torch.set_default_dtype(prev)


def llama_config(shape: str, tok: Any) -> Any:
    """Llama-2-7B's shape, or the tiny profile's (as the pipeline builds it)."""
    from transformers import LlamaConfig

    from salmon_dag.base_model.pretrain import llama_config as tiny_config
    from salmon_dag.config import load_profile

    if shape == "llama2-7b":  # the tokenizer's ids are < 32000: any id costs the same
        return LlamaConfig(**LLAMA2_7B, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
    return tiny_config(load_profile("tiny").base_model.tiny, tok)


def tokenizer() -> Any:
    """The tiny profile's tokenizer, trained here on the bundled corpus (seconds, deterministic)."""
    from salmon_dag.base_model.corpus import build_corpus
    from salmon_dag.base_model.tokenizer import train_tokenizer
    from salmon_dag.config import load_profile

    t = load_profile("tiny").base_model.tiny
    return train_tokenizer(build_corpus(None), t.vocab_size, model_max_length=t.max_position_embeddings)


def _principles() -> list[tuple[str, str]]:
    """(name, definition) of the reward-model principles (read as YAML: salmon_dag.principles needs polars)."""
    import yaml

    data = yaml.safe_load((BUNDLED_PRINCIPLES_DIR / "reward_model.yaml").read_text())
    return [(p["name"], p["definition"]) for p in data["principles"]]


# --------------------------------------------------------------------------- inference
def bench_inference(model: nn.Module, tok: Any, dev: torch.device, s: Sizes, log: Callable[[str], None]) -> list[Row]:
    from salmon_dag.base_model.corpus import bundled_dialogues
    from salmon_dag.engine.base import SamplingParams
    from salmon_dag.engine.hf import HFEngine
    from salmon_dag.judge import JudgeItem, judge_scores
    from salmon_dag.templates import format_chat_prompt

    engine = HFEngine(model_id="random-llama", model=model, tokenizer=tok, max_batch_size=s.engine_batch,
                      max_context=model.config.max_position_embeddings)
    dialogues, principles, rows = bundled_dialogues(), _principles(), []
    items = [JudgeItem(dialogues[i][0], dialogues[i][1], dialogues[i + s.judge_pairs][1])  # as salmon_dag.perf.inference
             for i in range(s.judge_pairs)]
    for p in s.principle_counts:  # principles cycle when P exceeds the 18 of reward_model.yaml
        chosen = [principles[k % len(principles)] for k in range(p)]
        verdicts = s.judge_pairs * p * 2  # one per (pair, principle, order)
        timing = {}
        for shared in (False, True):
            _reset_peak(dev)
            sec, scores = _timed(lambda: judge_scores(engine, items, chosen, shared_prefix=shared), dev, 1, s.repeats)
            timing[shared] = (sec, scores, _peak_gib(dev))
        diff = float(np.abs(timing[False][1] - timing[True][1]).max())
        for shared, (sec, _, peak) in timing.items():
            extra = {"pairs": s.judge_pairs, "principles": p, "seconds": sec}
            if shared:
                extra |= {"speedup": timing[False][0] / sec, "max_abs_dscore": diff}
            rows.append(Row("judge", f"P={p} {'prefix-shared' if shared else 'naive'}", verdicts / sec,
                            "judgements/s", peak_mem_gib=peak, extra=extra))
        log(f"judge P={p}: naive {timing[False][0]:.3f} s, shared {timing[True][0]:.3f} s, max|dscore| {diff:.2e}")
    params = SamplingParams(max_new_tokens=s.gen_new_tokens, temperature=0.0, stop=())
    for b in s.gen_batches:
        texts = [format_chat_prompt(u) for u, _ in dialogues[:b]]
        _reset_peak(dev)
        sec, out = _timed(lambda: engine.generate(texts, params), dev, 1, s.repeats)
        tokens = sum(len(c[0].token_ids) for c in out)  # a random model may stop early at EOS
        rows.append(Row("generate", f"batch {b}", tokens / sec, "tokens/s", peak_mem_gib=_peak_gib(dev),
                        extra={"batch": b, "new_tokens": tokens, "max_new_tokens": s.gen_new_tokens, "seconds": sec}))
        log(f"generate batch {b}: {tokens} tokens in {sec:.2f} s")
    return rows


# --------------------------------------------------------------------------- training
def train_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Model FLOPs per trained token (module docstring): Linear weights by whether they train,
    plus causal attention."""
    seen, total = set(), 0.0
    for m in model.modules():
        if isinstance(m, nn.Linear) and id(m.weight) not in seen:  # a tied lm_head counts once
            seen.add(id(m.weight))
            total += (6 if m.weight.requires_grad else 4) * m.weight.numel()
    cfg = next(x.config for x in model.modules() if hasattr(x, "config")).get_text_config()
    return total + 6 * cfg.num_hidden_layers * seq_len * cfg.hidden_size


@dataclass
class Trainer:
    """What the three training sections share: shape, device, sizes, and one timed step loop."""

    config: Any
    tok: Any
    dev: torch.device
    dtype: torch.dtype
    s: Sizes
    peak_flops: float | None
    seed: int

    def __post_init__(self) -> None:
        self.gen = torch.Generator().manual_seed(self.seed)

    def ids(self, rows: int, length: int) -> torch.Tensor:
        """Random plain tokens (no pad id inside a row, so every row is full length)."""
        return torch.randint(FIRST_PLAIN_ID, len(self.tok), (rows, length), generator=self.gen).to(self.dev)

    def model(self, cls: Any, config: Any, lora: Any, task_type: str, seed_offset: int = 0,
              modules_to_save: list[str] | None = None) -> nn.Module:
        """As the stages train: weights typed as training/lora.py load_for_training does (frozen
        bf16 base under LoRA on CUDA, float32 otherwise), gradient checkpointing on CUDA
        (training/harness.py), then the profile's LoRA, or full fine-tuning when it has none."""
        on_gpu = self.dev.type == "cuda"
        dtype = self.dtype if on_gpu and lora is not None else torch.float32
        model = build(cls, config, self.dev, dtype, self.seed + seed_offset)
        if on_gpu:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if lora is not None:
            import peft

            from salmon_dag.training.lora import peft_config

            model = peft.get_peft_model(model, peft_config(lora, task_type=task_type, modules_to_save=modules_to_save))
        return model.train()

    def row(self, case: str, models: Sequence[nn.Module], loss_fn: Callable[[], torch.Tensor], rows: int,
            seq_len: int, lr: float) -> Row:
        """Time whole optimizer steps of ``loss_fn`` (forward, backward, clip, AdamW), bf16 autocast on
        CUDA as the trainers run it; tokens/s counts ``rows x seq_len`` per step."""
        params = [p for m in models for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr)
        on_gpu = self.dev.type == "cuda"

        def step() -> None:
            with torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else nullcontext():
                loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)

        _reset_peak(self.dev)
        sec, _ = _timed(step, self.dev, self.s.warmup, self.s.steps)
        flops = sum(train_flops_per_token(m, seq_len) for m in models)
        rate = rows * seq_len / sec
        return Row("train", case, rate, "tokens/s", rate * flops / self.peak_flops if self.peak_flops else None,
                   _peak_gib(self.dev), {"tokens_per_step": rows * seq_len, "seconds_per_step": sec,
                                         "flops_per_token": flops, "trainable_params": sum(p.numel() for p in params)})


def _mode(lora: Any) -> str:
    return f"LoRA r={lora.r}" if lora is not None else "full"


def bench_sft(t: Trainer, lora: Any, lr: float) -> Row:
    """Causal-LM loss on every token (TRL's SFTTrainer masks the prompt's labels: same FLOPs)."""
    from transformers import LlamaForCausalLM

    model = t.model(LlamaForCausalLM, t.config, lora, "CAUSAL_LM")
    x = t.ids(t.s.train_batch, t.s.sft_len)
    return t.row(f"SFT {t.s.train_batch}x{t.s.sft_len}, {_mode(lora)}", [model],
                 lambda: model(input_ids=x, labels=x).loss, t.s.train_batch, t.s.sft_len, lr)


def bench_rm(t: Trainer, lora: Any, lr: float, center: float | None) -> Row:
    """A scalar-head model scores chosen and rejected rows in one batch; Bradley-Terry loss plus
    the optional centring term, as TRL's RewardTrainer computes them (reward_model/train.py)."""
    from transformers import LlamaForSequenceClassification

    config = copy.deepcopy(t.config)
    config.num_labels = 1
    model = t.model(LlamaForSequenceClassification, config, lora, "SEQ_CLS", modules_to_save=["score"])
    b = t.s.train_batch
    pairs = t.ids(2 * b, t.s.rm_len)

    def loss() -> torch.Tensor:
        chosen, rejected = model(input_ids=pairs).logits.float().squeeze(-1).chunk(2)
        bt = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
        return bt + center * ((chosen + rejected) ** 2).mean() if center else bt

    return t.row(f"RM {b} pairs x{t.s.rm_len}, {_mode(lora)}", [model], loss, 2 * b, t.s.rm_len, lr)


def bench_ppo(t: Trainer, lora: Any, ppo: Any) -> Row:
    """One micro-batch of PPOTrainer.update: ActorCritic forward, rl/losses.py's clipped policy and
    value losses, backward, clip, AdamW, on a synthetic experience packed by rl/experience.py (the
    trainer itself would also need a reward model, prompts and a generator; a step's training cost
    is this)."""
    from transformers import LlamaForCausalLM, LlamaModel

    from salmon_dag.rl import losses
    from salmon_dag.rl.experience import pack, token_logprobs
    from salmon_dag.rl.models import ValueModel
    from salmon_dag.rl.ppo import ActorCritic

    policy = t.model(LlamaForCausalLM, t.config, lora, "CAUSAL_LM")
    body = t.model(LlamaModel, t.config, lora, "FEATURE_EXTRACTION", seed_offset=1)
    value = ValueModel(body, t.config.hidden_size).to(t.dev).train()  # float32 head, as load_value_model
    actor_critic = ActorCritic(policy, value)
    b, length = t.s.train_batch, t.s.ppo_prompt_len + t.s.ppo_response_len
    batch = pack(t.ids(b, t.s.ppo_prompt_len).tolist(), t.ids(b, t.s.ppo_response_len).tolist(),
                 t.tok.pad_token_id, t.dev)
    mask = batch.action_mask.float()
    with torch.no_grad():  # old log-probs of the current policy: ratios near 1, as in the first epoch
        old_logprobs = token_logprobs(policy, batch, ppo.temperature)[0]
    advantages, returns, old_values = torch.randn_like(mask) * mask, torch.randn_like(mask) * mask, mask * 0

    def loss() -> torch.Tensor:
        logprobs, _, values = actor_critic(batch, ppo.temperature)
        pg = losses.policy_loss(logprobs, old_logprobs, advantages, mask, ppo.clip_range)
        vf = losses.value_loss(values, old_values, returns, mask, ppo.value_clip_range)
        return pg.loss + ppo.vf_coef * vf.loss

    return t.row(f"PPO {b}x{length} policy+value, {_mode(lora)}", [policy, value], loss, b, length,
                 ppo.learning_rate)


def bench_training(t: Trainer, shape: str, log: Callable[[str], None], skipped: list[str]) -> list[Row]:
    """SFT, RM and PPO steps with the LoRA settings of the shape's profile, one model at a time."""
    from salmon_dag.config import load_profile

    p = load_profile(PROFILES[shape])
    # bf16 LoRA: the 7B profile's QLoRA needs bitsandbytes, which the GPU machine may lack
    lora = {k: getattr(p, k).lora and getattr(p, k).lora.model_copy(update={"quantization": "none"})
            for k in ("sft", "reward_model", "ppo")}
    rows = [bench_sft(t, lora["sft"], p.sft.learning_rate)]
    log(f"train SFT: {rows[-1].value:.0f} tokens/s")
    rows.append(bench_rm(t, lora["reward_model"], p.reward_model.learning_rate,
                         p.reward_model.center_rewards_coefficient))
    log(f"train RM: {rows[-1].value:.0f} tokens/s")
    try:
        rows.append(bench_ppo(t, lora["ppo"], p.ppo))
        log(f"train PPO: {rows[-1].value:.0f} tokens/s")
    except ModuleNotFoundError as exc:  # salmon_dag.rl needs polars; the other sections do not
        skipped.append(f"PPO: {exc}")
        log(f"train PPO: skipped ({exc})")
    return rows


# --------------------------------------------------------------------------- entry points
def run_bench(shape: str = "tiny", device: str = "cpu", sizes: Sizes | None = None, peak_tflops: float | None = None,
              seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every section on one randomly initialised model shape; returns {"meta": ..., "rows": [...]}."""
    import peft
    import transformers
    from transformers import LlamaForCausalLM

    if shape not in SIZES:
        raise ValueError(f"unknown shape {shape!r} ({', '.join(SIZES)})")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda requested but no CUDA GPU is available")
    s = sizes or SIZES[shape]
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if peak_tflops is None and dev.type == "cuda":
        peak_tflops = H200_BF16_PEAK_TFLOPS
    tok = tokenizer()
    config = llama_config(shape, tok)
    model = build(LlamaForCausalLM, config, dev, dtype, seed)
    n_params = sum(p.numel() for p in model.parameters())
    on_gpu = dev.type == "cuda"
    meta = {"shape": shape, "device": torch.cuda.get_device_name(dev) if on_gpu else platform.machine(),
            "dtype": str(dtype).removeprefix("torch."), "params": n_params, "peak_tflops": peak_tflops,
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "cpu_threads": torch.get_num_threads(), "seed": seed, "sizes": asdict(s), "skipped": [],
            "memory": "max_memory_allocated per row" if on_gpu else "process peak RSS so far (no per-row reset)"}
    log(f"gpu_bench: {shape} ({n_params / 1e9:.3f}B params, {meta['dtype']}) on {meta['device']}")
    rows = bench_inference(model, tok, dev, s, log)
    del model
    trainer = Trainer(config, tok, dev, dtype, s, peak_tflops * 1e12 if peak_tflops else None, seed)
    rows += bench_training(trainer, shape, log, meta["skipped"])
    return {"meta": meta, "rows": [asdict(r) for r in rows]}


def markdown(result: dict[str, Any]) -> str:
    m = result["meta"]
    lines = [f"{m['shape']} ({m['params'] / 1e9:.3f}B params, random weights, {m['dtype']}) on {m['device']}, "
             f"torch {m['torch']}, transformers {m['transformers']}, peak {m['peak_tflops'] or 'n/a'} TFLOP/s",
             "", "| section | case | throughput | MFU | peak mem (GiB) | notes |", "|---|---|---:|---:|---:|---|"]
    for r in result["rows"]:
        e = r["extra"]
        note = (f"{e['speedup']:.2f}x naive, max abs dscore {e['max_abs_dscore']:.1e}" if "speedup" in e
                else f"{e['new_tokens']} tokens, {e['seconds']:.2f} s" if "new_tokens" in e
                else f"{e['seconds_per_step']:.3f} s/step, {e['flops_per_token'] / 1e9:.2f} GFLOP/token"
                if "flops_per_token" in e else f"{e['seconds']:.3f} s")
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
        mem = f"{r['peak_mem_gib']:.2f}" if r["peak_mem_gib"] is not None else "n/a"
        lines.append(f"| {r['section']} | {r['case']} | {r['value']:,.1f} {r['unit']} | {mfu} | {mem} | {note} |")
    lines += [f"\nskipped: {x}" for x in m.get("skipped", [])]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m salmon_dag.perf.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SIZES), default="llama2-7b")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON results (default gpu_bench-SHAPE-DEVICE.json)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"peak for MFU in TFLOP/s (CUDA default: H200 bf16 dense, {H200_BF16_PEAK_TFLOPS:g})")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_bench(args.shape, args.device, peak_tflops=args.peak_tflops, seed=args.seed)
    out = args.out or Path(f"gpu_bench-{args.shape}-{args.device}.json")
    out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(markdown(result))
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
