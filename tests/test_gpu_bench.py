"""salmon_dag.perf.gpu on the CPU at the tiny shape with the smallest sizes: the structure of its
result and basic sanity (the numbers themselves are for a GPU, docs/benchmarks.md)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from salmon_dag.perf import gpu as gpu_bench  # noqa: E402

# the whole benchmark suite at its smallest sizes: a run of every section, not a unit test
pytestmark = pytest.mark.slow

SMALL = gpu_bench.Sizes(judge_pairs=1, principle_counts=(1, 8), gen_batches=(1, 2), gen_new_tokens=4, engine_batch=4,
                        train_batch=1, sft_len=32, rm_len=32, ppo_prompt_len=8, ppo_response_len=8, warmup=1, steps=1,
                        repeats=1)


@pytest.fixture(scope="module")
def result() -> dict:
    return gpu_bench.run_bench("tiny", "cpu", sizes=SMALL, log=lambda _: None)


def test_result_structure_and_sanity(result):
    meta, rows = result["meta"], result["rows"]
    assert meta["shape"] == "tiny" and meta["dtype"] == "float32" and meta["params"] > 0
    assert meta["peak_tflops"] is None and meta["skipped"] == []
    cases = [(r["section"], r["case"]) for r in rows]
    assert [c for s, c in cases if s == "judge"] == ["P=1 naive", "P=1 prefix-shared", "P=8 naive", "P=8 prefix-shared"]
    assert [c for s, c in cases if s == "generate"] == ["batch 1", "batch 2"]
    assert [c.split()[0] for s, c in cases if s == "train"] == ["SFT", "RM", "PPO"]
    for r in rows:
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        assert r["mfu"] is None, r  # no peak given on the CPU: no MFU
        assert r["peak_mem_gib"] > 0
    for r in rows:
        if r["case"].endswith("prefix-shared"):
            assert r["extra"]["max_abs_dscore"] < 1e-4  # the same scores as naive judging
            assert r["extra"]["speedup"] > 0
        if r["section"] == "train":
            assert r["extra"]["flops_per_token"] > 0 and r["extra"]["trainable_params"] > 0
    json.dumps(result, allow_nan=False)
    table = gpu_bench.markdown(result)
    assert table.count("\n| ") == len(rows) + 1  # header and one line per row


def test_flops_per_token_counts_frozen_weights_at_4_and_trained_at_6():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 6 * 2 * 16 * 32
    assert gpu_bench.train_flops_per_token(model, 16) == 6 * linear + attention
    model.requires_grad_(False)
    assert gpu_bench.train_flops_per_token(model, 16) == 4 * linear + attention
