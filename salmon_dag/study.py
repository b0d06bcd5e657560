"""A multi-seed study of the tiny profile's claims (``salmon bench seeds``).

Each seed reruns the graph (or its tail, ``--from ASSET``) in a project of its own under
``<out>/<precision>-seed<k>/`` (principles copy, derived ``profile.yaml``, ``warehouse/``), through
the ``salmon`` CLI in a subprocess; then every claim the README makes about the tiny profile is read
back from that seed's warehouse as one row (value, threshold, direction, passed). The rows of all
seeds go to the project warehouse's ``seed_study`` table (view ``seed_study_summary``) and a plot.

Plain Python: the one Dagster read (the seed's failed asset checks) is passed in by the CLI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from salmon_dag.base_model.corpus import resolve_shared_dir
from salmon_dag.config import PROFILES_DIR, Profile, load_profile
from salmon_dag.principles import PrincipleError
from salmon_dag.claims import Claim, steer_claims, steer_means, warehouse_claims
from salmon_dag.rl.intervention import run_intervention_claims
from salmon_dag.warehouse import Warehouse, WarehouseError, atomic_path

STUDY_TABLE = "seed_study"
STUDY_PLOT = Path("plots") / "seed_study.png"
DEFAULT_OUT = ".study"  # under the project warehouse: a dot folder, so never taken for a table
# a seed's rows replace an earlier study's rows with the same key, and only those
STUDY_KEY = ("precision", "shared_data", "seed")
STUDY_SCHEMA: dict[str, pl.DataType] = {
    "seed": pl.Int64, "precision": pl.Utf8, "shared_data": pl.Boolean, "claim": pl.Utf8, "value": pl.Float64,
    "threshold": pl.Float64, "direction": pl.Utf8, "passed": pl.Boolean, "detail": pl.Utf8,
}
Log = Callable[[str], None]


class StudyError(RuntimeError):
    """A seed could not be run or read (message is one line naming the seed and the file)."""


# --------------------------------------------------------------------------- seed projects
def seed_list(seeds: int, seed_list_text: str | None) -> list[int]:
    """``--seed-list 1,2,3`` if given, else 1..``seeds``."""
    if seed_list_text is None:
        if seeds < 1:
            raise StudyError(f"--seeds must be at least 1 (got {seeds})")
        return list(range(1, seeds + 1))
    try:
        chosen = [int(s) for s in seed_list_text.split(",") if s.strip()]
    except ValueError:
        raise StudyError(f"--seed-list must be comma-separated integers (got {seed_list_text!r})") from None
    if not chosen or len(set(chosen)) != len(chosen):
        raise StudyError(f"--seed-list must name distinct seeds (got {seed_list_text!r})")
    return chosen


def profile_file(name_or_path: str) -> Path:
    """The YAML file of a profile: a bundled name resolves to ``salmon_dag/profiles/<name>.yaml``."""
    path = Path(name_or_path)
    return path.resolve() if path.suffix in (".yaml", ".yml") else PROFILES_DIR / f"{name_or_path}.yaml"


def derived_profile(parent: Path, seed: int, precision: str | None) -> dict[str, Any]:
    """A profile that is ``parent`` (absolute path) with ``seed`` and, when given, the tiny base
    model's training precision."""
    data: dict[str, Any] = {"extends": str(parent), "name": f"{parent.stem}-seed{seed}", "seed": seed}
    if precision is not None:
        data["base_model"] = {"tiny": {"precision": precision}}
    return data


def shared_data_visible(profile: Profile) -> bool:
    """Whether the profile's ``base_model.tiny.shared_data_dir`` (``../shared/data``) exists here."""
    return resolve_shared_dir(profile.base_model.tiny.shared_data_dir) is not None


