"""Benchmark inputs (issue 11): the bundled files, every local format, a dataset folder read by
`datasets`, clear errors, and optional sources that skip instead of failing."""

import json
import re

import polars as pl
import pytest

from salmon_dag.benchmarks.data import read_records, source_exists
from salmon_dag.benchmarks.mt_bench import REFERENCE_CATEGORIES, load_questions
from salmon_dag.benchmarks.stage import load_inputs
from salmon_dag.config import BenchmarksConfig


def test_bundled_files_are_complete():
    questions = load_questions("bundled:mt_bench_mini.jsonl")
    assert len(questions) == 10 and all(len(q.turns) == 2 for q in questions)
    assert {q.category for q in questions} >= {"writing", "roleplay", "reasoning", "math", "coding", "extraction",
                                               "stem", "humanities"}
    assert all(q.reference and len(q.reference) == 2 for q in questions if q.category in REFERENCE_CATEGORIES)
    instructions = load_questions("bundled:instructions_mini.jsonl")
    assert len(instructions) == 24 and len({q.question_id for q in instructions}) == 24
    gsm = [row for _, row in read_records("bundled:gsm8k_mini.jsonl")]
    assert len(gsm) == 20 and all(re.search(r"\n#### \d+$", r["answer"]) for r in gsm)


def test_every_local_format_and_a_dataset_folder(tmp_path):
    rows = [{"question_id": 1, "turns": ["Hi?", "And then?"]}, {"instruction": "Sort", "input": "b, a", "id": "x"}]
    (tmp_path / "q.json").write_text(json.dumps(rows))
    pl.DataFrame([{"prompt": "From parquet", "category": "stem"}]).write_parquet(tmp_path / "q.parquet")
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "test.jsonl").write_text(json.dumps({"prompt": ["Turn one", "Turn two"], "prompt_id": 9,
                                                   "category": "writing", "reference": []}) + "\n")
    a, b = load_questions(tmp_path / "q.json")
    assert a.turns == ("Hi?", "And then?") and (b.question_id, b.turns) == ("x", ("Sort\n\nb, a",))
    (c,) = load_questions(tmp_path / "q.parquet")
    assert (c.turns, c.category) == (("From parquet",), "stem")
    # a folder goes through datasets.load_dataset; HuggingFaceH4/mt_bench_prompts' layout (prompt list)
    (d,) = load_questions(str(folder), split="test")
    assert (d.question_id, d.turns, d.reference) == ("9", ("Turn one", "Turn two"), None)


def test_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="no_such_file.jsonl"):
        load_questions("bundled:no_such_file.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: not JSON"):
        load_questions(bad)
    bad.write_text('{"prompt": "ok"}\n{"text": "wrong field"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2: no 'turns', 'instruction'"):
        load_questions(bad)
    with pytest.raises(FileNotFoundError, match="folder not found"):
        list(read_records(str(tmp_path / "missing_folder")))


def test_optional_sources_skip_with_a_note(tmp_path):
    assert not source_exists(str(tmp_path / "absent.jsonl")) and source_exists("some-org/some-dataset")
    cfg = BenchmarksConfig.model_validate({
        "mt_bench": {"questions": {"source": str(tmp_path / "absent.jsonl"), "optional": True}},
        "win_rate": {"instructions": {"source": "bundled:instructions_mini.jsonl"}, "limit": 3},
        "gsm8k": {"data": {"source": str(tmp_path / "absent_gsm.jsonl"), "optional": True}},
        "humaneval": {"limit": 2},
    })
    inputs = load_inputs(cfg)
    assert inputs.questions is None and len(inputs.instructions) == 3 and len(inputs.problems) == 2
    assert not inputs.gsm8k and len(inputs.notes) == 2 and "absent.jsonl not found (optional)" in inputs.notes[0]
    # not optional: a clear error before any model is loaded
    cfg = cfg.model_copy(update={"mt_bench": cfg.mt_bench.model_copy(update={"questions": cfg.mt_bench.questions.model_copy(
        update={"optional": False})})})
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        load_inputs(cfg)
