"""The base model's section of a profile (``base_model``): a tiny Llama built here, or a
pretrained checkpoint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


class TinyModelConfig(_Strict):
    """Shape and pre-training budget of the self-built tiny Llama (head_dim 64 for vLLM CPU)."""

    vocab_size: int = Field(default=4096, ge=300)
    hidden_size: int = Field(default=256, gt=0)
    num_layers: int = Field(default=4, gt=0)
    num_heads: int = Field(default=4, gt=0)
    num_kv_heads: int = Field(default=4, gt=0)
    intermediate_size: int = Field(default=688, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    seq_len: int = Field(default=256, gt=8)
    batch_size: int = Field(default=16, gt=0)
    steps: int = Field(default=300, gt=0)
    learning_rate: float = Field(default=3e-3, gt=0)
    warmup_steps: int = Field(default=20, ge=0)
    # The last N steps train on long blocks (default length: max_position_embeddings) so that
    # the model has seen the positions a self-align prompt (principles + exemplars) occupies.
    long_context_steps: int = Field(default=0, ge=0)
    long_context_seq_len: int | None = Field(default=None, gt=8)
    shared_data_dir: str | None = None
    # Training precision. "auto": bf16 autocast (weights, optimizer and the saved model stay
    # fp32) where the CPU computes bf16 natively (AVX512-BF16 or AMX: ~1.65x faster steps),
    # float32 elsewhere, where emulated bf16 would be slower.
    precision: Literal["auto", "float32", "bfloat16"] = "auto"

    @model_validator(mode="after")
    def _heads(self) -> "TinyModelConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError("hidden_size must be divisible by num_heads")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must be divisible by num_kv_heads")
        if self.long_context_steps > self.steps:
            raise ValueError("long_context_steps must not exceed steps")
        if (self.long_context_seq_len or 0) > self.max_position_embeddings:
            raise ValueError("long_context_seq_len must not exceed max_position_embeddings")
        return self


class RandomModelConfig(_Strict):
    """A Llama-2-shaped model with random weights and a Llama-style tokenizer, built here without
    training (a rehearsal's stand-in for ``like``: salmon_dag.rehearsal). Llama-2's own settings
    (RMSNorm eps 1e-5, RoPE theta 10,000, 4,096 positions, untied embeddings, SiLU MLP) are
    kept; the sizes are small. ``num_kv_heads`` < ``num_heads`` keeps grouped-query attention
    (Llama-2-70b's)."""

    like: str
    # the self-align prompt (principles and exemplars) must fit Llama-2's 4,096 positions: ~3.5k
    # tokens at this vocabulary on the bundled corpus, ~5k at 1,024
    vocab_size: int = Field(default=4096, ge=300)
    hidden_size: int = Field(default=128, gt=0)
    num_layers: int = Field(default=2, gt=0)
    num_heads: int = Field(default=2, gt=0)
    num_kv_heads: int = Field(default=2, gt=0)
    # Llama-2's MLP ratio (11008 / 4096) at hidden 128 is 344; the CPU kernels of bitsandbytes'
    # 4-bit layers need input sizes divisible by their block of 64 and output sizes by 32
    intermediate_size: int = Field(default=384, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)

    @model_validator(mode="after")
    def _heads(self) -> "RandomModelConfig":
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must be divisible by num_heads, num_heads by num_kv_heads")
        return self


class BaseModelConfig(_Strict):
    """``tiny``: build and pre-train the model here; ``pretrained``: a Hub id or local path,
    loaded as is; ``random``: a random-weight model of a real one's shape, built here (rehearsals)."""

    kind: Literal["tiny", "pretrained", "random"]
    model_id: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    tiny: TinyModelConfig = TinyModelConfig()
    random: RandomModelConfig | None = None
    _HASH_NEUTRAL_WHEN_DEFAULT = ("random",)

    @model_validator(mode="after")
    def _id_needed(self) -> "BaseModelConfig":
        if self.kind == "pretrained" and not self.model_id:
            raise ValueError("kind 'pretrained' needs 'model_id' (Hub id or local path)")
        if self.kind == "random" and self.random is None:
            raise ValueError("kind 'random' needs a 'random' section (at least 'like')")
        return self
