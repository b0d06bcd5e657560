"""What a training run tells its user: progress lines, a curves plot, TensorBoard under the work dir.

Plain Python: no dagster import here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from transformers import TrainerCallback

from salmon_dag.training.checkpoints import TENSORBOARD_SUBDIR

TRAINING_LOG = "training_log.json"
LOSS_PLOT = "loss.png"
EVAL_PREFIX = "eval_"

Points = list[tuple[int, float]]


class ProgressLog(TrainerCallback):
    """``log`` lines named by ``stage``: about every 10% of the optimizer steps with the loss and
    the ``metrics`` that were logged (e.g. accuracy), and one line per evaluation."""

    def __init__(self, stage: str, log: Callable[[str], None], metrics: Sequence[str] = ("accuracy",)):
        self.stage = stage
        self.log = log
        self.metrics = tuple(metrics)
        self.every = 1
        self.t0 = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.every = max(1, state.max_steps // 10)
        self.t0 = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        step, total = state.global_step, max(state.max_steps, 1)
        evals = {k: v for k, v in logs.items() if k.startswith(EVAL_PREFIX) and isinstance(v, (int, float))}
        if evals:
            shown = " ".join(f"{k} {v:.4f}" for k, v in sorted(evals.items()) if not k.endswith(("runtime", "per_second")))
            self.log(f"{self.stage}: eval at step {step}/{total}: {shown}")
        if "loss" not in logs or not (step % self.every == 0 or step == total):
            return
        extras = "".join(f" {m} {logs[m]:.4f}" for m in self.metrics if isinstance(logs.get(m), (int, float)))
        lr = logs.get("learning_rate")
        lr_text = f" lr {lr:.2e}" if isinstance(lr, (int, float)) else ""
        self.log(
            f"{self.stage}: step {step}/{total} ({100 * step // total}%) loss {logs['loss']:.4f}{extras}{lr_text} "
            f"[{time.monotonic() - self.t0:.0f}s]"
        )


def metric_points(history: Sequence[Mapping[str, Any]], name: str) -> Points:
    """(step, value) of every ``log_history`` entry that logged ``name``."""
    return [(int(e["step"]), float(e[name])) for e in history if name in e and "step" in e]


def curves_from_history(
    history: Sequence[Mapping[str, Any]], loss_label: str, metrics: Sequence[str] = ("accuracy",)
) -> dict[str, dict[str, Points]]:
    """Panels for :func:`plot_curves`: training (and eval) loss; then, when logged, the metrics
    (training and eval) in a second panel."""
    panels: dict[str, dict[str, Points]] = {}
    for label, names in ((loss_label, ("loss",)), (", ".join(metrics), metrics)):
        series = {
            f"{kind} {name}" if len(names) > 1 else kind: points
            for name in names
            for kind, key in (("train", name), ("eval", EVAL_PREFIX + name))
            if (points := metric_points(history, key))
        }
        if series:
            panels[label] = series
    return panels


def plot_curves(path: Path | BinaryIO, title: str, panels: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]]) -> None:
    """A PNG (file or buffer) with one panel per ``panels`` entry (y label -> {series label -> (step, value)})."""
    # Object-oriented Agg canvas: no pyplot, no global backend switch in the calling process.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    panels = panels or {"loss": {}}
    fig = Figure(figsize=(6, 3.5 * len(panels)), dpi=100)
    FigureCanvasAgg(fig)
    for i, (ylabel, series) in enumerate(panels.items()):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for label, points in series.items():
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="." if len(points) < 50 else None, linewidth=1, label=label)
        if len(series) > 1:
            ax.legend()
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        if i == 0:
            ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path if hasattr(path, "write") else str(path), format="png")


def point_tensorboard(trainer: Any, work_dir: Path) -> None:
    """Make the trainer's TensorBoard callback write its event files under ``work_dir``."""
    for cb in trainer.callback_handler.callbacks:
        if type(cb).__name__ == "TensorBoardCallback":
            cb.logging_dir = str(Path(work_dir) / TENSORBOARD_SUBDIR)
