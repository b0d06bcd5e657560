"""The ``salmon`` command line: run the pipeline, inspect its state, query the warehouse.

Dagster is imported only inside the commands that need it, so ``salmon sql`` stays quick.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from salmon_dag.config import DEFAULT_PROFILE, ProfileError, available_profiles, load_profile
from salmon_dag.errors import first_line
from salmon_dag.settings import ENV_PRINCIPLES, ENV_PROFILE, ENV_WAREHOUSE, Settings
from salmon_dag.warehouse import WarehouseError

app = typer.Typer(
    help="SALMON (Self-Alignment with Instructable Reward Models) as a Dagster pipeline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(soft_wrap=True)
err = Console(stderr=True)

ProfileOpt = Annotated[
    str, typer.Option("--profile", envvar=ENV_PROFILE, help=f"Profile name ({', '.join(available_profiles())}) or a .yaml path.")
]
WarehouseOpt = Annotated[str, typer.Option("--warehouse", envvar=ENV_WAREHOUSE, help="Warehouse root folder.")]
PrinciplesOpt = Annotated[str, typer.Option("--principles", envvar=ENV_PRINCIPLES, help="Principles folder.")]
FormatOpt = Annotated[str, typer.Option("--format", help="Output format: table, csv or json.")]
RehearseOpt = Annotated[bool, typer.Option(
    "--rehearse", help="The profile's CPU rehearsal: every setting kept but model size, counts, device and Hub "
    "data (default warehouse: warehouse/.rehearse/<profile>).")]


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _disk_full_line(exc: BaseException) -> str | None:
    """One line for a command that failed because its disk is full (any library's wording), naming
    the file it was writing where the error says, else the Dagster instance's records (SQLite says
    only "disk I/O error"); None for any other failure."""
    from salmon_dag.errors import DiskFullError, disk_full, exception_chain, is_no_space

    records = os.environ.get("DAGSTER_HOME") or "."
    if not is_no_space(exc, records):
        return None
    chain = exception_chain(exc)
    ours = next((str(e) for e in chain if isinstance(e, DiskFullError)), None)
    where = next((e.filename for e in chain if isinstance(e, OSError) and e.filename), None)
    return (f"{ours or disk_full(where or records)}: free some space and run again (a run cut off here is "
            "marked failed, and its accelerator slot freed, by the next salmon run)")


def _rehearsal(profile: str, warehouse: str) -> tuple[str, str]:
    """(profile file, warehouse) of ``profile``'s rehearsal: a profile file in the warehouse that
    extends it with ``rehearse: true``; its own warehouse unless one was given."""
    from salmon_dag.config import profile_path

    try:
        real = profile_path(profile)
    except ProfileError as exc:
        _fail(str(exc))
    name = real.stem
    if warehouse == "warehouse":
        warehouse = str(Path("warehouse") / ".rehearse" / name)
    target = Path(warehouse) / f"rehearse-{name}.yaml"
    text = f"# written by salmon run --rehearse\nextends: {real.resolve()}\nname: {name}\nrehearse: true\n"
    if not target.is_file() or target.read_text() != text:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return str(target), warehouse


def _settings(profile: str, warehouse: str, principles: str, rehearse: bool = False) -> Settings:
    if rehearse:
        profile, warehouse = _rehearsal(profile, warehouse)
    if profile.endswith((".yaml", ".yml")):
        profile = str(Path(profile).resolve())
    settings = Settings(profile, str(Path(warehouse).resolve()), str(Path(principles).resolve()))
    try:
        load_profile(profile)
    except ProfileError as exc:
        _fail(str(exc))
    settings.export()
    return settings


def _project(settings: Settings):
    """Definitions + instance for these settings (the instance lives in the warehouse)."""
    from assets_defs.definitions import build_definitions
    from assets_defs.project import ensure_accelerator_pool, open_instance

    instance = open_instance()
    ensure_accelerator_pool(instance)
    return build_definitions(settings), instance


def _print_rows(columns: list[str], rows: list[tuple], fmt: str, title: str | None = None) -> None:
    if fmt == "json":
        print(json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str, ensure_ascii=False))
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        table = Table(*columns, title=title)
        for r in rows:
            table.add_row(*("" if v is None else str(v) for v in r))
        out.print(table)


def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        _fail(f"--format must be one of {', '.join(allowed)} (got {fmt!r})")


@app.command()
def run(
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
    select: Annotated[
        str | None,
        typer.Option("--select", help="Dagster asset selection, e.g. 'prompt_pool' or 'key:principles/*+'. Built even if fresh."),
    ] = None,
    all_assets: Annotated[bool, typer.Option("--all", help="Rebuild every asset, fresh or not.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress view and no report: a table of what was built, warnings and errors (the rest in the log file).")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Dagster's full log instead of the progress view.")] = False,
    rehearse: RehearseOpt = False,
) -> None:
    """Materialize the asset graph in this process. By default only what is missing or stale.

    Shows a compact progress view (``-v`` for Dagster's full log) and ends with a short report."""
    from assets_defs.project import (
        MATERIALIZED,
        asset_states,
        asset_steps,
        observe,
        release_dead_runs,
        resolve_selection,
        run_assets,
        with_required_neighbors,
    )
    from assets_defs.run_view import RunView, captured_output, warnings_only

    settings = _settings(profile, warehouse, principles, rehearse)
    defs, instance = _project(settings)
    for run_id in release_dead_runs(instance):
        err.print(f"[yellow]run {run_id} was killed; marked failed and its accelerator slot freed[/yellow]", highlight=False)
    changed = observe(settings, instance)
    if changed:
        out.print(f"principle files changed: {', '.join(changed)}")
    if select:
        try:
            keys = resolve_selection(defs, select)
        except ValueError as exc:
            _fail(str(exc))
    else:
        states = asset_states(defs, instance, settings.warehouse)
        wanted = {s.asset for s in states if all_assets or s.state != MATERIALIZED}
        keys = [k for k in defs.resolve_asset_graph().materializable_asset_keys if k.to_user_string() in wanted]
        keys = with_required_neighbors(defs, keys) if keys else []
        if not keys:
            out.print("Everything is materialized and fresh; nothing to do (use --all to rebuild).")
            return
    out.print(f"profile {settings.profile_name}: materializing {', '.join(sorted(k.to_user_string() for k in keys))}")
    started = time.monotonic()
    log_file = settings.warehouse.dagster_home / "logs" / f"salmon-run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    if verbose:
        summary = run_assets(defs, instance, keys, log_level="INFO")
    elif quiet:  # libraries' output and progress bars to the log file; warnings and errors here
        with captured_output(log_file) as terminal:
            summary = run_assets(defs, instance, keys, log_level="INFO",
                                 on_event=warnings_only(Console(file=terminal, soft_wrap=True)))
    else:
        with captured_output(log_file) as terminal:
            with RunView(Console(file=terminal, soft_wrap=True), asset_steps(defs, keys)) as view:
                summary = run_assets(defs, instance, keys, log_level="INFO", on_event=view.on_event)
    seconds = time.monotonic() - started
    if quiet:
        table = Table("asset", "rows / model", title=f"run {summary.run_id}")
        for name, meta in summary.materialized:
            table.add_row(name, str(meta.get("dagster/row_count", meta.get("model_id", ""))))
        out.print(table)
    failed_checks = [(f"{a}:{c}", why) for a, c, ok, why in summary.checks if not ok]
    out.print(f"run {summary.run_id}: {len(summary.materialized)} assets in {seconds:.0f} s; "
              f"{len(summary.checks) - len(failed_checks)}/{len(summary.checks)} asset checks passed", highlight=False)
    if not quiet and summary.success:
        _print_report(settings)
    if not verbose:
        out.print(f"full log: {log_file}", highlight=False)
    for e in summary.errors:
        err.print(f"[red]error:[/red] {escape(e)}", highlight=False, soft_wrap=True)
    for name, why in failed_checks:
        err.print(f"[yellow]failed check[/yellow] {escape(name)}: {escape(why)}", highlight=False, soft_wrap=True)
    if not summary.success:
        raise typer.Exit(1)


def _print_report(settings: Settings) -> None:
    """Rows per table, the stages' headline numbers, and where to look next."""
    from salmon_dag.run_report import report

    for section in report(settings.warehouse):
        _print_rows(section.columns, section.rows, "table", title=section.title)
    cli = sys.argv[0] if Path(sys.argv[0]).name == "salmon" else "salmon"  # as the user typed it
    steps = [
        (f"{cli} ui", "the asset graph, metadata and plots at http://127.0.0.1:3000"),
        (f"{cli} status", "what is stale after you edit principles/*.yaml, and why"),
        (f'{cli} sql "select * from rl_gain"', "any table or view (rm_probes, policy_answers, benchmark_table, ...)"),
    ]
    width = max(len(c) for c, _ in steps)
    out.print("Next:\n" + "\n".join(f"  {c:<{width}}  {what}" for c, what in steps), highlight=False)


@app.command()
def status(
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
    fmt: FormatOpt = "table",
    rehearse: RehearseOpt = False,
) -> None:
    """Every asset with its state: materialized, missing, corrupt or stale (principle files are observed
    first; each materialized table and checkpoint is checked on disk)."""
    from assets_defs.project import asset_states, observe

    _check_format(fmt, ("table", "json"))
    settings = _settings(profile, warehouse, principles, rehearse)
    defs, instance = _project(settings)
    observe(settings, instance)
    states = asset_states(defs, instance, settings.warehouse)
    if fmt == "json":
        print(json.dumps([s.as_dict() for s in states], indent=2))
        return
    _print_rows(["asset", "state", "why"], [(s.asset, s.state, "; ".join(s.causes)) for s in states], "table")


@app.command()
def sql(
    query: Annotated[str, typer.Argument(help="SQL over the warehouse views (read-only).")],
    warehouse: WarehouseOpt = "warehouse",
    fmt: FormatOpt = "table",
) -> None:
    """Run a read-only DuckDB query over the warehouse views."""
    from salmon_dag.warehouse import Warehouse

    _check_format(fmt, ("table", "csv", "json"))
    try:
        columns, rows = Warehouse(warehouse).query(query)
    except WarehouseError as exc:
        _fail(str(exc))
    _print_rows(columns, rows, fmt)


@app.command()
def score(
    prompt: Annotated[str | None, typer.Option("--prompt", help="The user's request.")] = None,
    response: Annotated[str | None, typer.Option("--response", help="The reply to score.")] = None,
    input_file: Annotated[str | None, typer.Option("--input", help="Score a .jsonl / .parquet file instead: rows of "
                          "prompt, response[, principles], or RewardBench's prompt, chosen, rejected[, subset] "
                          "(accuracy overall and per subset).")] = None,
    output_file: Annotated[str | None, typer.Option("--output", help="With --input: write the rows with their "
                           "scores here (.jsonl / .parquet).")] = None,
    compare: Annotated[list[str] | None, typer.Option("--compare", help="With --input: also score the file with "
                       "this reward model (a Hub id or folder transformers loads; repeatable), side by side.")] = None,
    principle: Annotated[
        list[str] | None,
        typer.Option("--principle", help="A reward-model principle by name (repeatable; default: the total under "
                     "rl.yaml's always-on principles, the breakdown under every principle)."),
    ] = None,
    server: Annotated[str | None, typer.Option("--server", envvar="SALMON_SERVE_URL", help="A salmon serve URL to "
                      "ask (default: the one serving this warehouse, if any; else the model is loaded here).")] = None,
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
    fmt: FormatOpt = "table",
) -> None:
    """Score a reply with the trained reward model: under all chosen principles, and under each
    principle alone and negated (the breakdown RL and evaluation use). A running `salmon serve` of
    this warehouse answers it (no model load here)."""
    from salmon_dag.principles import PrincipleError, load_principles, principle_texts
    from salmon_dag.serve.client import running_server, score_remote
    from salmon_dag.warehouse import Warehouse

    _check_format(fmt, ("table", "json"))
    settings = _settings(profile, warehouse, principles)
    try:
        pset = load_principles(settings.principles_path, "reward_model")
        always_on = load_principles(settings.principles_path, "rl").always_on()
    except PrincipleError as exc:
        _fail(str(exc))
    known = principle_texts(pset)
    by_name = {p.name: p for p in known}
    unknown = [n for n in principle or [] if n not in by_name]
    if unknown:
        _fail(f"unknown principle(s) {', '.join(map(repr, unknown))} in {pset.path} (known: {', '.join(by_name)})")
    chosen = [by_name[n] for n in principle] if principle else known
    # the total: under the chosen principles, or by default under those RL shows the model at every step
    together = [{"name": p.name} for p in chosen] if principle else [{"text": p.definition} for p in always_on]
    label = (f"the {len(chosen)} principle(s) together" if principle else
             f"rl.yaml's {len(always_on)} always-on principles ({', '.join(p.name for p in always_on)})")
    texts = [by_name[t["name"]].definition if "name" in t else t["text"] for t in together]
    if input_file is not None:
        _score_file(settings, input_file, output_file, texts, by_name, label, fmt, compare or [])
        return
    if prompt is None or response is None:
        _fail("give --prompt and --response, or --input FILE")
    url = server or running_server(Warehouse(settings.warehouse_dir))
    try:
        if url:
            total, rows = score_remote(url, prompt, response, together, [p.name for p in chosen])
        else:
            total, rows = _score_here(settings, prompt, response, texts, chosen, bool(principle))
    except (OSError, ValueError, WarehouseError) as exc:
        _fail(first_line(exc, 400))
    if fmt == "json":
        print(json.dumps({"score": total, "under": label, "principles": [
            {"principle": name, "score": score, "negated_score": negated, "delta": score - negated}
            for name, score, negated in rows]}, indent=2))
        return
    _print_rows(
        ["principle", "score", "negated", "score - negated"],
        [(name, f"{score:+.3f}", f"{negated:+.3f}", f"{score - negated:+.3f}") for name, score, negated in rows],
        "table",
        title=f"reward {total:+.3f} under {label}" if total is not None else f"{label} do not fit: scored one by one",
    )


def _score_file(settings: Settings, input_file: str, output_file: str | None, default: list[str], by_name,
                label: str, fmt: str, compare: list[str]) -> None:
    """Score every row of a file in this process (and with each ``compare`` model); print the
    summary, write the rows (with our scores) when asked."""
    from transformers.utils import logging as hf_logging

    from salmon_dag.reward_model.checkpoint import load_scorer, warehouse_checkpoint
    from salmon_dag.reward_model.files import PlainRewardModel, ScoreFileError, read_rows, score_rows, write_rows
    from salmon_dag.warehouse import Warehouse

    hf_logging.disable_progress_bar()
    try:
        rows = read_rows(input_file)
        scorer = load_scorer(warehouse_checkpoint(Warehouse(settings.warehouse_dir)))
        scored, summary = score_rows(scorer, rows, default, by_name, input_file)
        if output_file is not None:
            write_rows(scored, output_file)
        others = {m: score_rows(PlainRewardModel(m), rows, default, by_name, input_file)[1] for m in compare}
    except (ScoreFileError, WarehouseError, OSError) as exc:
        _fail(first_line(exc, 400))
    except ValueError as exc:  # the principles do not fit the model's length, ...
        _fail(f"{input_file}: {first_line(exc, 400)}")
    summary = {"input": input_file, "rows without principles scored under": label, **summary,
               **({"output": output_file} if output_file else {}), **({"compare": others} if others else {})}
    if fmt == "json":
        print(json.dumps(summary, indent=2))
        return
    for key, value in summary.items():
        if key not in ("subsets", "compare"):
            print(f"{key}: {value}")
    if "subsets" in summary or others:
        # ours and each compared model side by side (the others take no principles)
        names = ["salmon", *others]
        all_ = [summary, *others.values()]
        subsets = sorted(summary.get("subsets", {}))
        rows_ = [("all", *(f"{s.get('accuracy', float('nan')):.3f}" for s in all_), summary["rows"])]
        rows_ += [(k, *(f"{s['subsets'][k]['accuracy']:.3f}" for s in all_), summary["subsets"][k]["n"]) for k in subsets]
        _print_rows(["subset", *names, "n"], rows_, "table")


def _score_here(settings: Settings, prompt: str, response: str, texts: list[str], chosen, total_is_chosen: bool):
    """(total under ``texts``, [(principle, score, negated)] for ``chosen``) with the reward model
    loaded in this process; the breakdown's own total when ``texts`` are the chosen principles."""
    from transformers.utils import logging as hf_logging

    from salmon_dag.reward_model.checkpoint import load_scorer, warehouse_checkpoint
    from salmon_dag.warehouse import Warehouse

    hf_logging.disable_progress_bar()  # stderr stays for errors
    scorer = load_scorer(warehouse_checkpoint(Warehouse(settings.warehouse_dir)))
    total, rows = scorer.breakdown(prompt, response, chosen)
    if not total_is_chosen:
        try:
            total = scorer.score([prompt], [response], texts)[0]
        except ValueError:  # the principles alone are longer than max_len
            total = None
    return total, [(r.principle, r.score, r.negated_score) for r in rows]


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="sft (self_align_sft_data) or preferences (rm_training_data).")],
    fmt: Annotated[str, typer.Option("--format", help="hf (datasets save_to_disk), jsonl or parquet.")] = "hf",
    out: Annotated[str | None, typer.Option("--out", help="Where to write (default: <warehouse>/exports/<name>).")] = None,
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
) -> None:
    """Export a table as data other trainers take: SFT conversations (TRL SFTTrainer) or SALMON's
    preferences as prompt / chosen / rejected conversations with their principles (DPOTrainer,
    RewardTrainer)."""
    from salmon_dag.export import export_table
    from salmon_dag.warehouse import Warehouse

    settings = _settings(profile, warehouse, principles)
    try:
        path, rows = export_table(Warehouse(settings.warehouse_dir), name, fmt, out)
    except (WarehouseError, ValueError) as exc:
        _fail(str(exc))
    print(f"{name}: {rows} rows -> {path}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default; another one with a token).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    principle: Annotated[
        list[str] | None,
        typer.Option("--principle", help="Default principle(s) by name for requests that name none (repeatable; "
                     "OpenRLHF's /get_reward requests usually name none)."),
    ] = None,
    max_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to share its batch (requests that arrive while the model is busy join the next batch anyway).")] = 2.0,
    max_batch_tokens: Annotated[int, typer.Option(help="Tokens per reward-model call at most.")] = 32768,
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
) -> None:
    """Serve the warehouse's reward model over HTTP: POST /score, POST /get_reward (OpenRLHF's
    --remote_rm_url), GET /health, /ready, /metrics. A token in $SALMON_SERVE_TOKEN is required of
    every request (Authorization: Bearer ...)."""
    import signal

    import uvicorn

    from salmon_dag.principles import PrincipleError, load_principles, principle_texts
    from salmon_dag.reward_model.checkpoint import load_scorer, warehouse_checkpoint
    from salmon_dag.serve import TOKEN_ENV, Model, ServeLimits, create_app
    from salmon_dag.serve.client import announce
    from salmon_dag.warehouse import Warehouse

    settings = _settings(profile, warehouse, principles)
    try:
        checkpoint = warehouse_checkpoint(Warehouse(settings.warehouse_dir))
        known = {p.name: p for p in principle_texts(load_principles(settings.principles_path, "reward_model"))}
    except (WarehouseError, PrincipleError) as exc:
        _fail(str(exc))
    unknown = [n for n in principle or [] if n not in known]
    if unknown:
        _fail(f"--principle: unknown principle(s) {', '.join(map(repr, unknown))} (known: {', '.join(known)})")
    token = os.environ.get(TOKEN_ENV) or None
    if host not in ("127.0.0.1", "localhost", "::1") and token is None:
        err.print(f"[yellow]warning:[/yellow] serving on {host} without a token: anyone who reaches it can use it "
                  f"(set {TOKEN_ENV})", highlight=False)
    app_ = create_app(lambda: Model(load_scorer(checkpoint), known, str(checkpoint)), principle or (), token,
                      ServeLimits(max_wait_s=max_wait_ms / 1000, max_batch_tokens=max_batch_tokens))
    out.print(f"serving {checkpoint} on http://{host}:{port} ({'token required' if token else 'no token'}); "
              "POST /score, POST /get_reward; GET /health, /ready, /metrics", highlight=False)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    # uvicorn shuts down on SIGTERM, then raises it again: exit normally then, so the announcement goes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with announce(Warehouse(settings.warehouse_dir), f"http://{local}:{port}"):  # salmon score finds it
        uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
