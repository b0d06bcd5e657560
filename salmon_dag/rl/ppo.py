"""Our PPO loop against the instructable reward model, readable top to bottom.

One rollout step: take the step's prompts -> sample responses from the current policy (through the
engine) -> SALMON reward per sample (sampled principles, RM score, length bonus, stop penalty) ->
experience (old / reference log-probs, values, KL-penalised per-token rewards, GAE) -> ``ppo_epochs``
passes of clipped policy + value updates over shuffled micro-batches -> metrics, samples, and a
checkpoint every ``save_every`` steps. The arithmetic is in :mod:`salmon_dag.rl.losses`, the tensors
in :mod:`salmon_dag.rl.experience`, the three models in :mod:`salmon_dag.rl.models`.

Which prompts a step uses is a function of (seed, step) alone, and so are its sampling seed, its
principle draws and its shuffles: a run resumed from a checkpoint (saved at any step, an epoch's
last one included) continues exactly where it stopped. ``accelerate`` runs the same loop on N
processes, each with its share of every rollout batch.

Plain Python: no dagster import here.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch
from torch import nn

from salmon_dag.config import PPOConfig
from salmon_dag.engine.base import SamplingParams
from salmon_dag.rl import losses
from salmon_dag.rl.experience import Experience, make_experience, pack, state_values, token_logprobs
from salmon_dag.rl.models import Policy, ValueModel
from salmon_dag.rl.records import STEP_TIME, keeps_samples, reward_metrics, sample_row
from salmon_dag.rl.reward import SalmonReward
from salmon_dag.templates import format_chat_prompt

@dataclass(frozen=True)
class RLPrompt:
    prompt_id: str
    instruction: str
    question_type: str
    ids: tuple[int, ...]  # the policy prompt (chat format, the instruction included), encoded


def policy_prompts(prompts: pl.DataFrame, tokenizer, max_prompt_tokens: int) -> tuple[list[RLPrompt], int]:
    """Encode a prompt table (``prompt`` = the bare instruction, ``question_type``, optional
    ``prompt_id``, else the row number) as policy prompts; rows whose prompt exceeds
    ``max_prompt_tokens`` are dropped (SALMON drops them too). Returns (kept, dropped)."""
    missing = {"prompt", "question_type"} - set(prompts.columns)
    if missing:
        raise ValueError(f"rl prompts: missing columns {sorted(missing)}")
    ids_col = prompts["prompt_id"].cast(pl.Utf8) if "prompt_id" in prompts.columns else range(prompts.height)
    kept, dropped = [], 0
    for pid, instruction, qtype in zip(ids_col, prompts["prompt"], prompts["question_type"]):
        ids = tokenizer(format_chat_prompt(instruction), add_special_tokens=True)["input_ids"]
        if len(ids) > max_prompt_tokens:
            dropped += 1
            continue
        kept.append(RLPrompt(str(pid), instruction, qtype, tuple(ids)))
    return kept, dropped


def prompts_for_step(step: int, n_prompts: int, per_process: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Indices of the prompts of rollout ``step`` on process ``rank``: consecutive slices of a
    concatenation of per-epoch permutations (seeded by (seed, epoch)), so a batch may straddle two
    epochs and every step's prompts follow from the step number alone."""
    start = (step * world + rank) * per_process
    orders: dict[int, np.ndarray] = {}  # the permutation of each epoch the slice touches, made once
    out = []
    for i in range(start, start + per_process):
        epoch, pos = divmod(i, n_prompts)
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        out.append(int(orders[epoch][pos]))
    return out


def total_steps(n_prompts: int, cfg: PPOConfig, world: int = 1) -> int:
    """Rollout steps of the run: ``epochs`` passes over the prompts, capped by ``max_steps``."""
    steps = max(1, math.ceil(cfg.epochs * n_prompts / (cfg.rollout_batch_size * world)))
    return min(steps, cfg.max_steps) if cfg.max_steps else steps


def mixed_precision(device_type: str, cfg: PPOConfig):
    """A context factory: bf16 autocast on CUDA, and on CPUs with native bf16 unless
    ``cpu_precision`` is float32; a no-op otherwise."""
    from salmon_dag.training.precision import use_bf16_autocast

    enabled = device_type == "cuda" or (device_type == "cpu" and use_bf16_autocast(cfg.cpu_precision))
    return lambda: torch.autocast(device_type, dtype=torch.bfloat16, enabled=enabled)


def make_optimizer(params: list, cfg: PPOConfig) -> torch.optim.Optimizer:
    """``ppo.optimizer``: torch's AdamW, or bitsandbytes' paged AdamW with 32-bit states (SALMON's;
    the gpu extra), with ``ppo.weight_decay`` (None: torch's default, 0.01)."""
    kwargs = {"lr": cfg.learning_rate}
    if cfg.weight_decay is not None:
        kwargs["weight_decay"] = cfg.weight_decay
    if cfg.optimizer in (None, "adamw_torch"):
        return torch.optim.AdamW(params, **kwargs)
    try:
        import bitsandbytes
    except ImportError:
        raise ValueError("ppo.optimizer: paged_adamw_32bit needs bitsandbytes (pip install -e '.[gpu]')") from None
    return bitsandbytes.optim.PagedAdamW32bit(params, **kwargs)


