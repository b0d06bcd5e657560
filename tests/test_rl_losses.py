"""PPO arithmetic (salmon_dag.rl.losses) on hand-computed examples."""

from __future__ import annotations

import math

import pytest
import torch

from salmon_dag.rl.losses import (
    explained_variance,
    gae,
    kl_per_token,
    masked_whiten,
    policy_loss,
    token_rewards,
    value_loss,
)


def test_gae_matches_a_hand_computed_example_and_ignores_padding():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 2.0, 5.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, 9.9]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # the second response is 2 tokens, then padding
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # delta2 = 2 - 1.5 = 0.5; delta1 = 0.9 * 1.5 - 1 = 0.35; delta0 = 1 + 0.9 * 1 - 0.5 = 1.4
    # A2 = 0.5; A1 = 0.35 + 0.72 * 0.5 = 0.71; A0 = 1.4 + 0.72 * 0.71 = 1.9112
    assert adv[0].tolist() == pytest.approx([1.9112, 0.71, 0.5])
    assert ret[0].tolist() == pytest.approx([2.4112, 1.71, 2.0])
    # padding: its reward 5 and value 9.9 never reach the response; A1 = 2 - 1 = 1; A0 = 1.4 + 0.72
    assert adv[1].tolist() == pytest.approx([2.12, 1.0, 0.0])
    assert ret[1, 2] == 0


def test_kl_is_exactly_zero_when_policy_equals_reference():
    lp = torch.randn(3, 5)
    for est in ("k1", "k3"):
        assert torch.equal(kl_per_token(lp, lp.clone(), est), torch.zeros(3, 5))
    k3 = kl_per_token(lp, lp + torch.randn(3, 5), "k3")
    assert (k3 >= 0).all()  # k3 never negative
    with pytest.raises(ValueError, match="k1, k1_clamped or k3"):
        kl_per_token(lp, lp, "k2")


def test_token_rewards_put_the_score_on_the_last_response_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = token_rewards(torch.tensor([2.0, -1.0]), kl, mask, kl_coef=0.1)
    assert r[0].tolist() == pytest.approx([-0.01, -0.02, 2.0 - 0.03])
    assert r[1].tolist() == pytest.approx([-0.05, -1.0 - 0.05, 0.0])


def _ratio_logprobs(ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    old = torch.zeros(1, 1)
    return torch.full((1, 1), math.log(ratio), requires_grad=True), old


@pytest.mark.parametrize(
    ("ratio", "advantage", "clipped"),
    [(1.3, 1.0, True), (1.19, 1.0, False), (1.1, 1.0, False), (0.7, 1.0, False),
     (0.7, -1.0, True), (0.8, -1.0, False), (1.3, -1.0, False)],
)
def test_policy_loss_clips_exactly_outside_the_trust_region(ratio, advantage, clipped):
    lp, old = _ratio_logprobs(ratio)
    out = policy_loss(lp, old, torch.tensor([[advantage]]), torch.ones(1, 1), clip=0.2)
    bound = min(max(ratio, 0.8), 1.2)
    assert out.loss.item() == pytest.approx(max(-advantage * ratio, -advantage * bound))
    assert out.clip_fraction.item() == float(clipped)
    out.loss.backward()
    assert (lp.grad.abs().item() == 0) == clipped  # no gradient through a clipped ratio


def test_value_loss_clips_around_the_old_values():
    old = torch.tensor([[1.0, 1.0]])
    ret = torch.tensor([[3.0, 1.0]])
    new = torch.tensor([[2.0, 1.05]])
    out = value_loss(new, old, ret, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (2-3)^2 = 1, clipped (1.2-3)^2 = 3.24 -> 3.24; token 1: 0.0025 both
    assert out.loss.item() == pytest.approx(0.5 * (3.24 + 0.0025) / 2)
    assert out.clip_fraction.item() == pytest.approx(0.5)


def test_whitening_explained_variance_and_entropy():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = masked_whiten(x, mask)
    assert w[0, :3].mean().item() == pytest.approx(0.0, abs=1e-6) and w[0, 3] == 0
    assert (w[0, :3] ** 2).mean().item() == pytest.approx(1.0, abs=1e-4)
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert explained_variance(ret, ret, torch.ones(1, 3)) == pytest.approx(1.0)
    assert explained_variance(torch.full((1, 3), 2.0), ret, torch.ones(1, 3)) == pytest.approx(0.0)


def test_salmons_clamped_k1_never_rewards_a_negative_estimate():
    lp, ref = torch.tensor([[-1.0, -2.0, -3.0]]), torch.tensor([[-2.0, -1.0, -3.0]])
    assert kl_per_token(lp, ref, "k1").tolist() == [[1.0, -1.0, 0.0]]
    assert kl_per_token(lp, ref, "k1_clamped").tolist() == [[1.0, 0.0, 0.0]]


def test_whitening_over_two_ranks_equals_whitening_their_joined_batch():
    torch.manual_seed(0)
    x, mask = torch.randn(6, 5) * 3 + 1, (torch.rand(6, 5) > 0.3).long()
    parts = [(x[:2], mask[:2]), (x[2:], mask[2:])]  # two ranks, unequal shares

    class TwoRanks:
        """all_reduce for rank ``me``: its own sum plus the other rank's, as gloo would give it."""

        def __init__(self, me: int):
            self.me, self.calls = me, 0

        def __call__(self, t: torch.Tensor) -> torch.Tensor:
            (v, m) = parts[1 - self.me]
            m = m.to(v.dtype)
            if self.calls == 0:
                other = torch.stack([(v * m).sum(), m.sum()])
            else:
                mean = (x * mask).sum() / mask.sum()
                other = ((v - mean) ** 2 * m).sum()
            self.calls += 1
            return t + other

    joined = masked_whiten(x, mask)
    for me, (v, m) in enumerate(parts):
        rows = slice(0, 2) if me == 0 else slice(2, 6)
        assert torch.allclose(masked_whiten(v, m, all_reduce=TwoRanks(me)), joined[rows], atol=1e-6)
    # without the reduction each rank whitens its own share (what SALMON does not do)
    assert not torch.allclose(masked_whiten(*parts[0]), joined[:2], atol=1e-3)
