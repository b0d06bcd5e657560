"""``salmon profiles --check``: the numbers a user needs before renting GPUs, and contradictions
reported before any model loads."""

from __future__ import annotations

import subprocess
import sys

from salmon_dag.config import load_profile
from salmon_dag.profile_check import check_profile


def test_the_70b_profile_makes_salmons_ppo_batches_on_eight_gpus():
    made = check_profile(load_profile("llama2-70b-qlora"))
    ppo = next(s for s in made.stages if s.stage == "ppo")
    assert (made.rollouts_per_step, ppo.global_batch, ppo.ranks, made.gpus) == (576, 288, 8, 8)
    assert made.optimizer_steps_per_rollout == 4 and made.problems == []


def test_the_7b_profile_fits_one_gpu():
    made = check_profile(load_profile("llama2-7b-qlora"), gpus=1)
    assert made.gpus == 1 and made.problems == [] and {s.ranks for s in made.stages} == {1}
    assert (made.rollouts_per_step, next(s for s in made.stages if s.stage == "ppo").global_batch) == (576, 288)


def test_contradictions_are_one_line_each(tmp_path):
    profile = load_profile("llama2-7b-qlora", {
        "sft": {"num_processes": 2},
        "reward_model": {"deepspeed_stage": 3, "num_processes": 2},
    })
    problems = check_profile(profile, gpus=1).problems
    assert problems == [
        "sft: 2 ranks, one per GPU, but 1 GPU(s) given",
        "reward_model: lora.quantization 4bit with deepspeed_stage 3: ZeRO-3 shards the quantized base weights, "
        "which this pipeline does not set up (use ZeRO-2, as the 70B profile does)",
        "reward_model: 2 ranks, one per GPU, but 1 GPU(s) given",
    ]
    assert check_profile(load_profile("tiny")).gpus == 0  # a CPU profile needs none
    # what the profile's validation refuses is one line too, before any model loads
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: llama2-7b-qlora\nppo:\n  deepspeed_stage: 2\n")
    proc = subprocess.run([sys.executable, "-m", "assets_defs.cli", "profiles", "--check", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"error: {bad}: ppo: ") and "ZeRO is for sft and reward_model" in proc.stderr


def test_the_cli_prints_the_numbers_and_exits_1_on_a_contradiction():
    ok = subprocess.run([sys.executable, "-m", "assets_defs.cli", "profiles", "--check", "llama2-70b-qlora"],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "ppo: 288 sequences per optimizer step" in ok.stdout and "576 rollouts per step" in ok.stdout
    short = subprocess.run([sys.executable, "-m", "assets_defs.cli", "profiles", "--check", "llama2-70b-qlora",
                            "--gpus", "4"], capture_output=True, text=True, timeout=120)
    assert short.returncode == 1
    assert "error: ppo: 8 ranks, one per GPU, but 4 GPU(s) given" in short.stderr.splitlines()
