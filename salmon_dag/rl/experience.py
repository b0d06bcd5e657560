"""Experience making: a rollout batch (prompts and the policy's completions) becomes the tensors PPO
optimises: old / reference log-probs, values, per-token rewards, advantages and returns.

Every row is ``prompt + response`` left-padded, so each response ends at the last column and its
tokens are the ``action_mask`` positions. Tensors of actions are ``(batch, length - 1)``: entry t is
about token t + 1, predicted from the prefix up to t (log-prob, value of that prefix, reward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from salmon_dag.config import PPOConfig
from salmon_dag.rl import losses
from salmon_dag.rl.reward import RewardParts


@dataclass(frozen=True)
class Batch:
    """Left-padded ``prompt + response`` rows."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    action_mask: torch.Tensor  # (batch, length - 1): 1 where the next token is a response token

    def rows(self, index: torch.Tensor) -> "Batch":
        return Batch(*(t[index] for t in (self.input_ids, self.attention_mask, self.position_ids, self.action_mask)))


def pack(prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad_id: int, device) -> Batch:
    """Left-pad ``prompt + response`` rows; positions count real tokens only."""
    if len(prompts) != len(responses):
        raise ValueError(f"pack: {len(prompts)} prompts but {len(responses)} responses")
    if any(len(r) == 0 for r in responses):
        raise ValueError("pack: empty response (a completion has at least its stop or EOS token)")
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    resp = torch.zeros_like(ids)
    for row, (p, r) in enumerate(zip(prompts, responses)):
        seq = list(p) + list(r)
        ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
        resp[row, width - len(r):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids.to(device), mask.to(device), positions.to(device), resp[:, 1:].to(device))


def token_logprobs(model: nn.Module, batch: Batch, temperature: float, with_entropy: bool = False):
    """Log-probs of each next token under ``model``'s logits / ``temperature`` (the distribution the
    tokens were sampled from), shape (batch, length - 1); plus per-position entropy if asked."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   position_ids=batch.position_ids).logits[:, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    if not with_entropy:
        return chosen, None
    return chosen, -(logp.exp() * logp).sum(-1)


def state_values(value_model: nn.Module, batch: Batch) -> torch.Tensor:
    """V(prefix up to t) for every action position t, shape (batch, length - 1)."""
    return value_model(batch.input_ids, batch.attention_mask, batch.position_ids)[:, :-1].float()


@dataclass
class Experience:
    """One rollout batch, ready for PPO epochs."""

    batch: Batch
    old_logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    parts: list[RewardParts]  # per sample: principles and reward parts (unscaled)
    kl: torch.Tensor  # per sample: summed per-token KL estimate
    response_tokens: torch.Tensor
    completions: list = field(default_factory=list)  # the engine's Completion per sample

    def __len__(self) -> int:
        return self.batch.input_ids.shape[0]


def per_token_rewards(totals: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, cfg: PPOConfig) -> torch.Tensor:
    """SALMON's per-token reward: ``-kl_coef * kl`` on every response token, the sequence reward on
    the last, and all of it times ``reward_scale`` (SALMON scales the KL term too)."""
    return losses.token_rewards(totals, kl, mask, cfg.kl_coef) * cfg.reward_scale


@torch.no_grad()
def make_experience(
    batch: Batch,
    parts: list[RewardParts],
    policy,
    value_model: nn.Module,
    cfg: PPOConfig,
    micro_batch: int,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Experience:
    """Log-probs (policy and reference), values, KL-penalised per-token rewards, GAE advantages
    (whitened when configured, over every rank's batch when ``all_reduce`` sums across ranks)
    and returns of a packed rollout batch."""
    old_lp, ref_lp, values = [], [], []
    n = batch.input_ids.shape[0]
    for start in range(0, n, micro_batch):
        part = batch.rows(torch.arange(start, min(n, start + micro_batch), device=batch.input_ids.device))
        old_lp.append(token_logprobs(policy.model, part, cfg.temperature)[0])
        with policy.as_reference() as reference:
            ref_lp.append(token_logprobs(reference, part, cfg.temperature)[0])
        values.append(state_values(value_model, part))
    old_logprobs, ref_logprobs, old_values = torch.cat(old_lp), torch.cat(ref_lp), torch.cat(values)
    mask = batch.action_mask.float()
    kl = losses.kl_per_token(old_logprobs, ref_logprobs, cfg.kl_estimator) * mask
    rewards = per_token_rewards(torch.tensor([p.total for p in parts], device=kl.device), kl, mask, cfg)
    advantages, returns = losses.gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = losses.masked_whiten(advantages, mask, all_reduce=all_reduce)
    return Experience(
        batch=batch, old_logprobs=old_logprobs, ref_logprobs=ref_logprobs, old_values=old_values * mask,
        advantages=advantages, returns=returns, parts=parts, kl=kl.sum(-1), response_tokens=mask.sum(-1),
    )
