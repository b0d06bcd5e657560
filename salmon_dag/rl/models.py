"""The three models of PPO: the policy (LoRA on the SFT model), its frozen reference, and the value
model (the reward model's backbone with a fresh, zero-initialised scalar head).

How the reference is kept depends on how the policy trains, and costs no second copy where it can:

* ``merged``: the SFT adapter is merged into the base weights, a fresh LoRA (``ppo.lora``) is put
  on top; the reference is the same model with that adapter disabled.
* ``adapter``: QLoRA (4/8-bit weights cannot take a merge): the SFT adapter itself keeps training
  and a second, frozen copy of it named ``reference`` gives the reference log-probs (SALMON's set-up).
* ``copy``: full fine-tuning (``ppo.lora`` unset): the reference is a frozen copy of the SFT model.

Plain Python: no dagster import here.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PreTrainedModel

from salmon_dag.base_model.loading import load_tokenizer
from salmon_dag.config import TrainingConfig
from salmon_dag.training.lora import load_for_training, peft_config

ReferenceMode = Literal["merged", "adapter", "copy"]
REFERENCE_ADAPTER = "reference"


@dataclass(frozen=True)
class PolicySource:
    """Where the SFT policy lives (a :class:`salmon_dag.model_ref.ModelRef` has these fields)."""

    model_id: str
    revision: str | None = None
    adapter_path: str | None = None
    trust_remote_code: bool = False


def reference_mode(source: PolicySource, cfg: TrainingConfig) -> ReferenceMode:
    if cfg.lora is None:
        return "copy"
    if cfg.lora.quantization != "none" and source.adapter_path:
        return "adapter"
    return "merged"


def load_sft_policy(source: PolicySource, cfg: TrainingConfig, device: str) -> tuple[PreTrainedModel, object]:
    """(model, tokenizer) of the SFT policy with its adapter merged in: what RL starts from and
    what a library trainer (TRL RLOO/GRPO, which adds its own LoRA) takes. Not for QLoRA."""
    model = load_for_training(AutoModelForCausalLM, source.model_id, source.revision, source.trust_remote_code, cfg, device)
    if source.adapter_path:
        if not Path(source.adapter_path).is_dir():
            raise FileNotFoundError(f"sft_model: adapter path {source.adapter_path} does not exist")
        from peft import PeftModel

        # merge_and_unload leaves the base weights frozen; they are the weights a full fine-tune trains
        model = PeftModel.from_pretrained(model, source.adapter_path).merge_and_unload().requires_grad_(True)
    tokenizer = load_tokenizer(source.adapter_path or source.model_id, source.revision, source.trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights of ``module`` that train (``requires_grad``): what a checkpoint keeps."""
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    return {k: v.detach().clone() for k, v in module.state_dict().items() if k in names}


def load_trainable_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load :func:`trainable_state` output back; weights the module lacks are an error."""
    missing = set(state) - set(module.state_dict())
    if missing:
        raise RuntimeError(f"{what} checkpoint has weights this {what} lacks: {sorted(missing)[:3]}")
    module.load_state_dict(state, strict=False)


class Policy:
    """The trainable policy and a context manager under which the same module is the reference."""

    def __init__(self, model: nn.Module, mode: ReferenceMode, reference: nn.Module | None = None):
        self.model = model
        self.mode = mode
        self._reference = reference

    @contextmanager
    def as_reference(self) -> Iterator[nn.Module]:
        """Yields the module to run for reference log-probs (no gradients)."""
        with torch.no_grad():
            if self.mode == "copy":
                yield self._reference
            elif self.mode == "merged":
                with self.model.disable_adapter():
                    yield self.model
            else:
                self.model.set_adapter(REFERENCE_ADAPTER)
                try:
                    yield self.model
                finally:
                    self.model.set_adapter("default")

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights PPO changes (LoRA weights, or all of a full fine-tune), for checkpoints."""
        return trainable_state(self.model)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        load_trainable_state(self.model, state, "policy")


def load_policy(source: PolicySource, cfg: TrainingConfig, device: str, seed: int) -> tuple[Policy, object]:
    """The trainable :class:`Policy` and its tokenizer, per :func:`reference_mode`."""
    import peft

    mode = reference_mode(source, cfg)
    torch.manual_seed(seed)  # the fresh LoRA's initial weights
    if mode == "adapter":
        base = load_for_training(AutoModelForCausalLM, source.model_id, source.revision, source.trust_remote_code, cfg, device)
        model = peft.PeftModel.from_pretrained(base, source.adapter_path, is_trainable=True)
        model.load_adapter(source.adapter_path, adapter_name=REFERENCE_ADAPTER, is_trainable=False)
        model.set_adapter("default")
        tokenizer = load_tokenizer(source.adapter_path, source.revision, source.trust_remote_code)
        return Policy(model, mode), tokenizer
    model, tokenizer = load_sft_policy(source, cfg, device)
    if mode == "copy":
        reference = copy.deepcopy(model).eval().requires_grad_(False)
        return Policy(model, mode, reference), tokenizer
    model = peft.get_peft_model(model, peft_config(cfg.lora))
    return Policy(model, mode), tokenizer


class ValueModel(nn.Module):
    """A transformer body and a scalar head read at every position: V(prefix up to token t).

    The head starts at zero, so the first values are 0 whatever the body computes and the critic
    learns from returns instead of from a head trained for another job (SALMON's set-up)."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        load_trainable_state(self, state, "value model")


def load_value_model(reward_checkpoint: str | Path, cfg: TrainingConfig, device: str, policy_tokenizer) -> ValueModel:
    """The value model: the reward model's transformer body and a zero-initialised head. The RM's
    LoRA is merged in and a fresh LoRA (``cfg.lora``) trains on top; under QLoRA the RM's own
    adapter keeps training (no merge into 4-bit weights). The RM must share the policy's
    tokenizer, because the value model reads the policy's tokens."""
    from transformers import AutoModelForSequenceClassification

    from salmon_dag.reward_model.checkpoint import RewardModelManifest

    directory = Path(reward_checkpoint)
    manifest = RewardModelManifest.read(directory)
    if load_tokenizer(str(directory)).get_vocab() != policy_tokenizer.get_vocab():
        raise ValueError(
            f"ppo: the value model starts from the reward model ({directory}), whose tokenizer differs from the "
            "policy's; use a reward model trained on the policy's base model"
        )
    quantized = cfg.lora is not None and cfg.lora.quantization != "none"
    if manifest.kind == "adapter":
        import peft

        scorer = load_for_training(AutoModelForSequenceClassification, manifest.base_model_id, manifest.revision,
                                   manifest.trust_remote_code, cfg, device, num_labels=1)
        scorer = peft.PeftModel.from_pretrained(scorer, str(directory), is_trainable=quantized)
        scorer = scorer.get_base_model() if quantized else scorer.merge_and_unload()
    else:
        scorer = load_for_training(AutoModelForSequenceClassification, str(directory), None, False, cfg, device,
                                   num_labels=1)
    body = scorer.base_model  # the transformer without the RM's score head
    if cfg.lora is not None and not quantized:
        import peft

        body = peft.get_peft_model(body, peft_config(cfg.lora, task_type="FEATURE_EXTRACTION"))
    hidden = scorer.config.get_text_config().hidden_size
    return ValueModel(body, hidden).to(device)
