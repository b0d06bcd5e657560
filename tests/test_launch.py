"""The training launcher (salmon_dag.launch, assets_defs.launch): the accelerate command line, jobs
and results as JSON, and real launches through Dagster Pipes: 2 data-parallel CPU processes (gloo)
train SFT, the reward model and PPO like 1 process with the same global batch; a failing rank
fails the asset with its error; only rank 0 reports."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from salmon_dag.config import PPOConfig, ProfileError, SFTStageConfig, load_profile
from salmon_dag.launch.command import accelerate_command, deepspeed_config_file
from salmon_dag.launch.jobs import TrainJob, rank_failures, write_failure
from salmon_dag.model_ref import ModelRef
from salmon_dag.reward_model.job import STAGE as RM_STAGE
from salmon_dag.rl.job import STAGE as RL_STAGE
from salmon_dag.training.sft_job import STAGE as SFT_STAGE
from salmon_dag.progress import Progress, parse_progress
from salmon_dag.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


# --------------------------------------------------------------------------- command line
def test_cpu_ranks_use_gloo_and_a_fixed_accelerate_setup():
    cfg = SFTStageConfig(launcher="accelerate", num_processes=2)
    cmd = accelerate_command(cfg, "/w/job.json", "cpu", "the_worker", python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    # torchrun starts the ranks (accelerate's --cpu would start one); the stages pick gloo themselves
    assert cmd[cmd.index("--num_processes") + 1] == "2" and "--multi_gpu" in cmd and "--cpu" not in cmd
    assert "--cpu" in accelerate_command(SFTStageConfig(launcher="accelerate"), "j", "cpu", "w")
    assert cmd[cmd.index("--mixed_precision") + 1] == "no" and cmd[cmd.index("--num_machines") + 1] == "1"
    assert cmd[-3:] == ["-m", "the_worker", "/w/job.json"]


def test_gpus_get_multi_gpu_or_the_shipped_deepspeed_config():
    ddp = accelerate_command(SFTStageConfig(launcher="accelerate", num_processes=8), "j", "cuda", "w")
    assert "--multi_gpu" in ddp and "--cpu" not in ddp and "--use_deepspeed" not in ddp
    zero = accelerate_command(SFTStageConfig(launcher="k8s", num_processes=8, deepspeed_stage=3), "j", "cuda", "w")
    path = Path(zero[zero.index("--deepspeed_config_file") + 1])
    assert "--use_deepspeed" in zero and "--multi_gpu" not in zero
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3
    assert json.loads(deepspeed_config_file(2).read_text())["zero_optimization"]["stage"] == 2
    own = accelerate_command(SFTStageConfig(launcher="accelerate", num_processes=16, accelerate_config="/c.yaml"),
                             "j", "cuda", "w")
    assert own[own.index("--config_file") + 1] == "/c.yaml" and "--num_machines" not in own
    assert own[own.index("--num_processes") + 1] == "16"


def test_launcher_settings_are_checked_where_they_are_read():
    with pytest.raises(ValueError, match="need launcher 'accelerate' or 'k8s'"):
        SFTStageConfig(num_processes=2)
    with pytest.raises(ValueError, match="ppo.deepspeed_stage"):
        PPOConfig(launcher="accelerate", num_processes=2, deepspeed_stage=2)
    with pytest.raises(ProfileError, match="launcher"):
        load_profile("tiny", {"reward_model": {"launcher": "deepspeed"}})
    big = load_profile("llama2-70b-qlora")
    assert (big.sft.launcher, big.sft.num_processes, big.sft.deepspeed_stage) == ("accelerate", 8, 2)


# --------------------------------------------------------------------------- jobs and results
def test_a_job_round_trips_and_a_bad_job_file_is_named(tmp_path):
    profile = load_profile("tiny", {"sft": {"launcher": "accelerate", "num_processes": 2}})
    job = TrainJob.for_stage(profile, SFT_STAGE, tmp_path / "out", base={"model_id": "m"}, data="d.parquet")
    assert TrainJob.read(job.write(tmp_path / "job.json")) == job
    # the job carries exactly the sections the stage declares (and its asset hashes)
    assert sorted(job.config) == sorted(SFT_STAGE.sections) == ["engine.device", "sft"]
    assert job.config["sft"]["num_processes"] == 2 and job.seed == profile.seed
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        TrainJob.read(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="unknown stage 'dpo'"):
        TrainJob("dpo", SFT_STAGE.module, "o", 0, "cpu", {})
    with pytest.raises(ValueError, match="cannot import its module"):
        TrainJob("dpo", "salmon_dag.no_such_stage", "o", 0, "cpu", {})
    with pytest.raises(ValueError, match="do not match its declared"):
        TrainJob.for_stage(profile, SFT_STAGE, tmp_path / "out", base={"model_id": "m"})


def test_a_job_reads_the_same_where_the_warehouse_is_mounted_elsewhere(tmp_path):
    """Written where Dagster runs, read in a pod that mounts the warehouse at another path: the
    job's warehouse paths follow the mount, the rest stays; the result's paths come back."""
    import shutil

    from salmon_dag.launch.jobs import job_warehouse, resolve_warehouse, write_result
    from salmon_dag.training.harness import TrainResult

    here = tmp_path / "dagster" / "warehouse"
    profile = load_profile("tiny")
    base = asdict(ModelRef("base_model", str(here / "models" / "base_model"), adapter_path="/elsewhere/adapter"))
    job = TrainJob.for_stage(profile, SFT_STAGE, here / "models" / "sft_model", base=base,
                             data=str(here / "self_align_sft_data" / "data.parquet"))
    job_file = job.write(here / ".dagster" / "launch" / "sft" / "job.json", here)
    assert str(here) not in job_file.read_text()
    pod = tmp_path / "mnt" / "wh"
    shutil.copytree(here, pod)
    shutil.rmtree(here)
    read = TrainJob.read(pod / ".dagster" / "launch" / "sft" / "job.json")
    assert read.out_dir == str(pod / "models" / "sft_model") and job_warehouse(pod / ".dagster/launch/sft/job.json") == pod
    assert read.inputs["base"]["model_id"] == str(pod / "models" / "base_model")
    assert read.inputs["base"]["adapter_path"] == "/elsewhere/adapter" and read.inputs["data"].startswith(str(pod))
    result = TrainResult(Path(read.out_dir), 2, [(1, 0.5)], [], None, 1.0, 4, False)
    sent = write_result(pod / ".dagster" / "launch" / "sft", read, result, pod)
    assert str(pod) not in json.dumps(sent)
    back = SFT_STAGE.decode(resolve_warehouse(sent, here))
    assert back.out_dir == here / "models" / "sft_model"


def test_a_pod_gets_the_job_where_it_mounts_the_warehouse_and_the_shipped_files_in_its_image(tmp_path):
    from assets_defs.launch import launch_command

    wh = Warehouse(tmp_path / "warehouse")
    job_file = wh.dagster_home / "launch" / "sft" / "job.json"
    k8s = {"image": "img", "working_dir": "/app", "warehouse_mount": "/data/wh"}
    profile = load_profile("tiny", {"kubernetes": k8s, "sft": {"launcher": "k8s", "num_processes": 8, "deepspeed_stage": 2}})
    cmd = launch_command(profile, profile.sft, job_file, wh, "cuda")
    assert cmd[0] == "python" and cmd[-1] == "/data/wh/.dagster/launch/sft/job.json"
    assert cmd[cmd.index("--deepspeed_config_file") + 1] == "/app/salmon_dag/launch/deepspeed/zero2.json"
    same = load_profile("tiny", {"kubernetes": {**k8s, "warehouse_mount": None}, "sft": {"launcher": "k8s"}})
    assert launch_command(same, same.sft, job_file, wh, "cuda")[-1] == str(job_file)
    with pytest.raises(ProfileError, match="warehouse_mount"):
        load_profile("tiny", {"kubernetes": {**k8s, "warehouse_mount": "data/wh"}})
    local = load_profile("tiny", {"sft": {"launcher": "accelerate"}})
    assert launch_command(local, local.sft, job_file, wh, "cpu")[-1] == str(job_file)


def test_a_stage_reads_only_the_sections_it_declares(tmp_path):
    from salmon_dag.config import RLConfig
    from salmon_dag.stage import StageRun

    run = StageRun(tmp_path, 0, "cpu", load_profile("tiny").section_values(*SFT_STAGE.sections), {})
    with pytest.raises(KeyError, match="did not declare"):
        run.section("rl", RLConfig)


def test_the_dagster_layer_hashes_what_each_training_stage_reads():
    from assets_defs.reward_model import RM_ASSET, RM_EVAL_ASSET
    from assets_defs.rl import POLICY_ASSET
    from assets_defs.self_align import SFT_MODEL_ASSET

    for decl, stage in ((SFT_MODEL_ASSET, SFT_STAGE), (RM_ASSET, RM_STAGE), (RM_EVAL_ASSET, RM_STAGE),
                        (POLICY_ASSET, RL_STAGE)):
        assert decl.sections == stage.sections
    # RL's rollouts read the engine's dtype, context and threads, not only its device and backend
    tiny = load_profile("tiny")
    changed = load_profile("tiny", {"engine": {"max_context": 1024}})
    assert POLICY_ASSET.config_hash(tiny) != POLICY_ASSET.config_hash(changed)


def test_results_cross_the_process_boundary_unchanged(tmp_path):
    from salmon_dag.rl.stage import RLResult
    from salmon_dag.training.harness import TrainResult

    tr = TrainResult(tmp_path, 4, [(1, 2.5), (2, 2.0)], [{"loss": 2.5, "step": 1}], None, 3.0, 6, True)
    def across(stage, result):
        return stage.decode(json.loads(json.dumps(stage.encode(result))))

    assert across(SFT_STAGE, tr) == tr
    assert across(RM_STAGE, (tr, None)) == (tr, None) and across(RM_STAGE, (tr, tr)) == (tr, tr)
    rl = RLResult("ppo", tmp_path, True, [{"step": 0, "objective/kl": 0.1}], [{"step": 0, "principles": ["a"]}],
                  16, 0, None, 9.0)
    assert across(RL_STAGE, rl) == rl


def test_rank_failures_are_read_lowest_rank_first(tmp_path):
    for rank in (3, 1):
        try:
            raise ValueError(f"bad shard {rank}\nsecond line")
        except ValueError as exc:
            write_failure(tmp_path, rank, exc, "Traceback ...")
    assert [(r, line) for r, line, _ in rank_failures(tmp_path)] == [(1, "ValueError: bad shard 1"),
                                                                     (3, "ValueError: bad shard 3")]


def test_principle_draws_do_not_depend_on_how_a_step_is_split():
    from salmon_dag.config import RLRewardConfig
    from salmon_dag.principles import load_principles
    from salmon_dag.rl.reward import SalmonReward

    reward = SalmonReward(None, load_principles(ROOT / "principles", "rl"), RLRewardConfig(), seed=3)
    types = ["general", "reasoning", "red_teaming", "general"]
    whole = reward.draw(7, types)
    halves = reward.draw(7, types[:2], 0, types) + reward.draw(7, types[2:], 2, types)
    assert halves == whole and len({tuple(p.name for p in ps) for ps in whole}) > 1


# --------------------------------------------------------------------------- real launches
def _launch(tmp_path: Path, job: TrainJob, profile) -> tuple[object, list[str]]:
    """Run ``job`` under its launcher inside a Dagster asset; (result, the run's log messages)."""
    from assets_defs.launch import train

    out: dict[str, object] = {}

    @dg.asset(name=f"launched_{job.stage}")
    def launched(context):
        out["result"] = train(context, job, profile, Warehouse(tmp_path / "warehouse"))
        return dg.MaterializeResult()

    with dg.instance_for_test() as instance:
        res = dg.materialize([launched], instance=instance, raise_on_error=False)
        logs = [e.user_message for e in instance.all_logs(res.run_id)]
    if not res.success:
        error, messages = next(e for e in res.all_events if e.is_step_failure).step_failure_data.error, []
        while error is not None:  # Dagster's wrapper, then the asset's own error
            messages.append(error.message.strip())
            error = error.cause
        raise RuntimeError("\n".join(messages))
    return out["result"], logs


def _sft_data(path: Path) -> Path:
    prompts = ["Name a colour.", "What is two plus two?", "Say hi.", "Where is Paris?",
               "Give one tip for sleep.", "Name a fruit.", "What is ice?", "Count to three."]
    answers = ["Blue.", "Two plus two is four.", "Hi there!", "Paris is in France.",
               "Keep a regular bedtime, every day of the week.", "An apple.", "Frozen water.", "One, two, three."]
    pl.DataFrame({"prompt": prompts, "response": answers, "filter_reason": [None] * 8},
                 schema_overrides={"filter_reason": pl.Utf8}).write_parquet(path)
    return path


def _sft_profile(processes: int, per_device: int, zero: int = 0):
    launcher = "inprocess" if processes == 1 else "accelerate"
    return load_profile("tiny", {"sft": {
        "lora": LORA, "per_device_batch_size": per_device, "learning_rate": 1e-2, "max_steps": 4, "max_seq_len": 96,
        "launcher": launcher, "num_processes": processes, "deepspeed_stage": zero}, "engine": {"device": "cpu"}})


def _train_sft(checkpoint: Path, tmp_path: Path, processes: int, per_device: int, zero: int = 0):
    data = _sft_data(tmp_path / "sft.parquet")
    profile = _sft_profile(processes, per_device, zero)
    name = f"sft-{processes}-{zero}"
    job = TrainJob.for_stage(profile, SFT_STAGE, tmp_path / name, base=asdict(ModelRef("base_model", str(checkpoint))),
                             data=str(data))
    return _launch(tmp_path / f"w-{name}", job, profile)


@pytest.mark.slow
def test_two_processes_train_sft_like_one_with_the_same_global_batch(tiny_checkpoint, tmp_path):
    one, _ = _train_sft(tiny_checkpoint, tmp_path, 1, 4)
    two, logs = _train_sft(tiny_checkpoint, tmp_path, 2, 2)
    assert [s for s, _ in two.losses] == [1, 2, 3, 4] and two.train_examples == 8 and two.is_adapter
    # the same 4 examples per optimizer step: the losses agree to float32 reduction order
    np.testing.assert_allclose([v for _, v in two.losses], [v for _, v in one.losses], rtol=2e-4)
    assert _max_weight_diff(one.out_dir, two.out_dir) < 1e-4
    # rank 0's lines arrive as Dagster log events, once (not once per rank)
    assert sum("sft: wrote" in m for m in logs) == 1 and any("sft: step 4/4" in m for m in logs)
    assert any("--num_processes 2" in m and "2 process(es) on cpu" in m for m in logs)


def _need_deepspeed() -> None:
    if os.environ.get("CI"):
        import deepspeed  # noqa: F401  (the dev extra installs it: CI must run these, not skip them)
    else:
        pytest.importorskip("deepspeed", reason="DeepSpeed comes with the dev and gpu extras")


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_deepspeed_zero_on_two_cpu_processes_trains_sft_like_one(tiny_checkpoint, tmp_path, zero):
    _need_deepspeed()
    one, _ = _train_sft(tiny_checkpoint, tmp_path, 1, 4)
    two, logs = _train_sft(tiny_checkpoint, tmp_path, 2, 2, zero)
    assert any(f"zero{zero}.json" in m for m in logs)
    np.testing.assert_allclose([v for _, v in two.losses], [v for _, v in one.losses], rtol=2e-4)
    # ZeRO-3 shards every weight: the saved adapter is whole because the save gathers them
    assert _max_weight_diff(one.out_dir, two.out_dir) < 1e-4


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    wa, wb = (load_file(str(next(Path(d).glob("*.safetensors")))) for d in (a, b))
    assert wa.keys() == wb.keys() and wa
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def _rm_data(path: Path) -> Path:
    brief = json.dumps([{"name": "Brief", "negated": False, "text": "Answer in as few words as possible."}])
    wordy = json.dumps([{"name": "Brief", "negated": True, "text": "Answer at length, in full sentences."}])
    rows = []
    for i, (prompt, short, long) in enumerate([
        ("Name a colour.", "Blue.", "Blue is a colour that many people like best of all colours."),
        ("What is two plus two?", "Four.", "Two plus two makes four, which you can check by counting."),
        ("Say hi.", "Hi!", "Hello there, it is very nice to meet you today, my friend."),
        ("Where is Paris?", "France.", "Paris is the capital city of France, in western Europe."),
    ]):
        for j, (principles, preferred) in enumerate(((brief, 1), (wordy, 2))):
            rows.append({"example_id": f"e{i}{j}", "pair_id": f"p{i}", "prompt": prompt, "response_1": short,
                         "response_2": long, "preferred": preferred, "principles": principles})
    pl.DataFrame(rows).write_parquet(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("zero", [0, 3])
def test_two_processes_train_the_reward_model_like_one(tiny_checkpoint, tmp_path, zero):
    if zero:
        _need_deepspeed()
    data = _rm_data(tmp_path / "rm.parquet")
    base = asdict(ModelRef("base_model", str(tiny_checkpoint)))
    results = {}
    for processes, per_device in ((1, 4), (2, 2)):
        profile = load_profile("tiny", {"reward_model": {
            "lora": LORA, "per_device_batch_size": per_device, "learning_rate": 5e-3, "max_steps": 2, "max_seq_len": 128,
            "eval_fraction": 0.0, "cpu_precision": "float32", "pmp": None, "human_eval": None,
            "launcher": "inprocess" if processes == 1 else "accelerate", "num_processes": processes,
            "deepspeed_stage": zero if processes > 1 else 0,
        }, "engine": {"device": "cpu"}})
        job = TrainJob.for_stage(profile, RM_STAGE, tmp_path / f"rm-{processes}", base=base, data=str(data))
        results[processes], _ = _launch(tmp_path / f"w{processes}", job, profile)
    (one, pmp1), (two, pmp2) = results[1], results[2]
    assert pmp1 is None and pmp2 is None and two.steps == 2 and two.train_examples == 8
    np.testing.assert_allclose([v for _, v in two.losses], [v for _, v in one.losses], rtol=2e-4)
    # a merged save (LoRA folded into the weights, head included); under ZeRO-3 from gathered shards
    assert _max_weight_diff(one.out_dir, two.out_dir) < 1e-4


@pytest.mark.slow
def test_two_processes_run_ppo_steps_like_one(tmp_path):
    """Near-greedy sampling (temperature 1e-4: 0.01 left this random model's close logits to the
    sampling RNG once the tiny world, and so its tokenizer, changed) makes each response independent
    of how the step's prompts are split over processes and of the sampling RNG; one sequence per
    micro-batch makes the averaged gradient independent of the split too. Then 2 x 2 prompts =
    1 x 4 prompts, step by step."""
    from salmon_dag.perf.models import random_model, random_reward_model
    from salmon_dag.principles import load_principles
    from salmon_dag.rl.principle_set import rl_principle_set

    policy = random_model(tmp_path / "policy")
    rm = random_reward_model(policy, tmp_path / "rm")
    prompts = pl.DataFrame({
        "prompt_id": [f"p{i:02d}" for i in range(8)], "split": ["train"] * 8,
        "prompt": [f"Name {i} colours of the sea near island number {i}." for i in range(8)],
        "question_type": ["general", "reasoning", "red_teaming", "general"] * 2,
    })
    prompts.write_parquet(tmp_path / "pool.parquet")
    results = {}
    for processes, rollout, accumulation in ((1, 4, 4), (2, 2, 2)):
        profile = load_profile("tiny", {"ppo": {
            "lora": LORA, "rollout_batch_size": rollout, "per_device_batch_size": 1,
            "gradient_accumulation_steps": accumulation, "ppo_epochs": 1, "max_new_tokens": 6, "temperature": 1e-4,
            "whiten_advantages": False, "max_steps": 2, "learning_rate": 1e-3, "warmup_steps": 0,
            "cpu_precision": "float32", "samples_every": 1, "launcher": "inprocess" if processes == 1 else "accelerate",
            "num_processes": processes,
        }, "engine": {"device": "cpu", "backend": "hf"}})
        pset = rl_principle_set(load_principles(ROOT / "principles", "rl"),
                                load_principles(ROOT / "principles", "reward_model"), profile.rl)
        job = TrainJob.for_stage(
            profile, RL_STAGE, tmp_path / f"ppo-{processes}", source={"model_id": str(policy)}, reward_checkpoint=str(rm),
            principles_dir=str(ROOT / "principles"), principle_hash=pset.content_hash,
            prompts=str(tmp_path / "pool.parquet"))
        results[processes], _ = _launch(tmp_path / f"w{processes}", job, profile)
    one, two = results[1], results[2]
    assert len(one.steps) == len(two.steps) == 2 and two.prompts == 8
    for metric in ("objective/rm_score", "objective/kl", "objective/response_tokens", "ppo/policy_loss",
                   "ppo/value_loss", "ppo/grad_norm"):
        np.testing.assert_allclose([s[metric] for s in two.steps], [s[metric] for s in one.steps],
                                   rtol=1e-3, atol=1e-5, err_msg=metric)
    assert _max_weight_diff(one.out_dir, two.out_dir) < 1e-4


FAILING_WORKER = """
import os, sys
from assets_defs.train_worker import main

def run(job, log):
    log("rank 0 starts")
    if os.environ["RANK"] == "1":
        raise ValueError("shard 1 is unreadable")
    import torch.distributed as dist
    dist.init_process_group("gloo")
    dist.barrier()  # waits for rank 1, which never comes: the launcher must stop rank 0

main(sys.argv[1], run)
"""


def test_a_failing_rank_fails_the_asset_with_its_error(tmp_path, monkeypatch):
    import assets_defs.launch as launch

    (tmp_path / "failing_worker.py").write_text(FAILING_WORKER)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(launch, "WORKER_MODULE", "failing_worker")
    profile = _sft_profile(2, 2)
    job = TrainJob.for_stage(profile, SFT_STAGE, tmp_path / "out", base={"model_id": "unused"}, data="unused")
    with pytest.raises(RuntimeError, match=r"sft: rank 1 of 2 failed: ValueError: shard 1 is unreadable"):
        _launch(tmp_path, job, profile)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- through the CLI
@pytest.mark.slow
def test_salmon_run_trains_sft_on_two_processes_with_metadata_and_progress(project, tmp_path):
    """`salmon run` on a profile whose SFT uses the accelerate launcher: the step's log has rank 0's
    lines, the progress view shows the launched training, the materialization has its metadata."""
    from projects import CI_PROFILE, copy_project, instance_of, salmon

    root, env = copy_project(project, tmp_path / "copy")
    profile = tmp_path / "launched.yaml"
    profile.write_text(f"extends: {CI_PROFILE}\nsft:\n  launcher: accelerate\n  num_processes: 2\n")
    env = {**env, "SALMON_PROFILE": str(profile)}
    shown = salmon((root, env), "run", "--select", "sft_model").stdout
    assert "✓ [1/1] sft_model" in shown
    with instance_of((root, env)) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey("sft_model"))
        meta = event.asset_materialization.metadata
        logs = [e.user_message for e in instance.all_logs(event.run_id)]
    assert meta["train/steps"].value == 4 and meta["train/train_examples"].value > 0 and "plot" in meta
    assert sum("sft: wrote" in m for m in logs) == 1
    assert any("accelerate launch, 2 process(es) on cpu" in m for m in logs)
    # the progress view's bar comes from these lines of the launched ranks (once each, rank 0's)
    progress = [p for p in map(parse_progress, logs) if p is not None and p.task == "sft"]
    assert progress and progress[-1] == Progress("sft", 4, 4) and len({p.done for p in progress}) == len(progress)


def test_the_readme_scaling_examples_are_valid_profiles():
    import re

    import yaml

    from salmon_dag.launch.k8s import pod_run_kwargs

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Scaling out"):text.index("## The warehouse")]
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", section, re.S)]
    multi_gpu, cluster = (load_profile("tiny", b) for b in blocks)
    assert (multi_gpu.sft.launcher, multi_gpu.sft.deepspeed_stage, multi_gpu.ppo.num_processes) == ("accelerate", 2, 8)
    pod = pod_run_kwargs(cluster.kubernetes, ["python"], {}, gpus=cluster.sft.num_processes)["base_pod_spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
