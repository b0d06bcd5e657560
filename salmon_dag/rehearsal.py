"""A rehearsal of a real profile on the CPU: the same profile with only its sizes shrunk.

``rehearse: true`` in a profile (``salmon run --profile llama2-70b-qlora --rehearse``) keeps every
setting of the real run except four kinds, each recorded with its real value and why:

* **model size**: a Llama-2-shaped model with random weights and a Llama-style tokenizer, built
  here (``base_model.kind: random``; grouped-query attention kept where the real model has it);
* **counts**: prompts, steps, rollouts, tokens per answer, accumulation, benchmark limits;
* **device**: the CPU, one vLLM process, two launched ranks per training stage;
* **data sources**: Hub datasets replaced by small local files in the same formats.

Two more where the CPU or random weights force them: QLoRA and the paged optimizer stay only when
bitsandbytes is installed (its CPU backend runs them); the self-align quality filters, which random
text cannot pass, are opened; the benchmarks' OpenAI-compatible judge needs an endpoint
(``$SALMON_JUDGE_BASE_URL``), else the reward model grades. Everything else (vLLM generation, LoRA
shapes, SALMON's subsets and label noise, rule scope, PMP, adapter saves, the ``accelerate``
launcher and DeepSpeed ZeRO where set, PPO's arithmetic) runs as on the GPUs.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from collections.abc import Sequence
from typing import Any

from salmon_dag.config import RehearsalChange, paths_overlap

# local files in the formats of the Hub sets they replace (original text of this project)
REHEARSAL_DATA = "salmon_dag/data/rehearsal"
PROMPT_FILES = {"oasst1": f"{REHEARSAL_DATA}/oasst1_mini.jsonl", "dolly": f"{REHEARSAL_DATA}/dolly_mini.jsonl"}
HUMAN_PAIRS = f"{REHEARSAL_DATA}/hh_rlhf_mini.jsonl"
SHP_PAIRS = f"{REHEARSAL_DATA}/shp_mini.jsonl"
# Llama-2 shapes the random model keeps: heads per key/value head (70b: grouped-query attention)
GQA_GROUPS = {"meta-llama/Llama-2-70b-hf": 8, "meta-llama/Llama-2-70b-chat-hf": 8}
RANKS = 2  # launched ranks per training stage (the CPU's two cores)
NEW_TOKENS = 16
TRAIN_STEPS = 2


class _Editor:
    """Edits a profile's JSON form, recording each change that alters a value."""

    def __init__(self, data: dict[str, Any]):
        self.data = copy.deepcopy(data)
        self.changes: list[RehearsalChange] = []

    def get(self, path: str) -> Any:
        node: Any = self.data
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def set(self, path: str, value: Any, why: str) -> None:
        *parents, last = path.split(".")
        node = self.data
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        real = node.get(last)
        if real != value:
            node[last] = value
            self.changes.append(RehearsalChange(path=path, real=real, rehearsal=value, why=why))

    def at_most(self, path: str, value: int, why: str = "counts") -> None:
        """``path`` capped at ``value`` (unset, i.e. unbounded, counts as above it)."""
        current = self.get(path)
        if current is None or current > value:
            self.set(path, value, why)


def _bitsandbytes() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


def _base_model(ed: _Editor) -> None:
    real_id = ed.get("base_model.model_id") or ed.get("base_model.kind")
    groups = GQA_GROUPS.get(real_id, 1)
    ed.set("base_model.kind", "random", "model size: random weights of the real model's shape, built here")
    ed.set("base_model.model_id", None, "model size")
    ed.set("base_model.random", {"like": real_id, "num_heads": 2, "num_kv_heads": 1 if groups > 1 else 2},
           "model size: 2 layers, hidden 128, head_dim 64 (vLLM's CPU kernels), GQA kept" if groups > 1
           else "model size: 2 layers, hidden 128, head_dim 64 (vLLM's CPU kernels)")


def _engine(ed: _Editor) -> None:
    ed.set("engine.device", "cpu", "device")
    ed.set("engine.tensor_parallel_size", 1, "device: one CPU process")


def _prompt_sources(ed: _Editor) -> None:
    sources = []
    for src in ed.get("prompt_pool.sources"):
        if src.get("type") == "hf" and src.get("format") in PROMPT_FILES:
            src = {**src, "type": "jsonl", "path": PROMPT_FILES[src["format"]], "split": "train"}
        sources.append(src)
    ed.set("prompt_pool.sources", sources, "data sources: Hub sets replaced by local files in their formats")


def _quantization(ed: _Editor, stage: str) -> None:
    if _bitsandbytes():
        return
    if (ed.get(f"{stage}.lora") or {}).get("quantization", "none") != "none":
        ed.set(f"{stage}.lora.quantization", "none", "cpu: bitsandbytes is not installed (LoRA without 4-bit)")
    if ed.get(f"{stage}.optimizer") == "paged_adamw_32bit":
        ed.set(f"{stage}.optimizer", "adamw_torch", "cpu: bitsandbytes is not installed")


def _training(ed: _Editor, stage: str) -> None:
    _quantization(ed, stage)
    ed.set(f"{stage}.max_steps", TRAIN_STEPS, "counts")
    ed.at_most(f"{stage}.gradient_accumulation_steps", 2)
    ed.at_most(f"{stage}.per_device_batch_size", 2)
    ed.set(f"{stage}.launcher", "accelerate", "device: launched ranks, as on the GPUs")
    ed.set(f"{stage}.num_processes", RANKS, "device: two CPU ranks")


