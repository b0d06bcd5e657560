"""HumanEval: problem loading, completion extraction, sandboxed checking and pass@k."""

from __future__ import annotations

import gzip
import json
import math
import uuid
from pathlib import Path

import pytest

from salmon_dag.benchmarks.humaneval import (
    Problem,
    Sample,
    check_completions,
    completion_prompt,
    extract_completion,
    generate_completions,
    generation_stops,
    load_problems,
    pass_at_k,
    program,
)
from salmon_dag.benchmarks.sandbox import SandboxLimits, sandbox_support
from salmon_dag.engine.base import Completion, SamplingParams
from salmon_dag.templates import TURN_SEPARATOR

needs_sandbox = pytest.mark.skipif(
    not sandbox_support()["can_run"],
    reason="sandbox refuses to run here: running as root without the ability to drop privileges",
)
QUIET = {"log": lambda _: None}
FAST = SandboxLimits(timeout_s=3.0)


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_problems(limit=5)


# ------------------------------------------------------------------------------ loading
def test_packaged_problems_and_limit():
    everything = load_problems()
    assert len(everything) == 164
    assert everything[0].task_id == "HumanEval/0" and everything[-1].task_id == "HumanEval/163"
    assert all(p.prompt and p.test and p.entry_point and p.canonical_solution for p in everything)
    first = load_problems(None, limit=3)
    assert [p.task_id for p in first] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_local_files_plain_and_gzip(tmp_path):
    row = {"task_id": "t/0", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n",
           "entry_point": "f"}
    plain = tmp_path / "p.jsonl"
    plain.write_text(json.dumps(row) + "\n\n" + json.dumps({**row, "task_id": "t/1"}) + "\n")
    assert [p.task_id for p in load_problems(str(plain))] == ["t/0", "t/1"]
    assert load_problems(str(plain))[0].canonical_solution == ""
    packed = tmp_path / "p.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    assert load_problems(str(packed))[0].entry_point == "f"


def test_bad_rows_name_file_and_line(tmp_path):
    good = json.dumps({"task_id": "t/0", "prompt": "def f():\n", "test": "x", "entry_point": "f"})
    broken = tmp_path / "broken.jsonl"
    broken.write_text(good + "\n{not json\n")
    with pytest.raises(ValueError, match=r"broken\.jsonl: line 2: not JSON"):
        load_problems(str(broken))
    missing_field = tmp_path / "fields.jsonl"
    missing_field.write_text(good + "\n" + json.dumps({"task_id": "t/1", "prompt": "p", "test": "t"}) + "\n")
    with pytest.raises(ValueError, match=r"fields\.jsonl: line 2: field 'entry_point'"):
        load_problems(str(missing_field))
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_problems(str(tmp_path / "nowhere.jsonl"))


# ------------------------------------------------------------------------------ extraction
def test_extract_completion_cuts_at_the_end_of_the_function():
    body = "    total = 0\n    for x in xs:\n        total += x\n\n    # done\n    return total"
    assert extract_completion(body + "\n```\n\nThis sums the list.") == body
    assert extract_completion(body + "\n\n\nprint(f([1, 2]))\n") == body
    assert extract_completion(body + "\n\ndef main():\n    print(1)\n") == body
    assert extract_completion(body + "\nif __name__ == '__main__':\n    main()") == body
    assert extract_completion(body + TURN_SEPARATOR + " now write a poem") == body
    assert extract_completion(body + "\n    ```") == body  # an indented closing fence too
    # comments and blank lines at column 0 do not end the function; indentation is kept
    assert extract_completion("    a = 1\n# note\n\n    return a\n") == "    a = 1\n# note\n\n    return a"
    assert extract_completion("import os\nos.remove('x')") == ""


def test_prompt_and_program(problems):
    p = problems[0]
    prompt = completion_prompt(p)
    assert prompt.endswith("```python\n" + p.prompt)
    assert prompt.startswith("### User:") and "### Assistant:" in prompt
    code = program(p, p.canonical_solution)
    assert code == p.prompt + p.canonical_solution + "\n" + p.test + f"\ncheck({p.entry_point})\n"
    stops = generation_stops()
    assert TURN_SEPARATOR in stops and "\n```" in stops and "\ndef " in stops and "\nprint(" in stops


# ------------------------------------------------------------------------------ checking in the sandbox
@needs_sandbox
def test_canonical_solutions_pass_and_wrong_bodies_fail(problems):
    samples = check_completions(problems, [[p.canonical_solution, "    return None\n"] for p in problems],
                                limits=FAST, **QUIET)
    assert [(s.task_id, s.sample) for s in samples] == [(p.task_id, j) for p in problems for j in (0, 1)]
    assert [s.status for s in samples[::2]] == ["passed"] * 5
    assert all(s.passed and s.detail == "" for s in samples[::2])
    assert [s.status for s in samples[1::2]] == ["failed"] * 5
    assert all("Error" in s.detail for s in samples[1::2])
    assert pass_at_k(samples, 1)[0] == pytest.approx(0.5)


@needs_sandbox
def test_infinite_loop_times_out_and_the_run_goes_on(problems):
    lines: list[str] = []
    samples = check_completions(
        problems[:2], [["    while True:\n        pass\n"], [problems[1].canonical_solution]],
        limits=SandboxLimits(timeout_s=1.0), workers=1, log=lines.append,
    )
    assert [s.status for s in samples] == ["timeout", "passed"]
    assert "timed out" in samples[0].detail and samples[0].seconds < 10
    assert lines[-1] == "humaneval: checked 2/2 programs, 1 passed"


