"""The prompt pool: user prompts from configured sources, cleaned, deduplicated and tagged.

``build_from_config`` (``stage.py``) is the one entry point the pipeline needs; the pieces
(readers, format adapters, cleaning steps, the question-type heuristic) are importable for tests
and reuse. This package does not import dagster.
"""

from salmon_dag.lazy import lazy_exports

# Names are imported on first use: the profile loader imports this package's config.py, and must
# not pull in polars and datasketch with it (a bare GPU machine loads profiles without them).
_HOME = {
    "ADAPTERS": "sources",
    "POOL_SCHEMA": "cleaning",
    "REJECTS_SCHEMA": "cleaning",
    "RawPrompt": "sources",
    "RecordError": "sources",
    "Reject": "sources",
    "assign_split": "cleaning",
    "build_from_config": "stage",
    "build_prompt_pool": "cleaning",
    "classify_question_type": "classify",
    "detect_language": "cleaning",
    "load_source": "sources",
    "lsh_params": "cleaning",
    "normalize_text": "cleaning",
    "prompt_id": "cleaning",
    "rejects_frame": "cleaning",
    "shingles": "cleaning",
    "source_missing": "sources",
    "source_path": "sources",
    "STAGE": "stage",
    "train_prompts": "stage",
    "PromptPoolConfig": "config",
    "PromptSource": "config",
    "PromptFormat": "config",
}


__getattr__ = lazy_exports(__name__, _HOME)


__all__ = [
    "ADAPTERS",
    "POOL_SCHEMA",
    "PromptFormat",
    "PromptPoolConfig",
    "PromptSource",
    "REJECTS_SCHEMA",
    "RawPrompt",
    "RecordError",
    "Reject",
    "STAGE",
    "assign_split",
    "build_from_config",
    "build_prompt_pool",
    "classify_question_type",
    "detect_language",
    "load_source",
    "lsh_params",
    "normalize_text",
    "prompt_id",
    "rejects_frame",
    "shingles",
    "source_missing",
    "source_path",
    "train_prompts",
]
