"""The shared training harness (salmon_dag.training: lora, checkpoints, reporting, harness)."""

from __future__ import annotations

import json

import pytest

from salmon_dag.config import LoraConfig, RewardModelConfig

LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def _quiet(_: str) -> None:
    pass


def test_peft_config_for_a_scalar_head():
    from salmon_dag.training import peft_config

    pc = peft_config(LORA, task_type="SEQ_CLS", modules_to_save=["score"])
    assert str(getattr(pc.task_type, "value", pc.task_type)) == "SEQ_CLS"
    assert list(pc.modules_to_save) == ["score"]
    assert peft_config(LORA).modules_to_save is None


def test_progress_log_names_the_stage_and_shows_metrics():
    from types import SimpleNamespace

    from salmon_dag.training import ProgressLog

    lines: list[str] = []
    cb = ProgressLog("reward_model", lines.append)
    state = SimpleNamespace(max_steps=20, global_step=0, is_world_process_zero=True)
    cb.on_train_begin(None, state, None)
    for step in (1, 2, 20):
        state.global_step = step
        cb.on_log(None, state, None, logs={"loss": 0.5, "accuracy": 0.75, "learning_rate": 1e-4})
    cb.on_log(None, state, None, logs={"eval_loss": 0.6, "eval_accuracy": 0.7, "eval_runtime": 1.0})
    assert lines[0].startswith("reward_model: step 2/20 (10%) loss 0.5000 accuracy 0.7500 lr 1.00e-04")
    assert lines[1].startswith("reward_model: step 20/20 (100%)")
    assert lines[2] == "reward_model: eval at step 20/20: eval_accuracy 0.7000 eval_loss 0.6000"


def test_curves_have_an_accuracy_panel_only_when_logged(tmp_path):
    from salmon_dag.training import plot_curves
    from salmon_dag.training.reporting import curves_from_history

    history = [{"step": 1, "loss": 0.7, "accuracy": 0.5}, {"step": 2, "loss": 0.6, "accuracy": 0.6},
               {"step": 2, "eval_loss": 0.65, "eval_accuracy": 0.55}]
    panels = curves_from_history(history, "loss")
    assert panels == {"loss": {"train": [(1, 0.7), (2, 0.6)], "eval": [(2, 0.65)]},
                      "accuracy": {"train": [(1, 0.5), (2, 0.6)], "eval": [(2, 0.55)]}}
    assert list(curves_from_history(history[:2], "loss", metrics=())) == ["loss"]
    plot_curves(tmp_path / "curves.png", "rm", panels)
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_messages_name_the_stage(tmp_path):
    from salmon_dag.training import find_resumable, fingerprint
    from salmon_dag.training.checkpoints import stamp_work_dir

    work = tmp_path / "work"
    stamp_work_dir(work, fingerprint("reward_model", {"lr": 1}))
    (work / "checkpoint-2").mkdir()
    lines: list[str] = []
    assert find_resumable(work, fingerprint("reward_model", {"lr": 2}), lines.append) is None
    assert lines == [f"reward_model: {work} holds checkpoints of other inputs/config; starting fresh"]
    assert not (work / "checkpoint-2").exists()


