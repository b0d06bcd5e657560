"""``benchmark_scores``: the base, SFT and RL policies on every configured benchmark, side by side.

For each policy, one engine load answers MT-Bench (turn by turn), the win-rate instructions and
the HumanEval problems; GSM8K runs through lm-evaluation-harness on the same loaded model (the hf
backend) or its own vLLM instance (the vllm backend). Then the generated code runs in the sandbox,
one judge grades every open-ended answer; the reward model's agreement with human labels comes from
``reward_model_eval``.
Every item lands in ``benchmark_outputs``; the aggregates (value, n, standard error) in
``benchmark_scores``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from salmon_dag.benchmarks.data import source_exists, where
from salmon_dag.benchmarks.fastchat_prompts import load_judge_prompts
from salmon_dag.benchmarks.grading import MT_BENCH, WIN_RATE, grade_mt_bench, judge_win_rate
from salmon_dag.benchmarks.judges import EngineJudge, OpenAIJudge, RewardModelJudge, TextJudge
from salmon_dag.benchmarks.mt_bench import Question, generate_answers, load_questions, with_samples
from salmon_dag.benchmarks.results import ItemResult, Score, outputs_frame, scores_frame
from salmon_dag.config import BenchmarksConfig, EngineConfig
from salmon_dag.engine import SamplingParams, engine_for
from salmon_dag.model_ref import ModelRef
from salmon_dag.paths import resolve_local
from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.config import AGREEMENT_METRIC
from salmon_dag.stage import DataStage, Reads, StageInputs
from salmon_dag.templates import format_chat_prompt

Log = Callable[[str], None]
GSM8K, HUMANEVAL, RM_AGREEMENT = "gsm8k", "humaneval", "rm_agreement"
# the number each benchmark is compared on (the asset check, the plots); higher is better
HEADLINE = {MT_BENCH: ("rating/overall", "rm_score/overall"), WIN_RATE: ("win_rate",),
            GSM8K: ("exact_match_strict", "exact_match_flexible"), HUMANEVAL: ("pass@1",),
            RM_AGREEMENT: (AGREEMENT_METRIC,)}
# who grades the benchmarks that need no judge
GRADERS = {GSM8K: "lm-eval exact_match", HUMANEVAL: "sandbox tests"}


@dataclass
class Inputs:
    """What every policy is asked (None: the benchmark is off or its optional data is absent)."""

    questions: list[Question] | None = None
    instructions: list[Question] | None = None
    problems: list | None = None  # salmon_dag.benchmarks.humaneval.Problem
    gsm8k: bool = False
    notes: list[str] = field(default_factory=list)


def load_inputs(cfg: BenchmarksConfig) -> Inputs:
    inputs = Inputs()

    def present(name: str, src) -> bool:
        if src.optional and not source_exists(src.source):
            inputs.notes.append(f"{name} skipped: {where(src.source)} not found (optional)")
            return False
        return True

    if cfg.mt_bench.enabled and present(MT_BENCH, cfg.mt_bench.questions):
        q = cfg.mt_bench.questions
        inputs.questions = with_samples(load_questions(q.source, cfg.mt_bench.references, cfg.mt_bench.limit,
                                                       q.split, q.subset), cfg.mt_bench.samples)
    if cfg.win_rate.enabled and present(WIN_RATE, cfg.win_rate.instructions):
        q = cfg.win_rate.instructions
        inputs.instructions = load_questions(q.source, None, cfg.win_rate.limit, q.split, q.subset)
    if cfg.humaneval.enabled:
        from salmon_dag.benchmarks.humaneval import load_problems

        inputs.problems = load_problems(cfg.humaneval.problems, cfg.humaneval.limit)
    inputs.gsm8k = cfg.gsm8k.enabled and present(GSM8K, cfg.gsm8k.data)
    return inputs


@dataclass
class Answers:
    """One policy's raw answers to the generation benchmarks, and its GSM8K result."""

    mt_bench: list[list[str]] | None = None
    instructions: list[str] | None = None
    code: list[list[str]] | None = None
    gsm8k: object | None = None  # salmon_dag.benchmarks.gsm8k.GSM8KResult