def copy_warehouse(src: Path, dst: Path, skip: Path) -> None:
    """Copy a materialized warehouse (tables, models, Dagster instance) to ``dst``, pointing its
    model manifests and DuckDB views at the copy; ``skip`` (the study folder) and the earlier
    study's table and plots stay behind."""
    src, skip = src.resolve(), skip.resolve()

    def ignore(folder: str, names: list[str]) -> set[str]:
        here = Path(folder).resolve()
        left = {n for n in names if n.endswith(".lock") or here / n == skip}
        return left | ({STUDY_TABLE, STUDY_PLOT.parts[0]} & set(names) if here == src else set())

    shutil.copytree(src, dst, ignore=ignore)
    for manifest in (dst / "models").glob("*.json"):
        manifest.write_text(manifest.read_text().replace(str(src), str(dst)))
    Warehouse(dst).refresh_views()


@dataclass(frozen=True)
class SeedProject:
    """One seed's project folder and how to run the ``salmon`` CLI on it."""

    root: Path
    seed: int
    cwd: Path  # where the CLI runs: relative data paths (../shared/data) resolve as for the caller

    @property
    def profile(self) -> Path:
        return self.root / "profile.yaml"

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def principles(self) -> Path:
        return self.root / "principles"

    @property
    def log_path(self) -> Path:
        return self.root / "salmon.log"

    def env(self) -> dict[str, str]:
        env = {**os.environ, "SALMON_PROFILE": str(self.profile), "SALMON_WAREHOUSE": str(self.warehouse),
               "SALMON_PRINCIPLES": str(self.principles), "PYTHONUNBUFFERED": "1"}
        env.pop("DAGSTER_HOME", None)  # the CLI puts the instance in the seed's warehouse
        return env

    def salmon(self, args: list[str], progress: Log) -> None:
        """``salmon ARGS`` on this seed's project; its output goes to the log file (appended) and,
        line by line, to ``progress``. Raises StudyError with the exit code and the log path."""
        command = [sys.executable, "-m", "assets_defs.cli", *args]
        last_error = ""
        with self.log_path.open("a", encoding="utf-8") as log:
            log.write(f"$ salmon {' '.join(args)}\n")
            log.flush()
            with subprocess.Popen(command, env=self.env(), cwd=self.cwd, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
                for line in proc.stdout:
                    log.write(line)
                    if line.strip():
                        progress(line.strip())
                    if line.startswith("error:"):
                        last_error = line.removeprefix("error:").strip()
            code = proc.returncode
        if code:
            cause = f": {last_error}" if last_error else ""
            raise StudyError(f"seed {self.seed}: salmon {args[0]} exited with {code}{cause} (log: {self.log_path})")


def prepare_seed(root: Path, seed: int, profile: Path, precision: str | None, principles: Path,
                 warehouse: Path | None, reuse: bool = False) -> SeedProject:
    """A fresh seed folder: principles copy, derived profile, and (``--from``) a copy of the
    project ``warehouse``. An earlier study's folder of the same name is replaced, except with
    ``reuse``: then its warehouse (the seed's own upstream assets) stays and only the principles
    and the profile are written anew."""
    project = SeedProject(root, seed, Path.cwd())
    if reuse:
        if not Warehouse(project.warehouse).tables():
            raise StudyError(f"seed {seed}: --reuse needs an earlier study's warehouse at {project.warehouse}, "
                             "which has no tables: run the study once without --reuse")
        shutil.rmtree(project.principles, ignore_errors=True)
    elif root.exists():
        shutil.rmtree(root)  # a leftover warehouse would look fresh and build nothing
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(principles, project.principles)
    project.profile.write_text(yaml.safe_dump(derived_profile(profile, seed, precision), sort_keys=False))
    if warehouse is not None and not reuse:
        copy_warehouse(warehouse, project.warehouse, skip=root.parent)
    return project


# --------------------------------------------------------------------------- the study
@dataclass(frozen=True)
class StudyPlan:
    """What ``salmon bench seeds`` was asked for (paths absolute)."""

    profile: str  # bundled name or .yaml path
    warehouse: Path
    principles: Path
    out: Path
    seeds: list[int]
    precision: str | None  # as given; None keeps the profile's
    from_asset: str | None
    steer: bool
    intervention: bool
    # with from_asset: rebuild in each seed's warehouse of an earlier study (its own base model
    # and SFT policy), not in a copy of the project warehouse
    reuse: bool = False
    # the other outputs of from_asset's multi-asset (ppo_steps: ppo_policy, ppo_samples): they are
    # rebuilt with it, so what reads them is rebuilt too
    from_siblings: tuple[str, ...] = ()

    def run_args(self) -> list[str]:
        # key:ASSET+ is every asset downstream (the legacy ASSET+ would be one layer only)
        if not self.from_asset:
            return ["run", "-q"]
        tail = " or ".join(f"key:{key}+" for key in (self.from_asset, *self.from_siblings))
        # reuse: the principle files are copied anew, so their assets are rebuilt too (the RL
        # stage refuses an rl.yaml newer than its principles/rl asset)
        return ["run", "-q", "--select", f"key:principles/* or {tail}" if self.reuse else tail]


def run_study(plan: StudyPlan, failed_checks: Callable[[Path], list[str]], progress: Log, log: Log) -> pl.DataFrame:
    """Run every seed of ``plan`` and return its claim rows (STUDY_SCHEMA). ``failed_checks`` reads
    the failed asset checks from a Dagster instance folder; ``progress`` gets the running seed's
    output line by line, ``log`` one line per finished seed."""
    if plan.reuse and not plan.from_asset:
        raise StudyError("--reuse rebuilds a tail of earlier seed warehouses: give --from ASSET too")
    if plan.from_asset and not plan.reuse and not Warehouse(plan.warehouse).tables():
        raise StudyError(f"--from {plan.from_asset} reuses the project warehouse, but {plan.warehouse} has no "
                         "tables: salmon run first")
    base = load_profile(plan.profile)
    precision = plan.precision or base.base_model.tiny.precision
    shared = shared_data_visible(base)
    frames = []
    for i, seed in enumerate(plan.seeds, 1):
        started = time.monotonic()
        project = prepare_seed(plan.out / f"{precision}-seed{seed}", seed, profile_file(plan.profile), plan.precision,
                               plan.principles, plan.warehouse if plan.from_asset else None, plan.reuse)
        running = _prefixed(progress, f"seed {seed} ({i}/{len(plan.seeds)}): ")
        project.salmon(plan.run_args(), running)
        profile = load_profile(str(project.profile))
        wh = Warehouse(project.warehouse)
        try:
            rows = warehouse_claims(wh, profile.benchmarks.reference_policy, failed_checks(wh.dagster_home))
            if plan.intervention:
                rows += run_intervention_claims(project.root, lambda args: project.salmon(args, running))
            # after the intervention: steering is claimed with it in place (rl.yaml's always-on lines)
            if plan.steer:
                rows += steer_claims(steer_means(wh, project.principles, profile, running))
        except (WarehouseError, PrincipleError) as exc:  # a table or principle file the run did not leave
            raise StudyError(f"seed {seed}: {str(exc).splitlines()[0]} (log: {project.log_path})") from None
        frame = claims_frame(rows, seed, precision, shared)
        failed = frame.filter(pl.col("passed").not_())["claim"].to_list()
        log(f"seed {seed} ({i}/{len(plan.seeds)}): {frame.height} claims, "
            f"{'all passed' if not failed else f'{len(failed)} failed'} in {time.monotonic() - started:.0f} s "
            f"({project.root})")
        frames.append(frame)
    return pl.concat(frames)


def _prefixed(log: Log, prefix: str) -> Log:
    return lambda line: log(prefix + line)


def claims_frame(rows: list[Claim], seed: int, precision: str, shared_data: bool) -> pl.DataFrame:
    """One seed's claims as rows of the ``seed_study`` table."""
    keyed = [{"seed": seed, "precision": precision, "shared_data": shared_data, **r} for r in rows]
    return pl.DataFrame(keyed, schema=STUDY_SCHEMA).select(list(STUDY_SCHEMA))


def aggregate(rows: pl.DataFrame) -> pl.DataFrame:
    """Per (claim, precision, shared_data), in first-seen order: the seeds and their values, n,
    mean, std (ddof=1; 0 for one value), min, max, threshold, direction, and ``passed_all`` (passed
    in every seed; None for informational claims). ``seed_study_summary`` is the same in SQL."""
    n_values = pl.col("value").count()
    return rows.sort("seed", maintain_order=True).group_by(
        ["claim", "precision", "shared_data"], maintain_order=True).agg(
        pl.col("seed"), pl.col("value").alias("values"), pl.len().alias("n"),
        pl.col("value").mean().alias("mean"),
        pl.when(n_values > 1).then(pl.col("value").std(ddof=1)).when(n_values == 1).then(0.0).alias("std"),
        pl.col("value").min().alias("min"), pl.col("value").max().alias("max"),
        pl.col("threshold").first(), pl.col("direction").first(),
        pl.when(pl.col("passed").is_not_null().any()).then(pl.col("passed").all()).alias("passed_all"),
    )


def store(warehouse: Warehouse, rows: pl.DataFrame) -> pl.DataFrame:
    """Write ``rows`` into the ``seed_study`` table, replacing the earlier rows of the same
    (precision, shared_data, seed) and keeping all others; returns the whole table."""
    if warehouse.table_path(STUDY_TABLE).is_file():
        kept = warehouse.read_table(STUDY_TABLE).join(rows.select(STUDY_KEY).unique(), on=list(STUDY_KEY), how="anti")
        rows = pl.concat([kept, rows], how="diagonal_relaxed").select(list(STUDY_SCHEMA))
    table = rows.sort(["precision", "shared_data", "seed"], maintain_order=True)
    warehouse.write_table(STUDY_TABLE, table)
    return table


def margin(value: float | None, threshold: float | None, direction: str | None) -> float | None:
    """How far a value is on the passing side of its threshold (negative: failing), scaled by the
    threshold's size when that is over 1, so claims of different units share one axis."""
    if value is None or threshold is None:
        return None
    signed = value - threshold if direction in (">", ">=") else threshold - value
    return signed / max(1.0, abs(threshold))


def plot_study(table: pl.DataFrame, path: Path) -> None:
    """One panel: a row per claim with a threshold, a point per seed at its margin over the
    threshold (green passed, red failed), one marker per (precision, shared data); written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = table.filter(pl.col("threshold").is_not_null() & pl.col("value").is_not_null())
    claims = rows["claim"].unique(maintain_order=True).to_list()
    groups = rows.select("precision", "shared_data").unique(maintain_order=True).rows()
    fig = Figure(figsize=(8, 1.2 + 0.32 * max(1, len(claims))), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for g, (precision, shared) in enumerate(groups):
        part = rows.filter((pl.col("precision") == precision) & (pl.col("shared_data") == shared))
        offset = (g - (len(groups) - 1) / 2) * 0.25 / max(1, len(groups) - 1)
        ys = [claims.index(c) + offset for c in part["claim"]]
        xs = [margin(*r) for r in part.select("value", "threshold", "direction").rows()]
        colors = ["#2a9d55" if p else "#d62728" for p in part["passed"]]
        ax.scatter(xs, ys, c=colors, marker="osD^v"[g % 5], s=28, alpha=0.8,
                   label=f"{precision}, shared data {'yes' if shared else 'no'}: {part['seed'].n_unique()} seed(s)")
    ax.axvline(0, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_yticks(range(len(claims)), claims, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("margin over the threshold (> 0 passes; scaled by |threshold| when > 1)", fontsize=8)
    ax.set_title(f"seed study: {rows.select('precision', 'shared_data', 'seed').n_unique()} runs", fontsize=10)
    ax.tick_params(axis="x", labelsize=7)
    if groups:
        for handle in ax.legend(fontsize=7, loc="best").legend_handles:
            handle.set_color("grey")  # the marker tells the group; colour is pass / fail
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
