"""What ``benchmark_scores`` shows its user: a comparison table and one bar plot per benchmark."""

from __future__ import annotations

import io
import math

import polars as pl

from salmon_dag.benchmarks.grading import WIN_RATE
from salmon_dag.benchmarks.stage import HEADLINE
from salmon_dag.images import png_markdown

# the win rate is against the reference policy, which scores 0.5 against itself by definition
PAR = {WIN_RATE: 0.5}


def _fmt(value: float | None, stderr: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.3f} ± {stderr:.3f}" if stderr else f"{value:.3f}"


def comparison_markdown(scores: pl.DataFrame) -> str:
    """Rows: benchmark / metric; columns: policies (value ± standard error, n in the last column)."""
    policies = list(dict.fromkeys(scores["policy"].to_list()))
    lines = ["| benchmark | metric | " + " | ".join(policies) + " | n |", "|---|---|" + "---|" * (len(policies) + 1)]
    for (bench, metric), group in scores.group_by(["benchmark", "metric"], maintain_order=True):
        cells = {r["policy"]: _fmt(r["value"], r["stderr"]) for r in group.iter_rows(named=True)}
        n = max(group["n"].to_list())
        lines.append(f"| {bench} | {metric} | " + " | ".join(cells.get(p, "") for p in policies) + f" | {n} |")
    return "\n".join(lines)


def headline(scores: pl.DataFrame, benchmark: str) -> pl.DataFrame:
    """The rows of ``benchmark``'s headline metric (the first of HEADLINE's names present)."""
    rows = scores.filter(pl.col("benchmark") == benchmark)
    for metric in HEADLINE.get(benchmark, ()):
        hit = rows.filter(pl.col("metric") == metric)
        if hit.height:
            return hit
    return rows.head(0)


def bar_plot_png(scores: pl.DataFrame, benchmark: str) -> bytes | None:
    """A bar per policy of ``benchmark``'s headline metric, with standard-error whiskers."""
    # the object-oriented Agg canvas, as plot_curves: no pyplot, no global backend switch
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = headline(scores, benchmark).filter(pl.col("value").is_not_null())
    if rows.height == 0:
        return None
    fig = Figure(figsize=(4.2, 2.6), dpi=80)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.bar(rows["policy"].to_list(), rows["value"].to_list(), yerr=rows["stderr"].fill_null(0).to_list(),
           capsize=4, color="#4C72B0")
    if benchmark in PAR:
        ax.axhline(PAR[benchmark], color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"{benchmark}: {rows['metric'][0]}", fontsize=10)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def bar_plot_markdown(scores: pl.DataFrame, benchmark: str) -> str:
    png = bar_plot_png(scores, benchmark)
    if png is None:
        return f"no {benchmark} scores"
    return png_markdown(png, benchmark)


def below_reference(scores: pl.DataFrame, policy: str, reference: str) -> list[str]:
    """Benchmarks on which ``policy`` scores below ``reference`` on the headline metric (for the
    win rate, which is against the reference already: below 0.5)."""
    out = []
    for bench in scores.filter(pl.col("policy") == policy)["benchmark"].unique(maintain_order=True).to_list():
        rows = headline(scores, bench)
        mine = rows.filter(pl.col("policy") == policy)["value"].to_list()
        theirs = [PAR[bench]] if bench in PAR else rows.filter(pl.col("policy") == reference)["value"].to_list()
        if mine and theirs and mine[0] is not None and theirs[0] is not None and mine[0] < theirs[0]:
            out.append(f"{bench} {rows['metric'][0]}: {mine[0]:.3f} < {theirs[0]:.3f}")
    return out
