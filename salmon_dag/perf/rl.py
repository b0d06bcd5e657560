"""``salmon bench rl``: seconds per RL step of our PPO and of TRL's RLOOTrainer on the same tiny
models, prompts and number of completions per step, measured in one run (goal: ours no slower)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salmon_dag.config import RLConfig, load_profile
from salmon_dag.paths import BUNDLED_PRINCIPLES_DIR

STEPS = 6  # the first step of each (warm-up, first allocations) is not counted
COMPLETIONS = 16  # per step, both algorithms


def bench_rl(policy_dir: Path, reward_dir: Path, work: Path, log=print) -> float:
    from salmon_dag.principles import load_principles
    from salmon_dag.prompt_pool import build_from_config
    from salmon_dag.reward_model.checkpoint import load_scorer
    from salmon_dag.rl.models import PolicySource
    from salmon_dag.rl.reward import SalmonReward
    from salmon_dag.rl.stage import train_policy
    from salmon_dag.rl.trl_baseline import train_trl

    profile = load_profile("tiny")
    pool, _ = build_from_config(profile.prompt_pool, profile.seed, log=lambda _: None)
    prompts = pool.filter(pool["split"] == "train").sort("prompt_id")
    rl_pset = load_principles(BUNDLED_PRINCIPLES_DIR, "rl")
    group = 4
    ppo = profile.ppo.model_copy(update={"rollout_batch_size": COMPLETIONS, "max_steps": STEPS, "save_every": STEPS})
    source = PolicySource(str(policy_dir))
    log(f"rl bench: tiny Llama shape, random weights; {COMPLETIONS} completions of <= {ppo.max_new_tokens} tokens "
        f"per step, {STEPS} steps each (first not counted), LoRA r={ppo.lora.r}")

    def ours(epochs: int) -> float:
        cfg = ppo.model_copy(update={"ppo_epochs": epochs})
        result = train_policy(source, reward_dir, rl_pset, prompts, cfg, RLConfig(), work / f"ppo{epochs}", profile.seed,
                              device="cpu", log=lambda _: None)
        split = {k: float(np.mean([s[f"time/{k}"] for s in result.steps[1:]]))
                 for k in ("generation", "reward", "experience", "training", "step")}
        log(f"  ours, PPO with {epochs} epoch(s) over each rollout (policy + value model): {split['step']:.2f} s/step "
            f"(generation {split['generation']:.2f}, reward {split['reward']:.2f}, log-probs and values "
            f"{split['experience']:.2f}, training {split['training']:.2f})")
        return split["step"]

    configured, single = ours(ppo.ppo_epochs), ours(1)
    rloo_ppo = ppo.model_copy(update={"rollout_batch_size": COMPLETIONS // group})
    reward = SalmonReward(load_scorer(reward_dir), rl_pset, RLConfig().reward, profile.seed)
    trl = train_trl("rloo", source, reward, prompts, rloo_ppo, RLConfig(algorithm="rloo", group_size=group),
                    work / "rloo", profile.seed, device="cpu", log=lambda _: None)
    log(f"  TRL RLOOTrainer ({COMPLETIONS // group} prompts x {group} completions, one pass, no value model): "
        f"{trl.seconds_per_step:.2f} s/step")
    log(f"  TRL RLOO / ours with {ppo.ppo_epochs} PPO epochs = {trl.seconds_per_step / configured:.2f}x")
    ratio = trl.seconds_per_step / single
    log(f"rl: TRL RLOO / ours seconds per step, one optimisation pass each = {ratio:.2f}x (goal >= 1.0: ours no slower)")
    return ratio