def _self_align_and_pairs(ed: _Editor) -> None:
    ed.at_most("self_align.max_prompts", 4)
    ed.at_most("self_align.max_new_tokens", NEW_TOKENS)
    why = "random weights: their text cannot pass the quality filters"
    ed.set("self_align.keep_truncated", True, why)
    ed.set("self_align.min_words", 1, why)
    ed.set("self_align.min_distinct_trigram_ratio", 0.0, why)
    ed.set("self_align.max_filtered_share", 1.0, why)
    ed.at_most("pairs.max_prompts", 8)
    ed.at_most("pairs.max_new_tokens", NEW_TOKENS)
    ed.at_most("judge.max_pairs", 8)
    # SALMON's "zero" drops a verdict whose two orders disagree; a random judge prefers one letter
    # whatever it reads, so every verdict would be dropped and the reward model get no data
    ed.set("judge.inconsistent", "mean", "random weights: a random judge's verdicts never agree across both orders")


def _reward_model(ed: _Editor) -> None:
    _training(ed, "reward_model")
    # one local file in HH-RLHF's format for both: PMP and the evaluation take disjoint halves
    source = {"source": HUMAN_PAIRS, "split": "train"}
    why = "data sources: one local file in HH-RLHF's format (PMP and evaluation: disjoint halves)"
    if ed.get("reward_model.pmp") is not None:
        ed.set("reward_model.pmp.data", source, why)
        more = [{**src, "source": SHP_PAIRS} if src.get("format") == "shp" else {**src, "source": HUMAN_PAIRS}
                for src in ed.get("reward_model.pmp.more_data") or []]
        ed.set("reward_model.pmp.more_data", more, "data sources: local files in their formats")
        ed.set("reward_model.pmp.max_steps", TRAIN_STEPS, "counts")
    if ed.get("reward_model.human_eval") is not None:
        ed.set("reward_model.human_eval", source, why)
    ed.at_most("reward_model.human_eval_max_pairs", 8)


def _ppo(ed: _Editor) -> None:
    _training(ed, "ppo")
    ed.at_most("ppo.rollout_batch_size", 4)
    ed.at_most("ppo.max_new_tokens", NEW_TOKENS)
    ed.at_most("ppo.forward_batch_size", 4)
    ed.at_most("ppo.save_every", 1)
    ed.at_most("ppo.samples_every", 1)


def _benchmarks(ed: _Editor) -> None:
    judge = ed.get("benchmarks.judge") or {}
    if judge.get("kind") == "openai" and not os.environ.get(judge.get("base_url_env", "SALMON_JUDGE_BASE_URL")):
        ed.set("benchmarks.judge.kind", "reward_model",
               f"no judge endpoint (${judge.get('base_url_env', 'SALMON_JUDGE_BASE_URL')} unset): the reward model grades")
    local = "data sources: the bundled small files in the same formats"
    ed.set("benchmarks.mt_bench.questions", {"source": "bundled:mt_bench_mini.jsonl", "split": "train"}, local)
    ed.set("benchmarks.win_rate.instructions", {"source": "bundled:instructions_mini.jsonl", "split": "train"}, local)
    ed.set("benchmarks.gsm8k.data", {"source": "bundled:gsm8k_mini.jsonl", "split": "test"}, local)
    if ed.get("benchmarks.gsm8k.fewshot") is not None:
        ed.set("benchmarks.gsm8k.fewshot", {"source": "bundled:gsm8k_mini.jsonl", "split": "train"}, local)
    for bench in ("mt_bench", "win_rate", "gsm8k", "humaneval"):
        ed.at_most(f"benchmarks.{bench}.limit", 2)
    for field in ("mt_bench.max_new_tokens", "win_rate.max_new_tokens", "gsm8k.max_gen_toks",
                  "humaneval.max_new_tokens", "judge.max_new_tokens"):
        ed.at_most(f"benchmarks.{field}", NEW_TOKENS)


def _rm_benchmarks(ed: _Editor) -> None:
    files = ed.get("rm_benchmarks.files") or {}
    local = {"source": "bundled:rm_bench_mini.jsonl", "split": "test"}
    for name in files:
        ed.set(f"rm_benchmarks.files.{name}", local, "data sources: the bundled small file in the same format")
    if ed.get("rm_benchmarks.compare"):
        ed.set("rm_benchmarks.compare", [], "no Hub downloads: the compared public reward models are not loaded")


def rehearsal_data(real: dict[str, Any]) -> tuple[dict[str, Any], list[RehearsalChange]]:
    """The rehearsal of a real profile's JSON form (validated): (its JSON form, the changes)."""
    ed = _Editor(real)
    _base_model(ed)
    _engine(ed)
    _prompt_sources(ed)
    _self_align_and_pairs(ed)
    for stage in ("sft",):
        _training(ed, stage)
    _reward_model(ed)
    _rm_benchmarks(ed)
    _ppo(ed)
    _benchmarks(ed)
    return ed.data, ed.changes


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        return [leaf for key, sub in value.items() for leaf in _leaves(sub, f"{path}.{key}")]
    return [(path, value)]


def stage_record(profile: Any, sections: Sequence[str]) -> dict[str, Any]:
    """What a rehearsal did to the settings a stage reads (``sections``): the changes (real value,
    rehearsal value, why) and every other setting, kept as in the real profile."""
    changes = profile.rehearsal.for_sections(sections)
    kept = [(path, value) for section, values in profile.section_values(*sections).items()
            for path, value in _leaves(values, section) if not any(paths_overlap(path, c.path) for c in changes)]
    return {"of": profile.rehearsal.of, "changed": [c.model_dump(mode="json") for c in changes], "kept": kept}