def answer(policy: ModelRef, inputs: Inputs, cfg: BenchmarksConfig, engine_cfg: EngineConfig, seed: int,
           log: Log, timings: dict[str, float]) -> Answers:
    """Everything ``policy`` is asked, with one engine load."""
    out = Answers()
    engine = engine_for(engine_cfg, policy)
    try:
        if inputs.questions:
            with _timed(timings, MT_BENCH):
                out.mt_bench = generate_answers(engine, inputs.questions, cfg.mt_bench.max_new_tokens, seed,
                                                cfg.mt_bench.temperature)
        if inputs.instructions:
            with _timed(timings, WIN_RATE):
                params = SamplingParams(max_new_tokens=cfg.win_rate.max_new_tokens,
                                        temperature=cfg.win_rate.temperature, seed=seed)
                prompts = [format_chat_prompt(q.turns[0]) for q in inputs.instructions]
                out.instructions = [c[0].text.strip() for c in engine.generate(prompts, params)]
        if inputs.problems:
            from salmon_dag.benchmarks.humaneval import generate_completions

            h = cfg.humaneval
            with _timed(timings, HUMANEVAL):
                out.code = generate_completions(engine, inputs.problems, n=h.samples_per_problem,
                                                temperature=h.temperature, max_new_tokens=h.max_new_tokens, seed=seed)
        if inputs.gsm8k:
            with _timed(timings, GSM8K):
                out.gsm8k = _gsm8k(policy, engine, cfg, engine_cfg, seed)
    finally:
        engine.close()
    log(f"benchmarks: {policy.name} answered ({', '.join(k for k, v in vars(out).items() if v is not None)})")
    return out


def _gsm8k(policy: ModelRef, engine, cfg: BenchmarksConfig, engine_cfg: EngineConfig, seed: int):
    import torch

    from salmon_dag.benchmarks.gsm8k import close_lm, hf_lm, run_gsm8k, vllm_lm

    g = cfg.gsm8k
    threads = torch.get_num_threads()
    if engine_cfg.backend == "hf":
        lm = hf_lm(engine.model, engine.tokenizer, batch_size=g.batch_size)
    else:  # lm-eval builds its own vLLM instance: free ours first
        engine.close()
        lm = vllm_lm(policy.model_id, policy.adapter_path, revision=policy.revision,
                     trust_remote_code=policy.trust_remote_code, dtype=engine_cfg.dtype,
                     gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
                     tensor_parallel_size=engine_cfg.tensor_parallel_size,
                     data_parallel_size=engine_cfg.data_parallel_size, max_model_len=engine_cfg.max_context)
    fewshot = g.fewshot if g.num_fewshot else None
    try:
        return run_gsm8k(lm, g.data.source, split=g.data.split, subset=g.data.subset,
                         fewshot_source=fewshot.source if fewshot else None,
                         fewshot_split=fewshot.split if fewshot else "train",
                         num_fewshot=g.num_fewshot, limit=g.limit, max_gen_toks=g.max_gen_toks, seed=seed)
    finally:
        if engine_cfg.backend != "hf":
            close_lm(lm, threads)


class _timed:
    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self):
        self.t0 = time.monotonic()

    def __exit__(self, *exc):
        self.timings[self.key] = self.timings.get(self.key, 0.0) + time.monotonic() - self.t0


# ------------------------------------------------------------------------------ scoring
def gsm8k_results(result) -> tuple[list[ItemResult], list[Score]]:
    items = [ItemResult(GSM8K, i.item_id, i.prompt, i.output, i.strict,
                        f"strict-match {i.strict:g}, flexible-extract {i.flexible:g}", i.target) for i in result.items]
    scores = [Score(GSM8K, metric, value, result.n, stderr) for metric, (value, stderr) in sorted(result.metrics.items())]
    return items, scores


