"""Principle-driven self-alignment (Dromedary): prompting, parsing and filtering of base-model answers.

The base model answers each training prompt with the self-align principles and exemplars in
context (``templates.self_align_prompt``). Its continuation holds internal thoughts, then the
answer after ``templates.ANSWER_TAG``; only the answer is kept for principle engraving (SFT
without the principles in context).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl

from salmon_dag.self_align.config import SelfAlignConfig
from salmon_dag.engine.base import Completion
from salmon_dag.principles import PrincipleSet, SelfAlignFile
from salmon_dag.stage import DataStage, Log, Reads, StageInputs, TableResult
from salmon_dag.templates import (
    ANSWER_TAG,
    ASSISTANT_TAG,
    PRINCIPLES_HEADER,
    TURN_SEPARATOR,
    USER_TAG,
    self_align_prompt,
)

_WORD = re.compile(r"\w+", re.UNICODE)
# The smallest echo of a principle definition that counts as prompt leakage.
LEAK_MIN_CHARS = 40


def build_prompt(pset: PrincipleSet, user_prompt: str) -> str:
    """The self-align prompt for one request, from a validated ``self_align.yaml``."""
    data = pset.data
    if not isinstance(data, SelfAlignFile):
        raise TypeError(f"{pset.path}: expected the self_align principle file, got kind {pset.kind!r}")
    return self_align_prompt(
        data.preamble,
        [(p.name, p.definition) for p in data.principles],
        [(e.prompt, e.internal_thoughts, e.answer) for e in data.exemplars],
        user_prompt,
    )


@dataclass(frozen=True)
class ParsedAnswer:
    internal_thoughts: str | None
    answer: str


def parse_generation(text: str) -> ParsedAnswer:
    """Split a continuation into internal thoughts and the answer.

    Anything after a turn marker (the model starting the next turn) is dropped. Without an
    ``Answer:`` tag the whole text is the answer and there are no internal thoughts.
    """
    # A continuation that re-opens the assistant turn ("### Assistant: ...") skipped the thoughts.
    stripped = text.lstrip()
    if stripped.startswith(ASSISTANT_TAG):
        text = stripped[len(ASSISTANT_TAG) :]
    cut = len(text)
    for marker in (TURN_SEPARATOR, f"\n{USER_TAG}", f"\n{ASSISTANT_TAG}"):
        pos = text.find(marker)
        if pos >= 0:
            cut = min(cut, pos)
    text = text[:cut]
    if ANSWER_TAG in text:
        thoughts, answer = text.split(ANSWER_TAG, 1)
        return ParsedAnswer(thoughts.strip() or None, answer.strip())
    return ParsedAnswer(None, text.strip())


def distinct_ngram_ratio(text: str, n: int = 3) -> float:
    """Share of distinct word n-grams: near 1 for ordinary prose, low for looping text."""
    words = [w.lower() for w in _WORD.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def leaks_principles(answer: str, pset: PrincipleSet) -> bool:
    """True when the answer echoes the principles block (its header or a principle definition)."""
    if PRINCIPLES_HEADER.lower() in answer.lower():
        return True
    low = " ".join(answer.lower().split())
    for _, p in pset.principles():
        definition = " ".join(p.definition.lower().split())
        probe = definition[:LEAK_MIN_CHARS]
        if len(probe) >= LEAK_MIN_CHARS and probe in low:
            return True
    return False


def filter_reason(
    answer: str,
    finish_reason: str,
    *,
    min_words: int,
    max_words: int,
    min_distinct_trigram_ratio: float,
    pset: PrincipleSet | None = None,
    keep_truncated: bool = False,
) -> str | None:
    """Why an answer is dropped (``empty``, ``truncated``, ``too_long``, ``too_short``,
    ``repetitive``, ``prompt_leak``), or None when it is kept."""
    words = len(_WORD.findall(answer))
    if not answer.strip():
        return "empty"
    if finish_reason != "stop" and not keep_truncated:
        return "truncated"
    if words > max_words:
        return "too_long"
    if words < min_words:
        return "too_short"
    if distinct_ngram_ratio(answer) < min_distinct_trigram_ratio:
        return "repetitive"
    if pset is not None and leaks_principles(answer, pset):
        return "prompt_leak"
    return None


SFT_DATA_SCHEMA: dict[str, pl.DataType] = {
    "prompt_id": pl.Utf8, "prompt": pl.Utf8, "response": pl.Utf8, "internal_thoughts": pl.Utf8,
    "raw_generation": pl.Utf8, "finish_reason": pl.Utf8, "prompt_tokens": pl.Int64,
    "response_tokens": pl.Int64, "filter_reason": pl.Utf8,
}


def sft_data(prompts: pl.DataFrame, generations: Sequence[Sequence[Completion]], prompt_tokens: Sequence[int],
             pset: PrincipleSet, cfg: SelfAlignConfig) -> pl.DataFrame:
    """``self_align_sft_data``: one row per training prompt (``prompt_id``, ``prompt``) with the
    answer parsed out of the base model's generation (its first completion), the internal
    thoughts, and why the answer is filtered (null: kept for SFT)."""
    rows = []
    for (pid, prompt), n_prompt, comps in zip(prompts.select("prompt_id", "prompt").iter_rows(), prompt_tokens,
                                              generations, strict=True):
        comp = comps[0]
        parsed = parse_generation(comp.text)
        reason = filter_reason(parsed.answer, comp.finish_reason, min_words=cfg.min_words, max_words=cfg.max_words,
                               min_distinct_trigram_ratio=cfg.min_distinct_trigram_ratio, pset=pset,
                               keep_truncated=cfg.keep_truncated)
        rows.append({
            "prompt_id": pid, "prompt": prompt, "response": parsed.answer,
            "internal_thoughts": parsed.internal_thoughts, "raw_generation": comp.text,
            "finish_reason": comp.finish_reason, "prompt_tokens": n_prompt,
            "response_tokens": len(comp.token_ids), "filter_reason": reason,
        })
    return pl.DataFrame(rows, schema=SFT_DATA_SCHEMA)


def filtered_counts(df: pl.DataFrame) -> tuple[int, dict[str, int]]:
    """(answers kept, filtered answers per reason) of an ``sft_data`` frame."""
    kept = df.filter(pl.col("filter_reason").is_null()).height
    return kept, dict(df.filter(pl.col("filter_reason").is_not_null()).group_by("filter_reason").len().iter_rows())


def run(inputs: StageInputs, log: Log = print) -> TableResult:
    """The stage: the base model answers the first ``self_align.max_prompts`` training prompts with
    the principles and exemplars in context; every answer is kept with its ``filter_reason``."""
    from salmon_dag.engine import SamplingParams, engine_for, generate_in_chunks
    from salmon_dag.prompt_pool import train_prompts

    cfg = inputs.section("self_align")
    pset, base = inputs.principles("self_align"), inputs.model("base_model")
    prompts = train_prompts(inputs.table("prompt_pool"), cfg.max_prompts)
    texts = [build_prompt(pset, p) for p in prompts["prompt"].to_list()]
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            seed=inputs.seed)
    with engine_for(inputs.section("engine"), base) as engine:
        prompt_tokens = [len(engine.encode(t)) for t in texts]
        log(f"self-align prompt: {prompt_tokens[0] if texts else 0} tokens")
        outputs = generate_in_chunks(engine, texts, params, "self-align", log=log, store=inputs.partial(),
                                     model=inputs.resume_key(base))
    df = sft_data(prompts, outputs, prompt_tokens, pset, cfg)
    kept, reasons = filtered_counts(df)
    log(f"self_align_sft_data: kept {kept}/{df.height}; filtered {reasons}")
    return TableResult(df, {"kept": kept, **{f"filtered/{r}": n for r, n in sorted(reasons.items())}},
                       principle_hash=pset.content_hash, model_id=base.model_id)


STAGE = DataStage("self_align_sft_data",
                  Reads(("self_align", "engine"), ("principles/self_align", "prompt_pool", "base_model")), run)
