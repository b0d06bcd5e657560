"""Benchmarks run end to end on a micro model and print their ratio line (no timing asserted)."""

import pytest

from salmon_dag.perf.inference import bench_generate, bench_judge


def test_judge_bench_prints_its_ratio(tiny_checkpoint):
    lines: list[str] = []
    ratio = bench_judge(str(tiny_checkpoint), pairs=2, counts=(1, 2), log=lines.append)
    assert ratio > 0
    assert lines[-1].startswith("judge ratio: prefix-shared is ")
    # every row reports identical scores for the two paths
    rows = [line.split() for line in lines if line.strip()[:1].isdigit()]
    assert len(rows) == 2 and all(float(r[-1]) < 1e-4 for r in rows)


@pytest.mark.slow
def test_generate_bench_prints_its_ratio(tiny_checkpoint):
    lines: list[str] = []
    rates = bench_generate(str(tiny_checkpoint), prompts=3, new_tokens=4, log=lines.append)
    assert any(k.startswith("hf batched") for k in rates)
    assert lines[-1].startswith("generate ratio: hf batched / sequential = ")