def humaneval_results(problems, code, cfg: BenchmarksConfig, log: Log) -> tuple[list[ItemResult], list[Score]]:
    from salmon_dag.benchmarks.humaneval import check_completions, completion_prompt, pass_at_k
    from salmon_dag.benchmarks.sandbox import SandboxLimits

    h = cfg.humaneval
    samples = check_completions(problems, code, SandboxLimits(timeout_s=h.timeout_s, memory_mb=h.memory_mb),
                                workers=h.workers, log=log)
    prompts = {p.task_id: completion_prompt(p) for p in problems}
    items = [ItemResult(HUMANEVAL, s.task_id, prompts[s.task_id], s.completion, 1.0 if s.passed else 0.0,
                        f"{s.status}: {s.detail}".strip(), sample=s.sample) for s in samples]
    scores = []
    for k in h.k:
        value, stderr, n = pass_at_k(samples, k)
        scores.append(Score(HUMANEVAL, f"pass@{k}", value, n, stderr))
    return items, scores


def rm_agreement(rm_eval: pl.DataFrame) -> list[Score]:
    """The reward model's agreement with human labels, as ``reward_model_eval`` measured it on its
    held-out human pairs (under the Harmless principle and principle-free), with the standard
    error of a share (what ``results.mean_stderr`` gives for 0/1 outcomes)."""
    rows = rm_eval.filter(pl.col("metric").str.starts_with(AGREEMENT_METRIC))
    return [Score(RM_AGREEMENT, r["metric"], r["value"], r["n"],
                  math.sqrt(r["value"] * (1 - r["value"]) / (r["n"] - 1)) if r["n"] > 1 else 0.0)
            for r in rows.iter_rows(named=True)]


# ------------------------------------------------------------------------------ judge
def evaluation_principles(principles: Sequence[PrincipleText], names: Sequence[str] | None) -> tuple[str, ...]:
    by_name = {p.name: p for p in principles}
    unknown = [n for n in names or () if n not in by_name]
    if unknown:
        raise ValueError(f"benchmarks.judge.principles: {', '.join(unknown)} not in the reward-model principles "
                         f"(known: {', '.join(by_name)})")
    return tuple(by_name[n].definition for n in names) if names else tuple(p.definition for p in principles)


def text_judge(cfg: BenchmarksConfig, engine_cfg: EngineConfig, models: dict[str, ModelRef]) -> TextJudge | None:
    """The configured LLM judge, or None for the reward-model proxy."""
    j = cfg.judge
    if j.kind == "openai":
        return OpenAIJudge.from_env(j)
    if j.kind == "engine":
        if not j.model:
            raise ValueError("benchmarks.judge.model: the engine judge needs a model (sft_model, base_model, a Hub id or a path)")
        ref = models.get(j.model) or ModelRef("judge", j.model)
        return EngineJudge(engine_for(engine_cfg, ref), j.max_new_tokens)
    return None


# ------------------------------------------------------------------------------ the stage
@dataclass
class BenchmarkRun:
    scores: pl.DataFrame
    outputs: pl.DataFrame
    notes: list[str]
    seconds: dict[str, float]
    judge: str
    # lineage: the reward model's principle set, the RL policy's checkpoint
    principle_hash: str | None = None
    model_id: str | None = None


