"""What every training stage is configured with (``TrainingConfig``: batch, optimisation, where
it runs), (Q)LoRA, and the SFT stage's section (``sft``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


class LoraConfig(_Strict):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    quantization: Literal["none", "4bit", "8bit"] = "none"


class TrainingConfig(_Strict):
    """What every training stage (SFT, reward model, PPO) is configured with.

    ``lora`` unset means full fine-tuning; ``lora.quantization`` 4bit/8bit means QLoRA (CUDA).
    """

    lora: LoraConfig | None = None
    per_device_batch_size: int = Field(default=4, gt=0)
    gradient_accumulation_steps: int = Field(default=1, gt=0)
    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=1, gt=0)
    max_seq_len: int = Field(default=512, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    # the optimizer by its transformers name (adamw_torch, paged_adamw_32bit: SALMON's, needs the
    # gpu extra), its weight decay and gradient clipping (SALMON's SFT and RM: 0.3); None: the
    # trainer's defaults (transformers': AdamW, weight decay 0, clipping 1.0; PPO: weight decay 0.01)
    optimizer: Literal["adamw_torch", "paged_adamw_32bit"] | None = None
    weight_decay: float | None = Field(default=None, ge=0)
    max_grad_norm: float | None = Field(default=None, gt=0)
    # Where training runs (salmon_dag.launch): "inprocess" in the Dagster step; "accelerate" as
    # `accelerate launch` with num_processes ranks (a subprocess, through Dagster Pipes); "k8s" the
    # same command in a pod with num_processes GPUs (profile.kubernetes).
    launcher: Literal["inprocess", "accelerate", "k8s"] = "inprocess"
    # data-parallel ranks (GPUs, or CPU processes over gloo); the global batch is
    # per_device_batch_size x gradient_accumulation_steps x num_processes
    num_processes: int = Field(default=1, gt=0)
    # 0: plain data parallel (DDP); 2 or 3: DeepSpeed ZeRO with the config shipped in
    # salmon_dag/launch/deepspeed/ (needs the gpu extra's deepspeed and a non-inprocess launcher)
    deepspeed_stage: Literal[0, 2, 3] = 0
    # an `accelerate config` YAML (multi-node: num_machines, main_process_ip, ...); its settings
    # come first, num_processes and the DeepSpeed config file are still set from here
    accelerate_config: str | None = None

    @model_validator(mode="after")
    def _launcher_needed(self) -> "TrainingConfig":
        if self.launcher == "inprocess" and (self.num_processes > 1 or self.deepspeed_stage):
            raise ValueError("num_processes > 1 and deepspeed_stage need launcher 'accelerate' or 'k8s', not 'inprocess'")
        return self


class SFTStageConfig(TrainingConfig):
    """Principle engraving (``profile.sft``). Not TRL's ``SFTConfig``: :meth:`trl_config` builds it."""

    def trl_config(self, work_dir: Path, seed: int, device: str, n_examples: int, save_steps: int | None = None):
        """TRL's ``SFTConfig`` for this section: the arguments every trainer here shares
        (``training.harness.common_training_args``), prompt-completion rows with the loss on the
        completion only."""
        from trl import SFTConfig

        from salmon_dag.training.harness import common_training_args

        return SFTConfig(
            **common_training_args(self, work_dir, seed, device, n_examples, save_steps),
            # TRL labels the prompt tokens -100
            completion_only_loss=True,
            max_length=self.max_seq_len,
            packing=False,
        )