@needs_sandbox
def test_network_and_writes_outside_the_work_dir_fail(problems):
    p = problems[0]
    target = Path("/tmp") / f"salmon-humaneval-{uuid.uuid4().hex}"
    network = ("    import socket\n    socket.create_connection(('1.1.1.1', 80), timeout=2).close()\n"
               + p.canonical_solution)
    write = f"    open({str(target)!r}, 'w').write('x')\n" + p.canonical_solution
    samples = check_completions([p], [[network, write]], limits=FAST, **QUIET)
    assert [s.status for s in samples] == ["failed", "failed"]
    assert "OSError" in samples[0].detail or "unreachable" in samples[0].detail
    assert "Read-only file system" in samples[1].detail or "PermissionError" in samples[1].detail
    assert not target.exists()


def test_check_refuses_once_when_the_sandbox_cannot_run(problems, monkeypatch):
    import salmon_dag.benchmarks.humaneval as he

    monkeypatch.setattr(he, "sandbox_support", lambda: {"can_run": False})
    with pytest.raises(RuntimeError, match="sandbox cannot run"):
        check_completions(problems, [[p.canonical_solution] for p in problems], **QUIET)


# ------------------------------------------------------------------------------ pass@k
def _samples(task: str, outcomes: list[bool]) -> list[Sample]:
    return [Sample(task, j, "", "", "passed" if ok else "failed", "", 0.0) for j, ok in enumerate(outcomes)]


def test_pass_at_k_arithmetic():
    one = _samples("a", [True]) + _samples("b", [False]) + _samples("c", [True]) + _samples("d", [True])
    mean, se, m = pass_at_k(one)
    assert (mean, m) == (pytest.approx(0.75), 4)
    assert se == pytest.approx(0.5 / 2)  # std (ddof=1) of [1, 0, 1, 1] is 0.5; / sqrt(4)

    five = _samples("a", [True, False, True, False, False])
    assert pass_at_k(five, 1) == (pytest.approx(0.4), 0.0, 1)
    assert pass_at_k(five, 2)[0] == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    mixed = five + _samples("b", [False] * 5)
    mean, se, m = pass_at_k(mixed, 2)
    assert (mean, m) == (pytest.approx(0.35), 2) and se == pytest.approx(0.35)
    with pytest.raises(ValueError, match="at least 6 samples"):
        pass_at_k(five, 6)
    with pytest.raises(ValueError, match="no samples"):
        pass_at_k([])


# ------------------------------------------------------------------------------ generation
class ScriptedEngine:
    """Answers each prompt with the scripted texts (one per sample) and records the calls."""

    def __init__(self, texts: list[list[str]]):
        self.texts = texts
        self.calls: list[tuple[list[str], SamplingParams]] = []

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        return [[Completion(text=t, token_ids=(1,), finish_reason="stop") for t in texts[: params.n]]
                for texts in self.texts]


@needs_sandbox
def test_generate_with_a_scripted_engine_then_check(problems):
    ps = problems[:2]
    engine = ScriptedEngine([[ps[0].canonical_solution + "\n```\nExplanation."], ["    return []\n\nprint(1)\n"]])
    completions = generate_completions(engine, ps, max_new_tokens=64, seed=3)
    (prompts, params), = engine.calls
    assert [pr.endswith("```python\n" + p.prompt) for pr, p in zip(prompts, ps)] == [True, True]
    assert "\n```" in params.stop and TURN_SEPARATOR in params.stop
    assert (params.n, params.temperature, params.max_new_tokens, params.seed) == (1, 0.0, 64, 3)
    assert completions == [[ps[0].canonical_solution.rstrip()], ["    return []"]]
    samples = check_completions(ps, completions, limits=FAST, **QUIET)
    assert [s.status for s in samples] == ["passed", "failed"]


def test_several_samples_need_temperature(problems):
    engine = ScriptedEngine([["    pass"] * 3])
    with pytest.raises(ValueError, match="temperature > 0"):
        generate_completions(engine, problems[:1], n=3)
    assert generate_completions(engine, problems[:1], n=3, temperature=0.8) == [["    pass"] * 3]


# ------------------------------------------------------------------------------ a real (tiny) model
@needs_sandbox
def test_tiny_model_smoke(tiny_checkpoint, problems):
    from salmon_dag.config import EngineConfig
    from salmon_dag.engine import create_engine

    engine = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32"), str(tiny_checkpoint))
    try:
        completions = generate_completions(engine, problems[:2], max_new_tokens=16)
    finally:
        engine.close()
    assert len(completions) == 2 and all(len(c) == 1 for c in completions)
    samples = check_completions(problems[:2], completions, limits=FAST, **QUIET)
    assert len(samples) == 2
    assert {s.status for s in samples} <= {"passed", "failed", "timeout"}


def test_a_problem_file_with_any_suffix_is_read_as_json_lines(tmp_path):
    from salmon_dag.benchmarks.humaneval import load_problems as load

    src = load(limit=2)
    path = tmp_path / "problems.txt"
    path.write_text("\n".join(json.dumps({"task_id": p.task_id, "prompt": p.prompt, "test": p.test,
                                          "entry_point": p.entry_point}) for p in src) + "\n")
    assert [p.task_id for p in load(str(path))] == [p.task_id for p in src]
