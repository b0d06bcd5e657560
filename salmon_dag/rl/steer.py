"""RL-time steering: the same SFT policy and the same reward model, trained under different RL
principle sets, move in different directions (``salmon bench steer``).

Each run draws from a steering set (salmon_dag.rl.principle_set): reward-model principles chosen
by name, with their definitions verbatim (the tiny profile's RM learned ``Concise`` and ``Complete
and Thorough``, backed by verifiable length rules).
"""

from __future__ import annotations

import numpy as np

from salmon_dag.engine.base import SamplingParams
from salmon_dag.principles import PrincipleSet
from salmon_dag.rl.intervention import near_empty_share
from salmon_dag.rl.principle_set import steering_set


def bench_steer(
    sft,
    reward_checkpoint,
    rm_principles: PrincipleSet,
    rl_principles: PrincipleSet,
    train_prompts,
    eval_prompts,
    profile,
    work_dir,
    directions: tuple[str, str] = ("Concise", "Complete and Thorough"),
    samples: int = 4,
    log=print,
) -> dict[str, float]:
    """Train one policy per principle in ``directions`` from the same SFT policy against the same
    RM (the profile's PPO settings, no length bonus so only the principles steer), then print the
    mean response length of the SFT policy and of both policies on the held-out prompts, and each
    one's near-empty share (``<name>/near_empty_share``; rl.yaml's always-on lines, with their
    rules, are part of both sets) and share of answers that stopped before the cap
    (``<name>/stop_rate``)."""
    from pathlib import Path

    from salmon_dag.config import EngineConfig
    from salmon_dag.engine import create_engine
    from salmon_dag.rl.models import PolicySource
    from salmon_dag.rl.stage import train_policy
    from salmon_dag.templates import format_chat_prompt

    rl_cfg = profile.rl.model_copy(update={
        "algorithm": "ppo", "reward": profile.rl.reward.model_copy(update={"length_bonus_coef": 0.0})})
    source = PolicySource(sft.model_id, sft.revision, sft.adapter_path, sft.trust_remote_code)
    engine_cfg = EngineConfig(backend="hf", device=profile.engine.device, max_batch_size=32)
    params = SamplingParams(max_new_tokens=profile.ppo.max_new_tokens, temperature=profile.ppo.temperature,
                            n=samples, seed=profile.seed)
    texts = [format_chat_prompt(p) for p in eval_prompts["prompt"].to_list()]

    def measure(key: str, model_id: str, adapter: str | None = None) -> None:
        """Mean response tokens, near-empty share and stop rate of a policy on the held-out prompts."""
        with create_engine(engine_cfg, model_id, source.revision if adapter else None, adapter) as engine:
            outs = engine.generate(texts, params)
        done = [c for comps in outs for c in comps]
        means[key] = float(np.mean([len(c.token_ids) for c in done]))
        means[f"{key}/near_empty_share"] = near_empty_share([c.text for c in done])
        # answers that ended (stop sequence or EOS) before the length cap: RL's stop penalty
        # rewards raising this, which caps how long a "thorough" answer can get
        means[f"{key}/stop_rate"] = sum(c.finish_reason == "stop" for c in done) / len(done)

    means: dict[str, float] = {}
    measure("sft", source.model_id, source.adapter_path)
    log(f"steer: SFT policy, {len(texts)} held-out prompts x {samples} samples: {means['sft']:.2f} tokens, "
        f"{means['sft/near_empty_share']:.0%} near-empty, {means['sft/stop_rate']:.0%} stopped")
    for name in directions:
        pset = steering_set(rm_principles, [name], rl_cfg.always_on, rl_principles)
        out = Path(work_dir) / name.lower().replace(" ", "_")
        result = train_policy(source, reward_checkpoint, pset, train_prompts, profile.ppo, rl_cfg, out, profile.seed,
                              device=profile.engine.device, log=lambda _: None)
        summary = result.summary()
        measure(name, str(out))
        log(f"steer: {name}: {len(result.steps)} PPO steps, RM score {summary['rm_score/first_quarter']:+.3f} -> "
            f"{summary['rm_score/last_quarter']:+.3f}; held-out mean length {means[name]:.2f} tokens, "
            f"{means[f'{name}/near_empty_share']:.0%} near-empty, {means[f'{name}/stop_rate']:.0%} stopped")
    a, b = directions
    moved = means[a] < means["sft"] < means[b]
    log(f"steer: mean response tokens  {a} {means[a]:.2f}  <  SFT {means['sft']:.2f}  <  {b} {means[b]:.2f}: "
        f"{'opposite directions, as asked' if moved else 'NOT in opposite directions'}")
    return means