def run_benchmarks(
    policies: Sequence[ModelRef],
    cfg: BenchmarksConfig,
    engine_cfg: EngineConfig,
    rm_dir: Path,
    rm_principles: Sequence[PrincipleText],
    rm_eval: pl.DataFrame,
    seed: int,
    device: str = "cpu",
    log: Log = print,
    models: dict[str, ModelRef] | None = None,
) -> BenchmarkRun:
    """Answer, run, judge and aggregate every enabled benchmark for ``policies``."""
    from salmon_dag.reward_model.checkpoint import load_scorer

    timings: dict[str, float] = {}
    inputs = load_inputs(cfg)
    answers = {p.name: answer(p, inputs, cfg, engine_cfg, seed, log, timings) for p in policies}
    items: dict[str, list[ItemResult]] = {p.name: [] for p in policies}
    scores: dict[str, list[Score]] = {p.name: [] for p in policies}
    for p in policies:
        a = answers[p.name]
        if a.gsm8k is not None:
            it, sc = gsm8k_results(a.gsm8k)
            items[p.name] += it
            scores[p.name] += sc
        if a.code is not None:
            with _timed(timings, HUMANEVAL):
                it, sc = humaneval_results(inputs.problems, a.code, cfg, log)
            items[p.name] += it
            scores[p.name] += sc

    judge: TextJudge | RewardModelJudge | None = text_judge(cfg, engine_cfg, models or {p.name: p for p in policies})
    if judge is None:
        names = cfg.judge.principles
        judge = RewardModelJudge(load_scorer(rm_dir, device=device), evaluation_principles(rm_principles, names),
                                 f"reward_model under {', '.join(names) if names else 'all its principles'}")
    prompts = None
    if cfg.mt_bench.judge_prompts and isinstance(judge, RewardModelJudge):
        inputs.notes.append("mt_bench.judge_prompts unused: the reward-model judge scores answers without a prompt")
    elif cfg.mt_bench.judge_prompts:
        prompts = load_judge_prompts(resolve_local(cfg.mt_bench.judge_prompts))
    try:
        with _timed(timings, "judging"):
            for p in policies:
                a = answers[p.name]
                if a.mt_bench is not None:
                    it, sc = grade_mt_bench(inputs.questions, a.mt_bench, judge, prompts)
                    items[p.name] += it
                    scores[p.name] += sc
                ref = answers.get(cfg.reference_policy)
                if a.instructions is not None and p.name != cfg.reference_policy and ref is not None:
                    qs = inputs.instructions
                    it, sc = judge_win_rate([q.turns[0] for q in qs], a.instructions, ref.instructions, judge,
                                            [q.question_id for q in qs], cfg.judge.tie_margin)
                    items[p.name] += it
                    scores[p.name] += sc
                log(f"benchmarks: {p.name} graded")
    finally:
        if isinstance(judge, EngineJudge):
            judge.engine.close()

    frames_out = [outputs_frame(p.name, items[p.name]) for p in policies]
    frames_sc = [scores_frame(p.name, scores[p.name], p.adapter_path or p.model_id, judge.name, GRADERS)
                 for p in policies]
    if cfg.rm_agreement.enabled:
        sc = rm_agreement(rm_eval)
        if sc:
            frames_sc.append(scores_frame("reward_model", sc, str(rm_dir), "human labels"))
        else:
            inputs.notes.append(f"{RM_AGREEMENT} skipped: no held-out human pairs (reward_model.human_eval)")
    for note in inputs.notes:
        log(f"benchmarks: {note}")
    return BenchmarkRun(pl.concat(frames_sc), pl.concat(frames_out), inputs.notes,
                        {k: round(v, 1) for k, v in timings.items()}, judge.name)


def run_stage(inputs: StageInputs, log: Log = print) -> BenchmarkRun:
    """The ``benchmark_scores`` stage: :func:`run_benchmarks` for the warehouse's policies, with its
    reward model (the proxy judge) and that model's evaluation (its agreement with human labels)."""
    from salmon_dag.principles import principle_texts
    from salmon_dag.reward_model.checkpoint import checkpoint_dir

    cfg, engine_cfg = inputs.section("benchmarks"), inputs.section("engine")
    models = {name: inputs.model(name) for name in POLICIES}
    rm_principles = inputs.principles("reward_model")
    run = run_benchmarks([models[name] for name in cfg.policies], cfg, engine_cfg,
                         checkpoint_dir(inputs.model("reward_model")), principle_texts(rm_principles),
                         inputs.table("reward_model_eval"), inputs.seed, device=engine_cfg.device, log=log,
                         models=models)
    rl = models["ppo_policy"]
    return replace(run, principle_hash=rm_principles.content_hash, model_id=rl.adapter_path or rl.model_id)


# the policies a benchmark run can compare (benchmarks.policies picks among them)
POLICIES = ("base_model", "sft_model", "ppo_policy")
# the reward model judges (the proxy judge) and reward_model_eval has its agreement with humans
STAGE = DataStage("benchmark_scores", Reads(
    ("benchmarks", "engine"),
    (*POLICIES, "reward_model", "reward_model_eval", "principles/reward_model")), run_stage)
