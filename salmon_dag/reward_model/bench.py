"""The ``rm_benchmarks`` stage: the reward model, and any public reward model, on comparison files.

Every file the profile names (``rm_benchmarks.files``: RewardBench's format, ``prompt``, ``chosen``,
``rejected``[, ``subset``][, ``principles``]) is scored by the warehouse's reward model and by each
model in ``rm_benchmarks.compare`` (Hub ids or folders transformers loads as sequence classifiers;
they take no principles), one row per file x subset x model: the share of pairs whose chosen reply
scored higher. The tiny profile reads a small original file (``bundled:rm_bench_mini.jsonl``), the
real profiles RewardBench's ``filtered`` split. Plain Python: no dagster import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
from salmon_dag.benchmarks.config import BenchmarkSource
from salmon_dag.reward_model.config import RMBenchmarksConfig
from salmon_dag.stage import DataStage, Reads, StageInputs, TableResult

OURS = "reward_model"
OVERALL = "overall"
COLUMNS = {"file": pl.Utf8, "subset": pl.Utf8, "model": pl.Utf8, "n": pl.Int64, "accuracy": pl.Float64}


def read_comparisons(name: str, src: BenchmarkSource, limit: int | None) -> pl.DataFrame | None:
    """The file's rows (at most ``limit``), or None when an optional local file is missing."""
    from salmon_dag.benchmarks.data import read_records, source_exists
    from salmon_dag.reward_model.files import ScoreFileError

    if src.optional and not source_exists(src.source):
        return None
    try:
        rows = []
        for _, record in read_records(src.source, src.split, src.subset):
            rows.append(record)
            if limit is not None and len(rows) >= limit:
                break
    except FileNotFoundError as exc:
        raise ScoreFileError(f"rm_benchmarks.files.{name}: {exc}") from None
    if not rows:
        raise ScoreFileError(f"rm_benchmarks.files.{name}: {src.source} has no rows")
    missing = {"prompt", "chosen", "rejected"} - set(rows[0])
    if missing:
        raise ScoreFileError(f"rm_benchmarks.files.{name}: {src.source} lacks column(s) {', '.join(sorted(missing))} "
                             "(RewardBench's format: prompt, chosen, rejected[, subset])")
    return pl.DataFrame(rows, infer_schema_length=None)


class WithProgress:
    """A scorer that scores in chunks and logs a progress line after each: RewardBench's ~6,000
    replies on a 7B-8B reward model are a long step."""

    def __init__(self, scorer: Any, what: str, total: int, log: Callable[[str], None], chunk: int = 256):
        self.scorer, self.what, self.total, self.log, self.chunk, self.done = scorer, what, total, log, chunk, 0

    def score(self, prompts: list[str], responses: list[str], texts: Any) -> list[float]:
        from salmon_dag.progress import progress_line

        out: list[float] = []
        for i in range(0, len(prompts), self.chunk):
            out += self.scorer.score(prompts[i:i + self.chunk], responses[i:i + self.chunk], texts[i:i + self.chunk])
            self.done += len(prompts[i:i + self.chunk])
            self.log(progress_line("rm_benchmarks", self.done, self.total, f"replies ({self.what})"))
        return out


def accuracy_rows(file: str, model: str, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`~salmon_dag.reward_model.files.score_rows`' summary as table rows: overall, then each subset."""
    rows = [{"file": file, "subset": OVERALL, "model": model, "n": summary["rows"], "accuracy": summary["accuracy"]}]
    rows += [{"file": file, "subset": s, "model": model, "n": v["n"], "accuracy": v["accuracy"]}
             for s, v in summary.get("subsets", {}).items()]
    return rows


def side_by_side(table: pl.DataFrame) -> str:
    """Markdown: one line per file and subset, one column per model."""
    if table.is_empty():
        return "no files (rm_benchmarks.files)"
    models = table["model"].unique(maintain_order=True).to_list()
    wide = table.pivot(on="model", index=["file", "subset", "n"], values="accuracy")
    lines = ["| file | subset | n | " + " | ".join(models) + " |", "|---|---|---|" + "---|" * len(models)]
    for row in wide.iter_rows(named=True):
        cells = " | ".join("–" if row[m] is None else f"{row[m]:.3f}" for m in models)
        lines.append(f"| {row['file']} | {row['subset']} | {row['n']} | {cells} |")
    return "\n".join(lines)


def run(inputs: StageInputs, log: Callable[[str], None] = print) -> TableResult:
    """Score every configured file with the reward model and each compared model."""
    from salmon_dag.base_model.loading import resolve_device
    from salmon_dag.principles import principle_texts
    from salmon_dag.reward_model.checkpoint import checkpoint_dir, load_scorer
    from salmon_dag.reward_model.files import PlainRewardModel, ScoreFileError, score_rows

    cfg: RMBenchmarksConfig = inputs.section("rm_benchmarks")
    pset, ref = inputs.principles("reward_model"), inputs.model("reward_model")
    known = {p.name: p for p in principle_texts(pset)}
    unknown = [n for n in cfg.principles if n not in known]
    if unknown:
        raise ScoreFileError(f"rm_benchmarks.principles: unknown principle(s) {', '.join(map(repr, unknown))} "
                             f"in {pset.path}")
    default = [known[n].definition for n in cfg.principles]
    files = {name: read_comparisons(name, src, cfg.limit) for name, src in cfg.files.items()}
    skipped = sorted(name for name, df in files.items() if df is None)
    for name in skipped:
        log(f"rm_benchmarks: {cfg.files[name].source} not found; {name} skipped (optional)")
    files = {name: df for name, df in files.items() if df is not None}
    device = resolve_device(inputs.section("engine.device"))
    rows: list[dict[str, Any]] = []
    checkpoint = checkpoint_dir(ref)
    if files:
        scorers = [(OURS, lambda: load_scorer(checkpoint, device=device, batch_size=cfg.batch_size))]
        scorers += [(m, lambda m=m: PlainRewardModel(m, device=device, batch_size=cfg.batch_size,
                                                      max_len=cfg.compare_max_len)) for m in cfg.compare]
        for model, load in scorers:  # one model in memory at a time
            scorer = load()
            for name, df in files.items():
                scoring = WithProgress(scorer, f"{model} on {name}", 2 * df.height, log)
                _, summary = score_rows(scoring, df, default, known, f"rm_benchmarks.files.{name}")
                log(f"rm_benchmarks: {model} on {name}: accuracy {summary['accuracy']:.3f} ({summary['rows']} pairs)")
                rows += accuracy_rows(name, model, summary)
            del scorer
    table = pl.DataFrame(rows, schema=COLUMNS)
    overall = table.filter(pl.col("subset") == OVERALL)
    metadata: dict[str, Any] = {f"{f}/{m}": a for f, m, a in overall.select("file", "model", "accuracy").iter_rows()}
    metadata["side_by_side"] = side_by_side(table)
    if skipped:
        metadata["skipped"] = ", ".join(skipped)
    return TableResult(table, metadata, principle_hash=pset.content_hash, model_id=str(checkpoint))


STAGE = DataStage("rm_benchmarks", Reads(("rm_benchmarks", "engine.device"), ("reward_model", "principles/reward_model")),
                  run)