def profiles(
    check: Annotated[str | None, typer.Option("--check", help="A profile (name or .yaml path): what it asks of "
                                              "the hardware, and its contradictions; exits 1 on any.")] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="With --check: the GPUs you have.")] = None,
) -> None:
    """List the bundled profiles, or check one before renting GPUs (--check)."""
    if check is not None:
        _check_profile(check, gpus)
        return
    rows: list[tuple[Any, ...]] = []
    for name in available_profiles():
        p = load_profile(name)
        rows.append((name, p.base_model.model_id or "tiny (built here)", p.engine.backend, p.description))
    _print_rows(["profile", "base model", "backend", "description"], rows, "table")


def _check_profile(name: str, gpus: int | None) -> None:
    from salmon_dag.profile_check import check_profile

    try:
        profile = load_profile(name)
    except Exception as exc:  # noqa: BLE001 - a profile's own error names its file and field
        _fail(str(exc))
    made = check_profile(profile, gpus)
    print(f"{profile.name}: {profile.description}")
    for st in made.stages:
        ranks = f"{st.ranks} rank{'s' if st.ranks > 1 else ''}"
        print(f"  {st.stage}: {st.global_batch} {st.unit} per optimizer step ({st.per_device} per device x "
              f"{st.accumulation} accumulation x {ranks}), at most {st.tokens_per_step:,} tokens; launcher "
              f"{st.launcher}, ZeRO {st.deepspeed_stage or 'off'}, quantization {st.quantization}")
    print(f"  ppo: {made.rollouts_per_step} rollouts per step, {made.optimizer_steps_per_rollout} optimizer steps "
          "per rollout")
    print(f"  GPUs: {made.gpus} (generation: tensor_parallel_size {made.generation_gpus})" if made.gpus
          else "  GPUs: none (a CPU profile)")
    for problem in made.problems:
        print(f"error: {problem}", file=sys.stderr)
    if made.problems:
        raise typer.Exit(1)


