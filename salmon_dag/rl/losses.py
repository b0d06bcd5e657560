"""PPO's arithmetic, separate from experience making and the loop (the OpenRLHF split): per-token
KL estimators, the SALMON per-token reward, GAE, advantage whitening, and the clipped policy and
value losses. Every function works on padded ``(batch, tokens)`` tensors with a ``mask`` that is 1
on response tokens, so padding never leaks into a statistic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from salmon_dag.reward_model.scoring import last_token_index

KLEstimator = Literal["k1", "k1_clamped", "k3"]


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (over everything, or along ``dim``)."""
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8,
                  all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Advantage whitening over the masked entries: zero mean (unless ``shift_mean`` is off), unit
    variance; masked-out entries come back as 0. ``all_reduce`` (a sum over data-parallel ranks)
    makes the mean and variance those of the global batch, as SALMON whitens; without it, this
    process's."""
    reduce = all_reduce or (lambda t: t)
    m = mask.to(values.dtype)
    total, count = reduce(torch.stack([(values * m).sum(), m.sum()]))
    count = count.clamp(min=1)
    mean = total / count
    var = reduce(((values - mean) ** 2 * m).sum()) / count
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(values.dtype)


def kl_per_token(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probs.

    ``k1`` = log r (unbiased, can be negative); ``k1_clamped`` = max(log r, 0), SALMON's (a
    negative estimate never raises the reward); ``k3`` = (r - 1) - log r with r = ref / policy
    (Schulman's low-variance, always >= 0). All are exactly 0 where policy == reference."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k1_clamped":
        return log_ratio.clamp(min=0)
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1, k1_clamped or k3)")


def token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: ``-kl_coef * kl`` on every response token, plus the sequence's score on
    its last response token (as SALMON and most RLHF PPO implementations do)."""
    rewards = -kl_coef * kl * mask
    last = last_token_index(mask)
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens: (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A
    taken as 0 past the last response token; returns = A + V."""
    rewards, values, mask = rewards.float(), values.float(), mask.float()
    values = values * mask
    advantages = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        advantages[:, t] = adv * mask[:, t]
        # padding after the response does not carry values or advantages backwards
        next_value = torch.where(mask[:, t] > 0, values[:, t], next_value * 0)
        next_adv = torch.where(mask[:, t] > 0, adv, next_adv * 0)
    return advantages, (advantages + values) * mask


@dataclass(frozen=True)
class PolicyLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> PolicyLoss:
    """PPO's clipped surrogate: mean over response tokens of max(-A r, -A clip(r, 1-eps, 1+eps))."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(0.5 * (logprobs - old_logprobs) ** 2, mask)
    return PolicyLoss(loss, clip_fraction, approx_kl)


@dataclass(frozen=True)
class ValueLoss:
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float
) -> ValueLoss:
    """Clipped value loss: 0.5 * mean of max((V - R)^2, (V_old + clip(V - V_old, ±eps) - R)^2)."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return ValueLoss(loss, clip_fraction)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(returns - values) / Var(returns) over response tokens (1 = perfect critic)."""
    var_returns = masked_mean((returns - masked_mean(returns, mask)) ** 2, mask)
    residual = returns - values
    var_residual = masked_mean((residual - masked_mean(residual, mask)) ** 2, mask)
    return float(1.0 - var_residual / var_returns.clamp(min=1e-12))
