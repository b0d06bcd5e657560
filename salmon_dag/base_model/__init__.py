"""The base model: corpus, tokenizer and pre-training of the tiny Llama, and model loading.

Plain Python (no dagster); ``assets_defs/base_model.py`` wires it into the pipeline.
"""

from salmon_dag.lazy import lazy_exports

# Names are imported on first use: torch/transformers take seconds to import, and the Dagster
# definitions (loaded by every CLI call) only need the corpus listing.
_HOME = {
    "SHARED_FILE_CAP": "corpus",
    "build_corpus": "corpus",
    "corpus_sources": "corpus",
    "hh_to_turns": "corpus",
    "load_causal_lm": "loading",
    "load_tokenizer": "loading",
    "validate_pretrained": "loading",
    "REQUIRED_HEAD_DIM": "pretrain",
    "pretrain_tiny_llama": "pretrain",
    "SPECIAL_TOKENS": "tokenizer",
    "train_tokenizer": "tokenizer",
}


__getattr__ = lazy_exports(__name__, _HOME)


__all__ = [
    "REQUIRED_HEAD_DIM",
    "SHARED_FILE_CAP",
    "SPECIAL_TOKENS",
    "build_corpus",
    "corpus_sources",
    "hh_to_turns",
    "load_causal_lm",
    "load_tokenizer",
    "pretrain_tiny_llama",
    "train_tokenizer",
    "validate_pretrained",
]
