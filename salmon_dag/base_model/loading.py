"""The project's only model/tokenizer loading code: a local checkpoint dir or a Hub id.

Every stage loads through here, so the tiny self-built model and a real Hub model take the same
``from_pretrained`` path, and load failures read as one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from salmon_dag.errors import first_line

DTYPES: dict[str, Any] = {
    "auto": "auto",
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}
_LOCAL_PREFIXES = ("/", "./", "../", "~")
_MAX_CAUSE_CHARS = 200


def _resolve(model_id: str) -> tuple[str, bool]:
    """(what to pass to from_pretrained, whether it is a local directory)."""
    path = Path(model_id).expanduser()
    if path.is_dir():
        return str(path), True
    if model_id.startswith(_LOCAL_PREFIXES):
        raise FileNotFoundError(f"base_model.model_id: local path {model_id} does not exist")
    return model_id, False


def _cause(exc: BaseException) -> str:
    return first_line(exc, _MAX_CAUSE_CHARS)


def load_pretrained(fn: Any, model_id: str, revision: str | None, trust_remote_code: bool, **kwargs: Any) -> Any:
    """Call ``fn.from_pretrained`` and turn any failure into a one-line OSError."""
    target, local = _resolve(model_id)
    try:
        return fn.from_pretrained(
            target, revision=revision, trust_remote_code=trust_remote_code, local_files_only=local, **kwargs
        )
    except Exception as exc:
        if local:  # the path names the model (the base model's, or a warehouse's models/<asset>)
            msg = f"cannot load local checkpoint {target} ({_cause(exc)})"
        else:
            rev = f" (revision {revision})" if revision else ""
            msg = (
                f"base_model.model_id: '{model_id}'{rev} is neither a local directory with config.json "
                f"nor reachable on the Hugging Face Hub (offline?): {_cause(exc)}"
            )
        raise OSError(msg) from None


def load_tokenizer(
    model_id: str, revision: str | None = None, trust_remote_code: bool = False
) -> PreTrainedTokenizerBase:
    """The tokenizer with a pad token and left padding (batched generation, last-token scoring)."""
    tok = load_pretrained(AutoTokenizer, model_id, revision, trust_remote_code)
    if tok.pad_token is None:
        # Reusing eos (masked out by the attention mask) keeps the vocab, and so the model, unchanged.
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    tok.padding_side = "left"
    return tok


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_causal_lm(
    model_id: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: str = "auto",
    device: str = "cpu",
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` in eval mode on ``device`` ("auto" picks CUDA if present)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model = load_pretrained(AutoModelForCausalLM, model_id, revision, trust_remote_code, dtype=DTYPES[dtype])
    return model.to(resolve_device(device)).eval()


def validate_pretrained(
    model_id: str, revision: str | None = None, trust_remote_code: bool = False
) -> dict[str, Any]:
    """Check that config and tokenizer load (no weights) and return the model's shape."""
    _, is_local = _resolve(model_id)
    config = load_pretrained(AutoConfig, model_id, revision, trust_remote_code)
    tok = load_tokenizer(model_id, revision, trust_remote_code)
    text = config.get_text_config()  # multimodal configs keep the LM shape in a sub-config
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if hidden and heads else None)
    return {
        "model_id": model_id,
        "model_type": config.model_type,
        "vocab_size": getattr(text, "vocab_size", None) or len(tok),
        "tokenizer_vocab_size": len(tok),
        "hidden_size": hidden,
        "num_layers": getattr(text, "num_hidden_layers", None),
        "head_dim": head_dim,
        "is_local": is_local,
    }