def test_harness_trains_a_sequence_classifier_adapter(tiny_checkpoint, tmp_path):
    """Any HF Trainer runs through the harness: here a one-logit classifier (the reward model's
    shape) with LoRA and a fully trained score head, via plain transformers.Trainer."""
    import datasets
    import peft
    import torch
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.training import common_training_args, load_for_training, peft_config, run_training

    cfg = RewardModelConfig(lora=LORA, per_device_batch_size=2, max_steps=2, learning_rate=1e-3)
    tok = load_tokenizer(str(tiny_checkpoint))
    texts = ["good answer", "bad answer", "fine", "awful"]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [1.0, 0.0, 1.0, 0.0]})
    ds = ds.map(lambda r: tok(r["text"], padding="max_length", max_length=8), remove_columns=["text"])

    def build(work_dir, callbacks):
        model = load_for_training(AutoModelForSequenceClassification, str(tiny_checkpoint), None, False, cfg, "cpu",
                                  num_labels=1, pad_token_id=tok.pad_token_id)
        assert model.dtype == torch.float32 and model.score.weight.shape[0] == 1
        model = peft.get_peft_model(model, peft_config(cfg.lora, "SEQ_CLS", ["score"]))
        args = TrainingArguments(**common_training_args(cfg, work_dir, 0, "cpu", len(ds)))
        return Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks)

    lines: list[str] = []
    out = tmp_path / "rm"
    res = run_training("reward_model", build, {"data": len(ds)}, out, log=lines.append,
                       log_fields={"base_model_id": str(tiny_checkpoint)})
    assert res.is_adapter and res.steps == 2 and [s for s, _ in res.losses] == [1, 2]
    assert any(line.startswith("reward_model: step 2/2") for line in lines)
    assert lines[-1].startswith(f"reward_model: wrote {out}")
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    log = json.loads((out / "training_log.json").read_text())
    assert log["base_model_id"] == str(tiny_checkpoint) and log["is_adapter"] and log["steps"] == 2
    # same inputs again: the model these inputs train is already there, nothing is trained
    weights = (out / "adapter_model.safetensors").read_bytes()
    again = run_training("reward_model", build, {"data": len(ds)}, out, log=lines.append)
    assert again.steps == 2 and again.losses == res.losses and lines[-1].endswith("nothing to train")
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    # its weights cut short: resumed from the last checkpoint instead, already at max_steps
    (out / "adapter_model.safetensors").write_bytes(weights[:-10])
    again = run_training("reward_model", build, {"data": len(ds)}, out, log=_quiet)
    assert again.resumed_from is not None and again.steps == 2
    assert (out / "adapter_model.safetensors").read_bytes() == weights


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_runtime_error_names_the_stage(bits, monkeypatch):
    import importlib.util

    from salmon_dag.training import check_quantization_runtime

    with pytest.raises(RuntimeError, match=rf"^reward_model\.lora\.quantization: '{bits}'"):
        check_quantization_runtime(LoraConfig(quantization=bits), "mps", "reward_model")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    with pytest.raises(RuntimeError, match=rf"^reward_model\.lora\.quantization: '{bits}'.*bitsandbytes"):
        check_quantization_runtime(LoraConfig(quantization=bits), "cpu", "reward_model")


def test_the_optimizer_its_weight_decay_and_clipping_reach_the_trainer_arguments(tmp_path):
    from transformers import TrainingArguments

    from salmon_dag.config import SFTStageConfig, load_profile
    from salmon_dag.training import common_training_args

    default = TrainingArguments(**common_training_args(SFTStageConfig(), tmp_path, 0, "cpu", 8))
    assert (default.weight_decay, default.max_grad_norm) == (0.0, 1.0)  # transformers' defaults
    chosen = SFTStageConfig(optimizer="adamw_torch", weight_decay=0.1, max_grad_norm=0.3)
    args = TrainingArguments(**common_training_args(chosen, tmp_path, 0, "cpu", 8))
    assert (args.optim.value, args.weight_decay, args.max_grad_norm) == ("adamw_torch", 0.1, 0.3)
    for name in ("llama2-7b-qlora", "llama2-70b-qlora"):  # SALMON's SFT and RM: paged AdamW, clip 0.3
        p = load_profile(name)
        for stage in (p.sft, p.reward_model):
            kwargs = common_training_args(stage, tmp_path, 0, "cpu", 8)
            assert (kwargs["optim"], kwargs["max_grad_norm"]) == ("paged_adamw_32bit", 0.3)


@pytest.mark.slow
def test_a_finished_run_rebuilt_with_the_same_inputs_trains_no_further_step(tiny_checkpoint, tmp_path):
    """Epochs, not max_steps (the real profiles' way): the rebuild resumes from the last
    checkpoint and neither trains another step nor changes the saved model."""
    import datasets
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.training import common_training_args, load_for_training, run_training

    cfg = RewardModelConfig(lora=None, per_device_batch_size=2, epochs=1, learning_rate=1e-3)
    tok = load_tokenizer(str(tiny_checkpoint))
    # 5 steps, a checkpoint every 2 (CHECKPOINTS_PER_RUN): the last step is not a save step
    texts = ["good", "bad", "fine", "awful", "ok", "poor", "great", "worse", "nice", "dull"]
    ds = datasets.Dataset.from_dict({"text": texts, "label": [1.0, 0.0] * 5})
    ds = ds.map(lambda r: tok(r["text"], padding="max_length", max_length=8), remove_columns=["text"])

    def build(work_dir, callbacks):
        model = load_for_training(AutoModelForSequenceClassification, str(tiny_checkpoint), None, False, cfg, "cpu",
                                  num_labels=1, pad_token_id=tok.pad_token_id)
        args = TrainingArguments(**common_training_args(cfg, work_dir, 0, "cpu", len(ds)))
        return Trainer(model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=callbacks)

    out = tmp_path / "rm"
    first = run_training("reward_model", build, {"data": len(ds)}, out, log=_quiet)
    weights = (out / "model.safetensors").read_bytes()
    for _ in range(2):
        again = run_training("reward_model", build, {"data": len(ds)}, out, log=_quiet)
        assert again.steps == first.steps == 5
        assert (out / "model.safetensors").read_bytes() == weights
