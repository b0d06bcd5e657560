"""Building an HFEngine from configuration (model, optional PEFT adapter, context window)."""

from __future__ import annotations

from pathlib import Path

from salmon_dag.base_model.loading import load_causal_lm, load_tokenizer, resolve_device
from salmon_dag.config import EngineConfig
from salmon_dag.engine.base import EngineError
from salmon_dag.engine.hf import HFEngine


def context_window(cfg: EngineConfig, model_config) -> int:
    """The configured context window, else the model's own (max_position_embeddings)."""
    native = getattr(model_config.get_text_config(), "max_position_embeddings", None)
    if cfg.max_context:
        return cfg.max_context
    if not native:
        raise EngineError("engine.max_context: the model config has no max_position_embeddings; set it")
    return int(native)


def load_hf_engine(cfg: EngineConfig, model_id: str, revision: str | None = None,
                   adapter_path: str | None = None, trust_remote_code: bool = False) -> HFEngine:
    device = resolve_device(cfg.device)
    dtype = cfg.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    tokenizer = load_tokenizer(model_id, revision, trust_remote_code)
    model = load_causal_lm(model_id, revision, trust_remote_code, dtype=dtype, device=device)
    if adapter_path:
        if not Path(adapter_path).is_dir():
            raise EngineError(f"adapter path {adapter_path} does not exist")
        from peft import PeftModel

        # merged: inference needs no adapter bookkeeping, and outputs equal the adapted model
        model = PeftModel.from_pretrained(model, adapter_path).merge_and_unload().eval()
    return HFEngine(
        model_id=model_id,
        model=model,
        tokenizer=tokenizer,
        max_context=context_window(cfg, model.config),
        truncation=cfg.truncation,
        max_batch_size=cfg.max_batch_size,
        cpu_threads=cfg.cpu_threads,
    )
