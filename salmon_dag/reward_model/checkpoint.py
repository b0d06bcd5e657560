"""Saving and loading reward-model checkpoints.

A checkpoint directory is what ``from_pretrained`` loads: either a whole
``AutoModelForSequenceClassification`` (LoRA merged in) or a PEFT adapter whose saved weights
include the scalar head (``modules_to_save=["score"]``). Beside it, ``salmon_reward_model.json``
records what it is (kind, base model, revision, max length, template version and layout, CPU
precision). A checkpoint
without trained head weights is refused: the public SALMON code silently scored with a random head.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from safetensors import safe_open

from salmon_dag.templates import REWARD_TEMPLATE_VERSION

MANIFEST = "salmon_reward_model.json"
HEAD = "score"  # the scalar head of transformers' *ForSequenceClassification models
_ADAPTER_WEIGHTS = "adapter_model.safetensors"


class MissingHeadError(RuntimeError):
    """A reward-model checkpoint has no trained scalar head."""


@dataclass(frozen=True)
class RewardModelManifest:
    kind: Literal["merged", "adapter"]
    base_model_id: str
    revision: str | None
    trust_remote_code: bool
    max_seq_len: int
    template_version: str = REWARD_TEMPLATE_VERSION
    # True when it trained on a CPU under bf16 autocast: scoring on a CPU then uses the same
    # numeric path (and runs ~2.5x faster than float32 on a CPU with native bf16)
    cpu_bf16_autocast: bool = False
    # the reviewer prompt's layout it trained on (templates.REVIEWER_LAYOUTS); scoring uses the same
    reviewer_layout: str = "standard"

    def write(self, directory: Path) -> None:
        """A base model beside the checkpoint (the same warehouse's ``models/``) is named relative
        to it ("../base_model"), so a moved warehouse loads its own base."""
        data = asdict(self)
        base, here = Path(self.base_model_id), Path(directory).resolve()
        if base.is_absolute() and base.resolve().parent == here.parent:
            data["base_model_id"] = f"../{base.resolve().name}"
        (Path(directory) / MANIFEST).write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def read(cls, directory: Path) -> "RewardModelManifest":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{directory}: not a reward-model checkpoint ({MANIFEST} missing)")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data["base_model_id"].startswith("../"):
            data["base_model_id"] = str((Path(directory).resolve() / data["base_model_id"]).resolve())
        return cls(**data)


def adapter_has_head(directory: Path) -> bool:
    """True when a saved PEFT adapter carries weights of the scalar head."""
    path = Path(directory) / _ADAPTER_WEIGHTS
    if not path.is_file():
        return False
    with safe_open(str(path), framework="pt") as f:
        return any(f".{HEAD}." in f".{key}" for key in f.keys())


def save_reward_model(model, tokenizer, directory: Path, manifest: RewardModelManifest) -> None:
    """Save ``model`` (a PEFT model or a plain one) into ``directory`` as ``manifest.kind`` says."""
    directory = Path(directory)
    if manifest.kind == "merged" and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    manifest.write(directory)
    if manifest.kind == "adapter" and not adapter_has_head(directory):
        raise MissingHeadError(f"{directory}: the saved adapter has no '{HEAD}' weights (modules_to_save)")


def load_reward_model(directory: str | Path, device: str = "cpu", dtype: str = "float32"):
    """(model, tokenizer, manifest) of a reward-model checkpoint, in eval mode on ``device``.

    Raises :class:`MissingHeadError` when the head weights are absent, instead of scoring with a
    freshly initialised head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from salmon_dag.base_model.loading import DTYPES, load_pretrained, load_tokenizer

    directory = Path(directory)
    manifest = RewardModelManifest.read(directory)
    if manifest.template_version != REWARD_TEMPLATE_VERSION:  # it would score prompts laid out unlike its training
        raise ValueError(f"{directory}: trained on reviewer template version {manifest.template_version}, "
                         f"this code writes version {REWARD_TEMPLATE_VERSION}; retrain the reward model (salmon run)")
    torch_dtype = DTYPES[dtype]
    if manifest.kind == "adapter":
        if not adapter_has_head(directory):
            raise MissingHeadError(f"{directory}: adapter weights have no '{HEAD}' head; retrain the reward model")
        import peft

        base = load_pretrained(
            AutoModelForSequenceClassification, manifest.base_model_id, manifest.revision,
            manifest.trust_remote_code, num_labels=1, dtype=torch_dtype,
        )
        model = peft.PeftModel.from_pretrained(base, str(directory))
    else:
        model, info = load_pretrained(
            AutoModelForSequenceClassification, str(directory), None, False,
            num_labels=1, dtype=torch_dtype, output_loading_info=True,
        )
        if any(k.split(".")[0] == HEAD for k in info.get("missing_keys", [])):
            raise MissingHeadError(f"{directory}: checkpoint has no '{HEAD}' weights; retrain the reward model")
    tokenizer = load_tokenizer(str(directory))
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer, manifest


def checkpoint_dir(ref) -> Path:
    """The checkpoint folder of a reward model's record (a ``ModelRef``): its adapter, or the merged model."""
    return Path(ref.adapter_path or ref.model_id)


def warehouse_checkpoint(warehouse, name: str = "reward_model") -> Path:
    """The checkpoint folder of the warehouse's materialized reward model (merged, or adapter)."""
    from salmon_dag.model_ref import read_model_ref

    return checkpoint_dir(read_model_ref(warehouse, name))


def load_scorer(directory: str | Path, device: str = "cpu", batch_size: int = 16, cache_size: int = 0):
    """A :class:`~salmon_dag.reward_model.scoring.RewardScorer` over the checkpoint in ``directory``:
    on a CPU under bf16 autocast when the model trained so and this CPU computes bf16 natively
    (a model trained on a bf16 CPU is scored in float32 on one without). ``cache_size``: memoize
    that many scores across calls (evaluation; see :class:`~salmon_dag.reward_model.scoring.RewardScorer`)."""
    from salmon_dag.training.precision import cpu_has_native_bf16
    from salmon_dag.reward_model.scoring import RewardScorer

    model, tokenizer, manifest = load_reward_model(directory, device=device)
    autocast = manifest.cpu_bf16_autocast and str(device).startswith("cpu") and cpu_has_native_bf16()
    return RewardScorer(model, tokenizer, manifest.max_seq_len, batch_size=batch_size, cpu_bf16_autocast=autocast,
                        cache_size=cache_size, layout=manifest.reviewer_layout)