BENCHMARKS = ("judge", "generate", "rl", "serve", "steer", "seeds")
PRECISIONS = ("auto", "float32", "bfloat16")


@app.command()
def bench(
    name: Annotated[str, typer.Argument(help="judge, generate, rl, serve, steer or seeds")],
    model: Annotated[str | None, typer.Option("--model", help="Checkpoint dir or Hub id (default: tiny shape, random weights).")] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="seeds: how many seeds (1..N).")] = 5,
    seed_list: Annotated[str | None, typer.Option("--seed-list", help="seeds: the seeds, e.g. 1,2,3 (wins over --seeds).")] = None,
    from_asset: Annotated[str | None, typer.Option("--from", help="seeds: reuse the project warehouse and rebuild only this asset and everything downstream of it.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="seeds: the tiny base model's training precision: auto, float32 or bfloat16 (default: the profile's).")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="seeds: folder of the seed projects (default: <warehouse>/.study).")] = None,
    no_steer: Annotated[bool, typer.Option("--no-steer", help="seeds: skip the steering claims (two PPO runs per seed).")] = False,
    no_intervention: Annotated[bool, typer.Option("--no-intervention", help="seeds: skip the intervention claims.")] = False,
    reuse: Annotated[bool, typer.Option("--reuse", help="seeds: with --from, rebuild in each seed's warehouse of an earlier study in --out (its own upstream assets) instead of a copy of the project warehouse.")] = False,
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
) -> None:
    """Run a benchmark; it prints its measurements and ends with one ratio line. ``steer`` trains
    two policies from the warehouse's SFT model and reward model (materialize them first).
    ``seeds`` reruns the graph (or, with --from, its tail) under several seeds, each in its own
    warehouse, prints every claim per seed with mean ± std and pass/fail, stores the rows as table
    seed_study (view seed_study_summary) and plots/seed_study.png in the warehouse, and exits 1 when
    a claim fails in any seed."""
    log = lambda line: print(line, flush=True)  # noqa: E731
    if name not in BENCHMARKS:
        _fail(f"unknown benchmark {name!r} (expected {', '.join(BENCHMARKS)})")
    if name == "steer":
        _bench_steer(_settings(profile, warehouse, principles), log)
        return
    if name == "seeds":
        if precision is not None and precision not in PRECISIONS:
            _fail(f"--precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        _bench_seeds(_settings(profile, warehouse, principles), seeds, seed_list, from_asset, precision, out_dir,
                     steer=not no_steer, intervention=not no_intervention, reuse=reuse)
        return
    from salmon_dag.perf import run_benchmark

    run_benchmark(name, model, log=log)


