"""Pre-train the tiny Llama of the ``tiny`` profile on the CPU (nanoGPT-style, deterministic).

The result is an ordinary ``save_pretrained`` checkpoint, so every later stage loads it through
the same ``from_pretrained`` code paths as a real Hub model.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    get_cosine_schedule_with_warmup,
)

from salmon_dag.base_model.tokenizer import train_tokenizer
from salmon_dag.base_model.config import RandomModelConfig
from salmon_dag.config import TinyModelConfig
from salmon_dag.training.precision import use_bf16_autocast

REQUIRED_HEAD_DIM = 64  # vLLM's CPU attention kernels only support some head sizes; 64 is one.
WEIGHT_DECAY = 0.1
BETAS = (0.9, 0.95)
GRAD_CLIP = 1.0
LOG_EVERY_FRACTION = 0.1
FINAL_LOSS_WINDOW = 10


def check_head_dim(cfg: TinyModelConfig | RandomModelConfig) -> int:
    head_dim = cfg.hidden_size // cfg.num_heads
    if head_dim != REQUIRED_HEAD_DIM:
        section = "base_model.random" if isinstance(cfg, RandomModelConfig) else "base_model.tiny"
        raise ValueError(
            f"{section}: head_dim = hidden_size/num_heads = {cfg.hidden_size}/{cfg.num_heads} = {head_dim}, "
            f"must be {REQUIRED_HEAD_DIM} (vLLM's CPU attention needs it)"
        )
    return head_dim


def llama_config(cfg: TinyModelConfig | RandomModelConfig, tokenizer: PreTrainedTokenizerFast,
                 **overrides: Any) -> LlamaConfig:
    """The model shape from the profile (``base_model.tiny`` or ``.random``); vocab and special ids
    from the trained tokenizer; ``overrides``: other ``LlamaConfig`` fields."""
    head_dim = check_head_dim(cfg)
    return LlamaConfig(**{
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": head_dim,
        "max_position_embeddings": cfg.max_position_embeddings,
        "tie_word_embeddings": True,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        **overrides,
    })


def pack_blocks(tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], seq_len: int) -> tuple[torch.Tensor, int]:
    """Tokenize every doc as ``<s> doc </s>``, concatenate, cut into ``seq_len`` blocks.

    ``<s>`` is kept because inference prompts start with it (the tokenizer prepends it). Returns
    (blocks [n, seq_len], number of corpus tokens). A corpus shorter than one block is repeated.
    """
    ids = tokenizer(list(texts), add_special_tokens=True)["input_ids"]
    stream = [t for doc in ids for t in (*doc, tokenizer.eos_token_id)]
    n_tokens = len(stream)
    if n_tokens < seq_len:
        stream = stream * math.ceil(seq_len / n_tokens)
    n_blocks = len(stream) // seq_len
    blocks = torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
    return blocks, n_tokens


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def _deterministic() -> Iterator[None]:
    """Deterministic torch ops for the block, restoring the caller's settings afterwards.

    Deterministic mode also fills every new tensor with NaN by default (to expose reads of
    uninitialized memory): ~1,700 fills per step, ~10% of a pre-training step on 2 cores. No op
    here reads memory it did not write (the weights are bit-identical either way), so it is off.
    """
    prev, prev_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    prev_fill = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
        torch.utils.deterministic.fill_uninitialized_memory = prev_fill


def _optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    # nanoGPT's split: decay matrices (incl. embeddings), not norms.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=BETAS)


def save_atomically(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    """Write the checkpoint to a hidden sibling dir, then swap it in with renames.

    Readers of ``out_dir`` see the old complete checkpoint or the new one, never a partial one.
    """
    # imported here: the model-shape helpers above stay importable without the warehouse's
    # duckdb / polars / pyarrow (salmon_dag.perf.gpu on a bare GPU machine)
    from salmon_dag.warehouse import atomic_path

    with atomic_path(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)  # safetensors is the transformers default
        tokenizer.save_pretrained(tmp)


def pretrain_tiny_llama(
    cfg: TinyModelConfig,
    texts: Sequence[str],
    out_dir: Path,
    seed: int,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train tokenizer and tiny Llama on ``texts``; save both to ``out_dir`` atomically.

    Same inputs and seed give identical weights on CPU. Returns a report: n_params,
    n_train_tokens (corpus tokens), n_docs, steps, first_loss, final_loss (mean of the last 10
    steps), losses (one per step), seconds, vocab_size, and a few more shape/budget fields.
    """
    check_head_dim(cfg)  # fail before spending time on the tokenizer
    if not texts:
        raise ValueError("pretrain_tiny_llama: the corpus is empty")
    start = time.perf_counter()
    out_dir = Path(out_dir)

    with _deterministic():
        _seed_everything(seed)
        tokenizer = train_tokenizer(texts, cfg.vocab_size, model_max_length=cfg.max_position_embeddings)
        blocks, n_tokens = pack_blocks(tokenizer, texts, cfg.seq_len)
        log(
            f"pretrain: {len(texts)} docs, {n_tokens} tokens, {blocks.shape[0]} blocks of {cfg.seq_len}, "
            f"vocab {len(tokenizer)}"
        )

        _seed_everything(seed)  # the init does not depend on how much randomness the above used
        model = LlamaForCausalLM(llama_config(cfg, tokenizer))
        model.generation_config = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        n_params = sum(p.numel() for p in model.parameters())  # tied embeddings counted once
        bf16 = use_bf16_autocast(cfg.precision)
        log(f"pretrain: LlamaForCausalLM with {n_params:,} parameters, {cfg.steps} steps x batch {cfg.batch_size}, "
            f"{'bf16 autocast' if bf16 else 'float32'}")

        optimizer = _optimizer(model, cfg.learning_rate)
        schedule = get_cosine_schedule_with_warmup(optimizer, min(cfg.warmup_steps, cfg.steps), cfg.steps)
        gen = torch.Generator().manual_seed(seed)
        log_every = max(1, round(cfg.steps * LOG_EVERY_FRACTION))
        losses: list[float] = []
        model.train()
        # The last long_context_steps train on long blocks (same tokens per step), so positions
        # up to the self-align prompt's length (thousands of tokens) are seen in training.
        long_len = cfg.long_context_seq_len or cfg.max_position_embeddings
        long_from = cfg.steps - cfg.long_context_steps + 1
        n_long = blocks.numel() // long_len
        long_blocks = blocks.reshape(-1)[: n_long * long_len].view(n_long, long_len) if n_long else blocks
        long_batch = max(1, cfg.batch_size * cfg.seq_len // long_len)
        for step in range(1, cfg.steps + 1):
            pool, size = (long_blocks, long_batch) if step >= long_from else (blocks, cfg.batch_size)
            idx = torch.randint(pool.shape[0], (size,), generator=gen)
            batch = pool[idx]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if step % log_every == 0 or step == 1 or step == cfg.steps:
                elapsed = time.perf_counter() - start
                log(
                    f"pretrain: step {step}/{cfg.steps} loss {losses[-1]:.4f} "
                    f"lr {schedule.get_last_lr()[0]:.2e} ({elapsed:.0f}s)"
                )
        model.eval()

    save_atomically(model, tokenizer, out_dir)
    seconds = time.perf_counter() - start
    log(f"pretrain: saved to {out_dir} in {seconds:.1f}s total")
    tail = losses[-FINAL_LOSS_WINDOW:]
    return {
        "n_params": n_params,
        "n_train_tokens": n_tokens,
        "n_docs": len(texts),
        "n_blocks": int(blocks.shape[0]),
        "steps": cfg.steps,
        "precision": "bf16-autocast" if bf16 else "float32",
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "tokens_seen": cfg.steps * cfg.batch_size * cfg.seq_len,
        "long_context_steps": cfg.long_context_steps,
        "long_context_seq_len": long_len,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "losses": losses,
        "seconds": seconds,
        "vocab_size": len(tokenizer),
    }
