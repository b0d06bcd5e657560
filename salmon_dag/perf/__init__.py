"""Throughput benchmarks (``salmon bench judge | generate | rl | serve``, ``python -m salmon_dag.perf.gpu``):
how fast the pipeline's pieces run, measured in one run and reported as ratios. Apart from
``salmon_dag.benchmarks``, which evaluates the models (MT-Bench, win rate, GSM8K, HumanEval), and
from ``salmon bench steer`` / ``seeds`` (``rl.steer``, ``study``), which measure the method's claims.

By default the benchmarks here use a model of the tiny profile's shape with random weights;
``--model`` takes any checkpoint. Plain Python: no dagster import here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

BENCHMARKS = ("judge", "generate", "rl", "serve")


def run_benchmark(name: str, model: str | None = None, log=print) -> None:
    """Run throughput benchmark ``name`` on ``model`` (default: random weights of the tiny shape)."""
    from salmon_dag.perf.models import random_model, random_reward_model

    with tempfile.TemporaryDirectory(prefix="salmon-bench-") as tmp:
        path = model or str(random_model(Path(tmp) / "model"))
        if name == "judge":
            from salmon_dag.perf.inference import bench_judge

            bench_judge(path, log=log)
        elif name == "generate":
            from salmon_dag.perf.inference import bench_generate

            bench_generate(path, log=log)
        elif name == "serve":  # --model: a reward-model checkpoint
            from salmon_dag.perf.serve import bench_serve

            bench_serve(Path(model) if model else random_reward_model(Path(path), Path(tmp) / "rm"), log=log)
        elif name == "rl":
            from salmon_dag.perf.rl import bench_rl

            bench_rl(Path(path), random_reward_model(Path(path), Path(tmp) / "rm"), Path(tmp), log=log)
        else:
            raise ValueError(f"unknown benchmark {name!r} ({', '.join(BENCHMARKS)})")
