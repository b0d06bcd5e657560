"""RL-time steering: the same SFT policy and the same reward model, trained under different RL
principle sets, move in different directions (``salmon bench steer``).

A steering set is an ``rl`` principle file built from reward-model principles chosen by name,
with their definitions verbatim: a reward model follows the principle texts it was trained on
(the tiny profile's RM learned ``Concise`` and ``Complete and Thorough``, backed by verifiable
length rules), so the RL reward then asks for exactly what the principle says.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import yaml

from salmon_dag.engine.base import SamplingParams
from salmon_dag.principles import QUESTION_TYPES, PrincipleSet, parse_principles
from salmon_dag.rl.intervention import near_empty_share


def rl_principle_set(rl_principles: PrincipleSet, rm_principles: PrincipleSet, rl_cfg) -> PrincipleSet:
    """The principle set the RL reward draws from under ``profile.rl``: ``rl.yaml`` as it is, or
    (``rl.reward_model_principles``) a steering set; without always-on lines when ``rl.always_on``
    is off."""
    if rl_cfg.reward_model_principles:
        try:
            return steering_set(rm_principles, rl_cfg.reward_model_principles, rl_cfg.always_on, rl_principles)
        except ValueError as exc:
            raise ValueError(f"rl.reward_model_principles: {str(exc).removeprefix('steer: ')}") from None
    if rl_cfg.always_on or not rl_principles.always_on():
        return rl_principles
    data = rl_principles.data.model_dump(mode="json", exclude_none=True) | {"always_on": []}
    return parse_principles(yaml.safe_dump(data, sort_keys=False), "rl", rl_principles.path)


def steering_set(rm_principles: PrincipleSet, names: Sequence[str], always_on: bool = False,
                 rl_principles: PrincipleSet | None = None) -> PrincipleSet:
    """An ``rl`` principle set whose every question-type group holds the named reward-model
    principles (weight 1); ``always_on`` keeps the RL file's always-on lines."""
    by_name = {p.name: p for _, p in rm_principles.principles()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"steer: {', '.join(unknown)} not in {rm_principles.path} (known: {', '.join(by_name)})")
    # names are unique across a file's groups: the copies for other question types say which
    groups = {qt: [{"name": n if qt == "general" else f"{n} ({qt})", "definition": by_name[n].definition,
                    "weight": 1.0} for n in names] for qt in QUESTION_TYPES}
    data = {"version": 1, "kind": "rl", "groups": groups}
    if always_on and rl_principles is not None:
        data["always_on"] = [p.model_dump(mode="json", exclude_none=True) for p in rl_principles.always_on()]
    label = "+".join(names)
    return parse_principles(yaml.safe_dump(data, sort_keys=False), "rl", f"<steer:{label}>")


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
