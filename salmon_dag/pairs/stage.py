"""Response pairs (SALMON §1.2): two sampled SFT-policy responses per prompt (or several disjoint
pairs of its samples), the judge's input."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import polars as pl

from salmon_dag.engine.base import Completion
from salmon_dag.principles import PrincipleSet
from salmon_dag.rules import AnyRule, check_rule, compare_rule, is_comparative, word_count
from salmon_dag.stage import DataStage, Log, Reads, StageInputs, TableResult

PAIR_SCHEMA: dict[str, pl.DataType] = {
    "pair_id": pl.Utf8,
    "prompt_id": pl.Utf8,
    "prompt": pl.Utf8,
    "question_type": pl.Utf8,
    "response_a": pl.Utf8,
    "response_b": pl.Utf8,
    "finish_reason_a": pl.Utf8,
    "finish_reason_b": pl.Utf8,
    "tokens_a": pl.Int64,
    "tokens_b": pl.Int64,
    "words_a": pl.Int64,
    "words_b": pl.Int64,
}


def pair_id(prompt_id: str, a: str, b: str) -> str:
    """Stable id of a pair: the judge cache keys on it, so it depends on content only."""
    return hashlib.sha256(f"{prompt_id}\x00{a}\x00{b}".encode()).hexdigest()[:16]


def _decides(rule: AnyRule, prompt: str, a: str, b: str) -> bool:
    sa, sb = compare_rule(rule, prompt, a, b)
    return sa != sb


def contrast_pair(prompt: str, texts: Sequence[str], rules: Sequence[AnyRule]) -> tuple[int, int]:
    """Indices (i < j) of the two ``texts`` that the most ``rules`` tell apart: first the rules that
    judge one response on its own (boilerplate, language: the rare contrasts), then comparative
    ones (length); ties go to the earliest pair, so without a deciding rule it is (0, 1).

    Rules that decide the same pairs (two comparative length rules with the same margin, one
    preferring shorter, one longer) count once."""
    singles = list({r.model_dump_json(): r for r in rules if not is_comparative(r)}.values())
    lengths = list({r.min_relative_difference: r for r in rules if is_comparative(r)}.values())
    passes = [[check_rule(r, prompt, t) for r in singles] for t in texts]
    best, best_key = (0, 1), (-1, -1)
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            n_single = sum(pi != pj for pi, pj in zip(passes[i], passes[j]))
            n_length = sum(_decides(r, prompt, texts[i], texts[j]) for r in lengths)
            if (n_single, n_length) > best_key:
                best, best_key = (i, j), (n_single, n_length)
    return best


def pick_pairs(prompt: str, texts: Sequence[str], rules: Sequence[AnyRule], k: int) -> list[tuple[int, int]]:
    """Up to ``k`` disjoint pairs of indices into ``texts`` (each text in one pair at most): with
    ``rules``, greedily the pair :func:`contrast_pair` picks among the texts not yet used; without,
    the texts in order, two by two."""
    left = list(range(len(texts)))
    out = []
    while len(out) < k and len(left) >= 2:
        i, j = contrast_pair(prompt, [texts[x] for x in left], rules) if rules else (0, 1)
        out.append((left[i], left[j]))
        left = [x for n, x in enumerate(left) if n not in (i, j)]
    return out


def contrast_rules(pset: PrincipleSet, judged: Sequence[str] | None) -> list[AnyRule]:
    """The verifiable rules ``pairs.select: rule_contrast`` picks pairs by: those of the principles
    in reward_model.yaml (``pset``) that the judge judges (``judged``; all when None)."""
    return [p.rule for _, p in pset.principles() if p.rule is not None and (judged is None or p.name in judged)]


def make_pairs(prompts: pl.DataFrame, outputs: Sequence[Sequence[Completion]], min_words: int = 1,
               min_chars: int = 1, contrast_rules: Sequence[AnyRule] = (),
               pairs_per_prompt: int = 1) -> tuple[pl.DataFrame, dict[str, int]]:
    """At most ``pairs_per_prompt`` pairs per prompt: its sampled completions that have at least
    ``min_chars`` characters and ``min_words`` words (after stripping), without repeats, two by two
    in order (:func:`pick_pairs`; one pair: the first two).

    With ``contrast_rules`` (``pairs.select: rule_contrast``) the pair is instead the two distinct
    usable completions that the most rules tell apart (:func:`contrast_pair`; a second pair the
    same among the rest): a policy that shows a habit in a few percent of its samples then still
    gives the judge pairs that differ in it.

    ``prompts`` has prompt_id, prompt, question_type (row order = ``outputs`` order); each prompt
    has two or more completions (more than two: spare candidates for a policy whose samples are
    often too short). Returns the pairs and counts: prompts dropped by reason (``too_short``:
    fewer than two long-enough completions; ``identical``: no two different ones) and, under
    ``candidates/``, how many completions were sampled, how many were too short, and on how many
    prompts they made fewer than ``pairs_per_prompt`` pairs (``fewer_pairs``: kept, not dropped).
    """
    rows, counts = [], Counter()
    for (pid, prompt, qtype), comps in zip(prompts.select("prompt_id", "prompt", "question_type").iter_rows(), outputs):
        if len(comps) < 2:
            raise ValueError(f"prompt {pid}: expected at least 2 completions, got {len(comps)}")
        counts["candidates/sampled"] += len(comps)
        usable = []
        for c in comps:
            text = c.text.strip()
            if word_count(text) < min_words or len(text) < min_chars:
                counts["candidates/too_short"] += 1
            else:
                usable.append((text, c))
        if len(usable) < 2:
            counts["too_short"] += 1
            continue
        distinct, seen = [], set()
        for text, c in usable:
            if text not in seen:
                seen.add(text)
                distinct.append((text, c))
        if len(distinct) < 2:
            counts["identical"] += 1
            continue
        picked = pick_pairs(prompt, [t for t, _ in distinct], contrast_rules, pairs_per_prompt)
        if len(picked) < pairs_per_prompt:
            counts["candidates/fewer_pairs"] += 1
        for i, j in picked:
            (a, ca), (b, cb) = distinct[i], distinct[j]
            rows.append({
                "pair_id": pair_id(pid, a, b), "prompt_id": pid, "prompt": prompt, "question_type": qtype,
                "response_a": a, "response_b": b,
                "finish_reason_a": ca.finish_reason, "finish_reason_b": cb.finish_reason,
                "tokens_a": len(ca.token_ids), "tokens_b": len(cb.token_ids),
                "words_a": word_count(a), "words_b": word_count(b),
            })
    return pl.DataFrame(rows, schema=PAIR_SCHEMA), dict(counts)


def run(inputs: StageInputs, rules: Sequence[AnyRule] = (), log: Log = print) -> TableResult:
    """The stage: ``pairs.candidates`` samples of the SFT policy per training prompt (the first
    ``pairs.max_prompts``), made into pairs by :func:`make_pairs` (picked by ``rules`` when given)."""
    from salmon_dag.engine import SamplingParams, engine_for, generate_in_chunks
    from salmon_dag.prompt_pool import train_prompts
    from salmon_dag.templates import format_chat_prompt

    cfg, sft = inputs.section("pairs"), inputs.model("sft_model")
    prompts = train_prompts(inputs.table("prompt_pool"), cfg.max_prompts)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                            n=cfg.candidates, seed=inputs.seed)
    with engine_for(inputs.section("engine"), sft) as engine:
        outputs = generate_in_chunks(engine, [format_chat_prompt(p) for p in prompts["prompt"].to_list()], params,
                                     "response pairs", log=log, store=inputs.partial(), model=inputs.resume_key(sft))
    pairs, counts = make_pairs(prompts, outputs, min_words=cfg.min_words, min_chars=cfg.min_chars,
                               contrast_rules=rules, pairs_per_prompt=cfg.pairs_per_prompt)
    log(f"response_pairs: {pairs.height} pairs from {prompts.height} prompts; {counts}")
    sampled = counts.get("candidates/sampled", 0)
    metadata = {
        "prompts": prompts.height,
        # how often the policy's samples are too short to use, shown rather than hidden
        "share_candidates_too_short": round(counts.get("candidates/too_short", 0) / sampled, 3) if sampled else 0.0,
        **{(k if k.startswith("candidates/") else f"dropped/{k}"): n for k, n in sorted(counts.items())},
    }
    return TableResult(pairs, metadata, principle_hash=sft.lineage.get("principle_hash"),
                       model_id=sft.adapter_path or sft.model_id)


# reads the contrast rules from reward_model.yaml too: a rule edit re-samples the pairs (the
# Dagster layer hashes those rules into the code version), other edits of that file do not
STAGE = DataStage("response_pairs", Reads(("pairs", "engine"), ("sft_model", "prompt_pool")), run)