class ActorCritic(nn.Module):
    """Policy and value model as one module, so ``accelerate`` wraps (and syncs) them together."""

    def __init__(self, policy: nn.Module, value: ValueModel):
        super().__init__()
        self.policy = policy
        self.value = value

    def forward(self, batch, temperature: float):
        logprobs, entropy = token_logprobs(self.policy, batch, temperature, with_entropy=True)
        return logprobs, entropy, state_values(self.value, batch)


@dataclass
class PPOState:
    """What a checkpoint holds besides weights: where the run is and what it has recorded."""

    step: int = 0
    steps: list[dict[str, float]] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)


class PPOTrainer:
    """PPO on a :class:`Policy` with a :class:`ValueModel`, rewarded by :class:`SalmonReward`.

    ``generator`` samples responses from the current policy (see :mod:`salmon_dag.rl.generation`).
    """

    def __init__(self, policy: Policy, tokenizer, value_model: ValueModel, reward: SalmonReward,
                 prompts: Sequence[RLPrompt], cfg: PPOConfig, seed: int, generator, accelerator=None):
        from accelerate import Accelerator
        from transformers import get_scheduler

        if not prompts:
            raise ValueError("ppo: no prompts to train on")
        self.policy, self.tokenizer, self.reward, self.cfg, self.seed = policy, tokenizer, reward, cfg, seed
        self.prompts = list(prompts)
        self.generator = generator
        # gradient accumulation is done by hand in update(): a rollout's last group may be short
        self.accelerator = accelerator or Accelerator(cpu=policy.model.device.type == "cpu")
        self.value_model = value_model
        self.total_steps = total_steps(len(self.prompts), cfg, self.accelerator.num_processes)
        params = policy.trainable_parameters() + [p for p in value_model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, cfg)
        per_rollout = cfg.optimizer_steps_per_rollout()
        # SALMON counts its warm-up in rollouts
        warmup = cfg.warmup_steps * (per_rollout if cfg.warmup_unit == "rollouts" else 1)
        self.scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.total_steps * per_rollout)
        self.model, self.optimizer = self.accelerator.prepare(ActorCritic(policy.model, value_model), optimizer)
        self.autocast = mixed_precision(self.accelerator.device.type, cfg)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.state = PPOState()

    def _sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        return self.accelerator.reduce(tensor, reduction="sum")

    # ------------------------------------------------------------------ one step
    def sampling(self, step: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                              top_p=self.cfg.top_p, seed=self.seed * 100_003 + step)

    def rollout(self, step: int) -> tuple[list[RLPrompt], Experience, dict[str, float]]:
        acc = self.accelerator
        per = self.cfg.rollout_batch_size
        # the step's prompts on every process (a function of the step alone); this one's are a slice
        every = [self.prompts[i] for rank in range(acc.num_processes)
                 for i in prompts_for_step(step, len(self.prompts), per, self.seed, rank, acc.num_processes)]
        rows = every[acc.process_index * per: (acc.process_index + 1) * per]
        t0 = time.perf_counter()
        synced = self.generator.sync(step)  # bytes of weights moved to the generator (0: it is the policy)
        ts = time.perf_counter()
        completions = self.generator.generate([r.ids for r in rows], self.sampling(step))
        t1 = time.perf_counter()
        responses = [list(c.token_ids) or [self.tokenizer.eos_token_id] for c in completions]
        parts = self.reward(step, [r.instruction for r in rows], [c.text for c in completions],
                            [r.question_type for r in rows], [len(t) for t in responses],
                            [c.finish_reason == "stop" for c in completions],
                            offset=acc.process_index * per, step_types=[r.question_type for r in every])
        t2 = time.perf_counter()
        batch = pack([r.ids for r in rows], responses, self.pad_id, acc.device)
        self.model.eval()
        with self.autocast():
            exp = make_experience(batch, parts, self.policy, self.value_model, self.cfg,
                                  self.cfg.forward_batch_size or self.cfg.per_device_batch_size,
                                  all_reduce=self._sum_over_ranks if acc.num_processes > 1 else None)
        exp.completions = list(completions)  # for the samples table
        t3 = time.perf_counter()
        return rows, exp, {"time/weight_sync": ts - t0, "time/generation": t1 - ts, "time/reward": t2 - t1,
                           "time/experience": t3 - t2, "generation/synced_megabytes": synced / 1e6}

    def update(self, exp: Experience, step: int) -> dict[str, float]:
        """``ppo_epochs`` passes of clipped policy + value updates over shuffled micro-batches."""
        cfg, acc = self.cfg, self.accelerator
        self.model.train()
        sums: dict[str, float] = {}
        norms: list[float] = []
        count = 0
        gen = torch.Generator().manual_seed(self.seed * 7_919 + step)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(len(exp), generator=gen).to(exp.batch.input_ids.device)
            chunks = list(torch.split(order, cfg.per_device_batch_size))
            for j, idx in enumerate(chunks):
                # micro-batches are accumulated in groups of gradient_accumulation_steps (the last may be short)
                group_start = j - j % cfg.gradient_accumulation_steps
                group_end = min(len(chunks), group_start + cfg.gradient_accumulation_steps)
                in_group = group_end - group_start
                last = j + 1 == group_end  # an optimizer step after the group's last micro-batch
                mb = exp.batch.rows(idx)
                mask = mb.action_mask.float()
                with nullcontext() if last else acc.no_sync(self.model):
                    with self.autocast():
                        logprobs, entropy, values = self.model(mb, cfg.temperature)
                    pg = losses.policy_loss(logprobs, exp.old_logprobs[idx], exp.advantages[idx], mask, cfg.clip_range)
                    vf = losses.value_loss(values, exp.old_values[idx], exp.returns[idx], mask, cfg.value_clip_range)
                    acc.backward((pg.loss + cfg.vf_coef * vf.loss) / in_group)
                stats = {
                    "ppo/policy_loss": pg.loss.item(), "ppo/value_loss": vf.loss.item(),
                    "ppo/clip_fraction": pg.clip_fraction.item(), "ppo/value_clip_fraction": vf.clip_fraction.item(),
                    "ppo/approx_kl": pg.approx_kl.item(), "objective/entropy": losses.masked_mean(entropy, mask).item(),
                }
                if last:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad()
                    norms.append(float(grad_norm))
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + v
                count += 1
        out = {k: v / count for k, v in sums.items()}
        out["ppo/grad_norm"] = float(np.mean(norms))
        out["ppo/learning_rate"] = self.scheduler.get_last_lr()[0]
        return out

    def step(self, step: int) -> dict[str, float]:
        t0 = time.perf_counter()
        rows, exp, times = self.rollout(step)
        t1 = time.perf_counter()
        train = self.update(exp, step)
        times["time/training"] = time.perf_counter() - t1
        times[STEP_TIME] = time.perf_counter() - t0
        mask = exp.batch.action_mask.float()
        samples = self._samples(step, rows, exp)
        metrics = {
            **reward_metrics(samples),
            "objective/kl": exp.kl.mean().item(),
            "objective/kl_penalty": -self.cfg.kl_coef * exp.kl.mean().item(),
            "ppo/returns_mean": losses.masked_mean(exp.returns, mask).item(),
            "ppo/values_mean": losses.masked_mean(exp.old_values, mask).item(),
            "ppo/explained_variance": losses.explained_variance(exp.old_values, exp.returns, mask),
            **train, **times,
        }
        metrics = {k: self._mean_over_processes(v) for k, v in metrics.items()}
        if keeps_samples(step, self.total_steps, self.cfg.samples_every):
            self.state.samples.extend(samples[: self.cfg.samples_per_step])
        self.state.steps.append({"step": step, **metrics})
        return metrics

    def _mean_over_processes(self, value: float) -> float:
        if self.accelerator.num_processes == 1:
            return float(value)
        t = torch.tensor(float(value), device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="mean"))

    def _samples(self, step: int, rows: list[RLPrompt], exp: Experience) -> list[dict]:
        """Every sample of this process's rollout as a ``ppo_samples`` row."""
        return [sample_row(step, r.prompt_id, r.question_type, r.instruction, c.text, p, n, c.finish_reason, kl=kl)
                for r, c, p, n, kl in zip(rows, exp.completions, exp.parts, exp.response_tokens.int().tolist(),
                                          exp.kl.tolist(), strict=True)]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "policy": self.policy.trainable_state(), "value": self.value_model.trainable_state(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "step": self.state.step, "steps": self.state.steps, "samples": self.state.samples,
        }

    def load_state_dict(self, state: dict) -> None:
        self.policy.load_trainable_state(state["policy"])
        self.value_model.load_trainable_state(state["value"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        self.state = PPOState(step=state["step"], steps=list(state["steps"]), samples=list(state["samples"]))

    # ------------------------------------------------------------------ the loop
    def train(self, log: Callable[[str], None] = print, save: Callable[[int], None] | None = None,
              on_step: Callable[[int, dict], None] | None = None) -> PPOState:
        """Rollout steps from ``state.step`` to ``total_steps``; ``save(next_step)`` is called every
        ``save_every`` steps and after the last, ``on_step(step, metrics)`` after every step."""
        for step in range(self.state.step, self.total_steps):
            metrics = self.step(step)
            self.state.step = step + 1
            log(f"ppo: step {step + 1}/{self.total_steps}  reward {metrics['objective/reward']:+.3f}  "
                f"rm {metrics['objective/rm_score']:+.3f}  kl {metrics['objective/kl']:.3f}  "
                f"len {metrics['objective/response_tokens']:.1f}  {metrics[STEP_TIME]:.1f}s")
            if save is not None and (self.state.step % self.cfg.save_every == 0 or self.state.step == self.total_steps):
                save(self.state.step)
            if on_step is not None:
                on_step(step, metrics)
        return self.state
