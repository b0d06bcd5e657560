"""How rollouts reach the generator: the policy's current weights must be what samples.

* ``hf``: the engine runs on the live (PEFT) policy module itself: no copy, no sync, zero cost.
* ``vllm``: the base (SFT-merged) weights are loaded into vLLM once; each rollout saves the
  current LoRA adapter (a few MB) and passes it as a ``LoRARequest`` with a fresh id, so vLLM
  loads the new adapter weights instead of a whole merged checkpoint.

Both return the engine's :class:`~salmon_dag.engine.base.Completion` objects.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from salmon_dag.engine.base import Completion, SamplingParams


class LivePolicyGenerator:
    """Generation on the training policy module through the HF engine."""

    kind = "hf"

    def __init__(self, model, tokenizer, max_batch_size: int):
        from salmon_dag.engine.hf import HFEngine

        native = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 4096
        self.model = model
        self.engine = HFEngine(model_id="policy", model=model, tokenizer=tokenizer, max_context=int(native),
                               max_batch_size=max_batch_size)

    def sync(self, step: int) -> float:
        """Bytes moved to make the generator current (none: it is the policy)."""
        return 0.0

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        was_training = self.model.training
        self.model.eval()
        try:
            return [c[0] for c in self.engine.generate([list(p) for p in prompt_ids], params)]
        finally:
            self.model.train(was_training)


class VLLMAdapterGenerator:
    """vLLM on the SFT-merged weights with the PPO LoRA adapter reloaded at every rollout."""

    kind = "vllm"

    def __init__(self, engine_cfg, base_dir: Path, policy_model, tokenizer, adapter_dir: Path, max_lora_rank: int):
        from salmon_dag.engine.vllm_backend import load_vllm_engine

        self.policy_model = policy_model
        self.adapter_dir = Path(adapter_dir)
        self.engine = load_vllm_engine(engine_cfg, str(base_dir), max_lora_rank=max_lora_rank)

    def sync(self, step: int) -> float:
        from vllm.lora.request import LoRARequest

        target = self.adapter_dir / f"step-{step}"
        if target.exists():
            shutil.rmtree(target)
        self.policy_model.save_pretrained(str(target), selected_adapters=["default"])
        for old in self.adapter_dir.glob("step-*"):
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        # a new id makes vLLM load the new weights instead of its cached adapter
        self.engine.lora_request = LoRARequest(f"ppo-{step}", step + 1, str(target))
        return float(sum(f.stat().st_size for f in target.iterdir() if f.is_file()))

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        return [c[0] for c in self.engine.generate([list(p) for p in prompt_ids], params)]
