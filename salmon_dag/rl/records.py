"""What an RL run records, the same for every algorithm (our PPO, TRL's RLOO and GRPO): one row
per kept sample (the ``ppo_samples`` table) and the reward half of a step's metrics (``ppo_steps``).
The optimiser half is each trainer's own (PPO's losses and clip fractions, TRL's logs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from salmon_dag.rl.reward import RewardParts

REWARD_PARTS = ("rm_score", "length_bonus", "stop_penalty", "rule_penalty")
STEP_TIME = "time/step"  # wall seconds of one rollout step, generation included


def sample_row(step: int, prompt_id: str | None, question_type: str, instruction: str, response: str,
               parts: RewardParts, response_tokens: int, finish_reason: str, kl: float | None = None) -> dict[str, Any]:
    """One decoded sample with the principles the RM was shown and every part of its reward.
    ``finish_reason``: "stop" (a stop sequence or EOS ended it) or "length" (the token cap did);
    ``kl``: its summed KL to the reference where the trainer measures it per sample (PPO)."""
    return {
        "step": step, "prompt_id": prompt_id, "question_type": question_type, "instruction": instruction,
        "response": response, "principles": list(parts.principles), "rm_score": parts.rm_score,
        "length_bonus": parts.length_bonus, "stop_penalty": parts.stop_penalty, "rule_penalty": parts.rule_penalty,
        "reward": parts.total, "kl": kl, "response_tokens": int(response_tokens), "finish_reason": finish_reason,
    }


def reward_metrics(samples: Sequence[dict[str, Any]]) -> dict[str, float]:
    """A step's mean reward, each part of it, response length and stop rate, over all its
    samples (:func:`sample_row` rows)."""
    def mean(key: str) -> float:
        return float(np.mean([s[key] for s in samples]))

    return {
        "objective/reward": mean("reward"),
        **{f"objective/{k}": mean(k) for k in REWARD_PARTS},
        "objective/response_tokens": mean("response_tokens"),
        "objective/stop_rate": float(np.mean([s["finish_reason"] == "stop" for s in samples])),
    }


def keeps_samples(step: int, total_steps: int, samples_every: int) -> bool:
    """Whether ``step``'s first samples are kept: every ``samples_every``-th step and the last."""
    return step % samples_every == 0 or step == total_steps - 1