def _bench_steer(settings: Settings, log) -> None:
    from salmon_dag.principles import PrincipleError
    from salmon_dag.claims import steer_means

    try:
        steer_means(settings.warehouse, settings.principles_path, settings.profile, log)
    except (WarehouseError, PrincipleError) as exc:
        _fail(f"{exc} (salmon bench steer needs sft_model, reward_model and prompt_pool: salmon run)")


def _built_with(settings: Settings, asset: str | None) -> tuple[str, ...]:
    """The other outputs of ``asset``'s multi-asset, which any run of it rebuilds (none for a
    single asset or no ``asset``); fails with one line when the graph has no such asset."""
    if not asset:
        return ()
    from assets_defs.definitions import build_definitions
    from assets_defs.project import resolve_selection

    try:
        keys = resolve_selection(build_definitions(settings), f'key:"{asset}"')
    except ValueError:
        _fail(f"--from {asset}: no such asset (salmon status lists them)")
    return tuple(k.to_user_string() for k in keys if k.to_user_string() != asset)


def _bench_seeds(settings: Settings, seeds: int, seed_list: str | None, from_asset: str | None,
                 precision: str | None, out_dir: str | None, steer: bool, intervention: bool,
                 reuse: bool = False) -> None:
    """Run the study, print one table, store the rows and the plot, and fail if a claim failed."""
    import polars as pl

    from salmon_dag import study

    wh_dir = settings.warehouse.root
    try:
        plan = study.StudyPlan(
            profile=settings.profile_name, warehouse=wh_dir, principles=settings.principles_path,
            out=Path(out_dir).resolve() if out_dir else wh_dir / study.DEFAULT_OUT,
            seeds=study.seed_list(seeds, seed_list), precision=precision, from_asset=from_asset, steer=steer,
            intervention=intervention, reuse=reuse, from_siblings=_built_with(settings, from_asset))
        out.print(f"seed study: profile {settings.profile_name}, seeds {', '.join(map(str, plan.seeds))}"
                  f"{f', from {from_asset}' if from_asset else ', whole graph'}{' (reusing the seed warehouses)' if reuse else ''}; seed projects in {plan.out}",
                  highlight=False, markup=False)
        with out.status("seed study") as status:  # the running seed's latest output line
            rows = study.run_study(plan, _failed_checks, progress=lambda line: status.update(Text(line[:150])),
                                   log=lambda line: out.print(line, highlight=False, markup=False))
    except study.StudyError as exc:
        _fail(str(exc))
    table = study.store(settings.warehouse, rows)
    plot_path = wh_dir / study.STUDY_PLOT
    study.plot_study(table, plot_path)
    summary = study.aggregate(rows)
    first = summary.row(0, named=True)
    columns = ["claim", *(f"seed {s}" for s in plan.seeds), "mean ± std", "threshold", "pass"]
    _print_rows(columns, [_summary_row(r, plan.seeds) for r in summary.iter_rows(named=True)], "table",
                title=f"precision {first['precision']}, shared data {'yes' if first['shared_data'] else 'no'}")
    out.print(f"stored: table {study.STUDY_TABLE} ({rows.height} rows of this study, {table.height} in all; "
              f'salmon sql "select * from seed_study_summary"), plot {plot_path}', highlight=False)
    failing = rows.filter(pl.col("passed").not_()).group_by("claim", maintain_order=True).agg("seed")
    if failing.height:
        _fail(f"{failing.height} claim(s) failed: "
              + "; ".join(f"{c} (seed {', '.join(map(str, s))})" for c, s in failing.iter_rows()))


