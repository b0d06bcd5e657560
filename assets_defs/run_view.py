"""The compact view of ``salmon run``: a line per finished step, and for the running step a
progress bar with an ETA fed by the step's progress lines (``salmon_dag.progress``).

It listens to the run's event log (``DagsterInstance.add_event_listener``), so the stages need
no callback API. Everything the run prints (Dagster's full log, transformers, vLLM, tqdm bars)
goes to a log file beside the instance instead (``captured_output``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from assets_defs.project import check_reason, step_error
from salmon_dag.progress import parse_progress


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m {int(seconds % 60):02d}s"


@dataclass
class _Step:
    number: int
    started: float
    task: TaskID
    bar: str = ""  # the progress task now shown in the bar (e.g. "pretrain")
    rows: dict[str, str] = field(default_factory=dict)


class RunView:
    """Feed it the run's event log entries (``on_event``); use it as a context manager."""

    def __init__(self, console: Console, asset_steps: list[str]):
        self.asset_steps = set(asset_steps)
        self.total = len(asset_steps)
        self.started = 0
        self.running: dict[str, _Step] = {}
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            # stdout/stderr stay with the log file (captured_output), not drawn above the bar
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def __enter__(self) -> "RunView":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    # ------------------------------------------------------------------ events
    def on_event(self, entry) -> None:
        step = entry.step_key or ""
        message = entry.user_message or ""
        event = entry.dagster_event
        if event is None:
            self._on_message(step, message, entry.level)
            return
        kind = event.event_type_value
        waiting = pool_wait(entry)
        if waiting:
            print_warning(self.progress.console, waiting)
        elif kind == "STEP_START" and step in self.asset_steps:
            self.started += 1
            task = self.progress.add_task(f"[{self.started}/{self.total}] {step}", total=None)
            self.running[step] = _Step(self.started, time.monotonic(), task)
        elif kind == "ASSET_MATERIALIZATION" and step in self.running:
            mat = event.event_specific_data.materialization
            meta = mat.metadata
            rows = meta.get("dagster/row_count")
            shown = f"{rows.value} rows" if rows is not None else "(model)" if "model_id" in meta else ""
            self.running[step].rows[mat.asset_key.to_user_string()] = shown
        elif kind == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            if not data.passed:
                name = f"{data.asset_key.to_user_string()}:{data.check_name}"
                self.progress.console.print(f"  [yellow]check failed:[/yellow] {escape(name)}: "
                                            f"{escape(check_reason(data.metadata))}", highlight=False, soft_wrap=True)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE") and step in self.running:
            self._finish(step, ok=kind == "STEP_SUCCESS", error=step_error(event) if kind == "STEP_FAILURE" else "")

    def _on_message(self, step: str, message: str, level: int) -> None:
        if level >= logging.WARNING:
            print_warning(self.progress.console, f"{step}: {message}")
            return
        current = self.running.get(step)
        progress = parse_progress(message) if current is not None else None
        if progress is None:
            return
        if current.bar != progress.task:  # a new phase of the step: a fresh bar (and ETA)
            self.progress.reset(current.task, total=progress.total, completed=progress.done)
            current.bar = progress.task
        self.progress.update(
            current.task, total=progress.total, completed=progress.done,
            description=f"[{current.number}/{self.total}] {step} · {progress.task}",
        )

    def _finish(self, step: str, ok: bool, error: str) -> None:
        current = self.running.pop(step)
        self.progress.remove_task(current.task)
        took = _duration(time.monotonic() - current.started)
        what = ", ".join(f"{k} {v}" if v else k for k, v in current.rows.items())
        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        line = f"{mark} [{current.number}/{self.total}] {step:<22} {took:>8}  {what if ok else error}"
        self.progress.console.print(line, highlight=False, soft_wrap=True)


def pool_wait(entry) -> str | None:
    """The line to show when a step starts waiting for a pool slot (Dagster's "Step blocked by
    limit for pool X" engine event; its later reminders are not repeated), else None."""
    event = entry.dagster_event
    message = entry.user_message or ""
    if event is None or event.event_type_value != "ENGINE_EVENT" or not message.startswith("Step blocked by limit for pool"):
        return None
    pool = message.rsplit(" ", 1)[-1]
    return f"{entry.step_key}: waiting for a free '{pool}' slot (another run holds it)"


def warnings_only(console: Console) -> Callable[[Any], None]:
    """``salmon run -q``'s listener: the run's warning and error messages and its waits for the
    accelerator, one line each (the rest of its output goes to the log file)."""
    def on_event(entry) -> None:
        waiting = pool_wait(entry)
        if waiting:
            print_warning(console, waiting)
        elif entry.dagster_event is None and entry.level >= logging.WARNING:
            print_warning(console, f"{entry.step_key or 'run'}: {entry.user_message or ''}")
    return on_event


def print_warning(console: Console, line: str) -> None:
    """One warning line of a run, as text (never read as Rich markup)."""
    console.print(f"  [yellow]{escape(line)}[/yellow]", highlight=False, soft_wrap=True)


def _close_progress_bars() -> None:
    tqdm = sys.modules.get("tqdm")
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()


@contextmanager
def captured_output(log_path: Path) -> Iterator[TextIO]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C libraries and
    subprocesses too) to ``log_path``; yield the terminal for the view to write to."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    log = log_path.open("a", buffering=1, encoding="utf-8")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield terminal
    finally:
        _close_progress_bars()  # a step that failed mid-loop leaves its bar open: it would print at exit
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        terminal.close()
        log.close()