def _summary_row(r: dict, seeds: list[int]) -> tuple:
    by_seed = dict(zip(r["seed"], r["values"]))
    verdict = {True: "pass", False: "FAIL", None: ""}[r["passed_all"]]
    threshold = "" if r["threshold"] is None else f"{r['direction']} {_num(r['threshold'])}"
    spread = "" if r["mean"] is None else f"{_num(r['mean'])} ± {_num(r['std'])}"
    return (r["claim"], *(_num(by_seed.get(s)) for s in seeds), spread, threshold, verdict)


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _failed_checks(dagster_home: Path) -> list[str]:
    """``asset:check`` of every asset check whose latest evaluation in the instance at
    ``dagster_home`` failed (later runs' evaluations win)."""
    import dagster as dg

    from assets_defs.project import open_instance

    latest: dict[str, bool] = {}
    with open_instance(dagster_home) as instance:
        for run in reversed(instance.get_runs()):  # get_runs is newest first
            for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
                ev = entry.dagster_event.event_specific_data
                latest[f"{ev.asset_key.to_user_string()}:{ev.check_name}"] = ev.passed
    return sorted(key for key, passed in latest.items() if not passed)


@app.command()
def ui(
    profile: ProfileOpt = DEFAULT_PROFILE,
    warehouse: WarehouseOpt = "warehouse",
    principles: PrinciplesOpt = "principles",
    host: str = "127.0.0.1",
    port: int = 3000,
) -> None:
    """Start the Dagster UI (and daemon) on this project's instance."""
    from assets_defs.project import ensure_accelerator_pool, open_instance

    _settings(profile, warehouse, principles)
    with open_instance() as instance:
        ensure_accelerator_pool(instance)
    # the interpreter running this CLI, so `.venv/bin/salmon ui` works without an activated venv
    os.execv(sys.executable, [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "-h", host, "-p", str(port)])


def main() -> None:
    try:
        app()
    except Exception as exc:
        line = _disk_full_line(exc)
        if line is None:
            raise
        err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
