"""Principle-engraving SFT (salmon_dag.training.sft) on the micro checkpoint: fast, CPU only."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from salmon_dag import templates
from salmon_dag.config import LoraConfig, SFTStageConfig

PROMPTS = [
    "What is the capital of France?",
    "Name a colour.",
    "How do I boil an egg?",
    "Say hi.",
    "Give me one tip for sleeping better.",
    "What is two plus two?",
]
ANSWERS = [
    "Paris is the capital of France.",
    "Blue.",
    "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
    "Hi!",
    "Keep a regular bedtime.",
    "Two plus two is four.",
]
LORA = LoraConfig(r=4, alpha=8, dropout=0.0)


def _cfg(**kw) -> SFTStageConfig:
    base = dict(lora=LORA, per_device_batch_size=2, learning_rate=1e-2, max_steps=4, max_seq_len=96)
    base.update(kw)
    return SFTStageConfig(**base)


def _examples():
    from salmon_dag.training import sft_examples

    return sft_examples(PROMPTS, ANSWERS)


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- data
def test_sft_examples_prompt_completion_format():
    ds = _examples()
    assert ds.column_names == ["prompt", "completion"]
    row = ds[0]
    assert row["prompt"] == templates.format_chat_prompt(PROMPTS[0])
    assert row["prompt"].endswith(templates.ASSISTANT_TAG)
    # The answer follows after one space and ends with the text generation stops on.
    assert row["completion"] == " " + ANSWERS[0] + templates.TURN_SEPARATOR
    assert any(row["completion"].endswith(stop) for stop in templates.STOP_SEQUENCES)
    with pytest.raises(ValueError):
        from salmon_dag.training import sft_examples

        sft_examples(["a", "b"], ["only one"])


def test_labels_mask_prompt_tokens(tiny_checkpoint, tmp_path):
    from salmon_dag.training import build_sft_trainer

    ds = _examples()
    trainer = build_sft_trainer(str(tiny_checkpoint), ds, _cfg(), tmp_path / "work", seed=0, log=_quiet)
    tok = trainer.processing_class
    rows = [trainer.train_dataset[i] for i in range(len(ds))]
    batch = trainer.data_collator(rows)  # exactly what the training loop feeds the model
    assert batch["labels"].shape == batch["input_ids"].shape
    for i, (prompt, completion) in enumerate(zip(ds["prompt"], ds["completion"])):
        prompt_ids = tok(prompt)["input_ids"]
        full_ids = tok(prompt + completion)["input_ids"] + [tok.eos_token_id]  # TRL appends EOS
        assert full_ids[: len(prompt_ids)] == prompt_ids  # the prompt tokenizes as a prefix
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        n = len(full_ids)
        assert ids[:n] == full_ids
        assert all(lab == -100 for lab in labels[: len(prompt_ids)]), "prompt tokens must not be trained"
        assert labels[len(prompt_ids) : n] == full_ids[len(prompt_ids) : n], "every answer token is trained"
        assert all(lab == -100 for lab in labels[n:]), "padding is not trained"
        trained = tok.decode([t for t in labels if t != -100])
        assert trained == completion + tok.eos_token
        assert trained.startswith(" " + ANSWERS[i]) and templates.TURN_SEPARATOR in trained


# --------------------------------------------------------------------------- training
def _logits(model, tok, text: str):
    import torch

    with torch.no_grad():
        enc = tok(text, return_tensors="pt")
        return model(**enc).logits


def test_train_writes_loadable_adapter_atomically(tiny_checkpoint, tmp_path):
    import torch
    from peft import PeftModel

    from salmon_dag.base_model.loading import load_causal_lm, load_tokenizer
    from salmon_dag.training import train_sft

    out = tmp_path / "models" / "sft"
    lines: list[str] = []
    res = train_sft(str(tiny_checkpoint), _examples(), _cfg(), out, seed=0, log=lines.append)

    assert res.out_dir == out and res.is_adapter and res.steps == 4 and res.resumed_from is None
    assert res.train_examples == len(PROMPTS) and res.seconds > 0
    assert [s for s, _ in res.losses] == [1, 2, 3, 4]
    assert all(loss > 0 for _, loss in res.losses)
    assert any(line.startswith("sft: step 4/4") and "loss" in line for line in lines)

    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "loss.png"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log = json.loads((out / "training_log.json").read_text())
    assert log["steps"] == 4 and [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2, 3, 4]
    # Only the adapter and its (hidden) work dir beside it: no temp/old siblings left behind.
    assert sorted(p.name for p in out.parent.iterdir()) == ["." + out.name + ".work", out.name]
    work = out.parent / f".{out.name}.work"
    assert any(work.glob("checkpoint-*")) and any((work / "tensorboard").glob("events.out.tfevents*"))

    tok = load_tokenizer(str(tiny_checkpoint))
    assert tok.padding_side == "left" and load_tokenizer(str(out)).padding_side == "left"
    text = templates.format_chat_prompt(PROMPTS[0])
    base_logits = _logits(load_causal_lm(str(tiny_checkpoint)), tok, text)
    tuned = PeftModel.from_pretrained(load_causal_lm(str(tiny_checkpoint)), str(out)).eval()
    tuned_logits = _logits(tuned, tok, text)
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4)


def test_interrupted_run_resumes_from_checkpoint(tiny_checkpoint, tmp_path):
    from transformers import TrainerCallback

    from salmon_dag.training import train_sft

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("simulated interruption at step 3")

    out = tmp_path / "sft"
    work = tmp_path / "work"
    ds, cfg = _examples(), _cfg(max_steps=4)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train_sft(str(tiny_checkpoint), ds, cfg, out, seed=0, work_dir=work, log=_quiet,
                  save_steps=2, callbacks=[Interrupt()])
    assert not out.exists()
    assert sorted(p.name for p in work.glob("checkpoint-*")) == ["checkpoint-2"]

    res = train_sft(str(tiny_checkpoint), ds, cfg, out, seed=0, work_dir=work, log=_quiet, save_steps=2)
    assert res.resumed_from is not None and Path(res.resumed_from) == work / "checkpoint-2"
    assert res.steps == 4
    assert [s for s, _ in res.losses] == [1, 2, 3, 4]  # history of the first run is carried over
    assert (out / "adapter_model.safetensors").is_file()

    # Other inputs (here: the learning rate) never resume from these checkpoints; files that
    # training did not write stay untouched.
    (work / "keep.txt").write_text("mine")
    res2 = train_sft(str(tiny_checkpoint), ds, _cfg(max_steps=4, learning_rate=5e-3), out, seed=0,
                     work_dir=work, log=_quiet, save_steps=2)
    assert res2.resumed_from is None and res2.steps == 4
    assert (work / "keep.txt").read_text() == "mine"


def test_same_inputs_give_same_adapter(tiny_checkpoint, tmp_path):
    import torch
    from safetensors.torch import load_file

    from salmon_dag.training import train_sft

    cfg = _cfg(max_steps=3, lora=LoraConfig(r=4, alpha=8, dropout=0.1))  # dropout exercises the RNG
    weights = []
    for run in ("a", "b"):
        res = train_sft(str(tiny_checkpoint), _examples(), cfg, tmp_path / run / "sft", seed=7, log=_quiet)
        assert res.resumed_from is None
        weights.append(load_file(str(res.out_dir / "adapter_model.safetensors")))
    a, b = weights
    assert a.keys() == b.keys() and a
    assert any(k for k in a if "lora_B" in k and a[k].abs().sum() > 0)  # the adapter did train
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- QLoRA
def test_quantization_and_peft_configs():
    from salmon_dag.training import peft_config, quantization_config

    q4 = quantization_config(LoraConfig(quantization="4bit"))
    assert q4.load_in_4bit and not q4.load_in_8bit
    assert q4.bnb_4bit_quant_type == "nf4" and q4.bnb_4bit_use_double_quant
    assert "bfloat16" in str(q4.bnb_4bit_compute_dtype)
    q8 = quantization_config(LoraConfig(quantization="8bit"))
    assert q8.load_in_8bit and not q8.load_in_4bit
    assert quantization_config(LoraConfig(quantization="none")) is None
    assert quantization_config(None) is None

    pc = peft_config(LoraConfig(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"]))
    assert (pc.r, pc.lora_alpha, pc.lora_dropout) == (8, 16, 0.1)
    assert set(pc.target_modules) == {"q_proj", "v_proj"}
    assert str(getattr(pc.task_type, "value", pc.task_type)) == "CAUSAL_LM"


@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_qlora_without_bitsandbytes_is_a_one_line_error(tiny_checkpoint, tmp_path, monkeypatch, bits):
    import importlib.util

    from salmon_dag.training import train_sft

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    cfg = _cfg(lora=LoraConfig(quantization=bits))
    with pytest.raises(RuntimeError) as info:
        train_sft(str(tiny_checkpoint), _examples(), cfg, tmp_path / "sft", seed=0, log=_quiet, device="cpu")
    msg = str(info.value)
    assert "\n" not in msg
    assert "sft.lora.quantization" in msg and "bitsandbytes" in msg
    assert "pip install -e '.[gpu]'" in msg
    assert not (tmp_path / "sft").exists() and not (tmp_path / ".sft.work").exists()


def test_qlora_trains_on_the_cpu_with_bitsandbytes(tiny_checkpoint, tmp_path):
    """4-bit NF4 base, LoRA in bf16 compute, through bitsandbytes' CPU backend (what a CPU
    rehearsal of a QLoRA profile runs): the adapter trains and saves."""
    pytest.importorskip("bitsandbytes", reason="bitsandbytes (the dev extra) is not installed")
    from salmon_dag.training import train_sft

    cfg = _cfg(lora=LoraConfig(r=4, alpha=8, quantization="4bit"), max_steps=2)
    result = train_sft(str(tiny_checkpoint), _examples(), cfg, tmp_path / "sft", seed=0, log=_quiet, device="cpu")
    assert result.is_adapter and result.steps == 2
    assert (tmp_path / "sft" / "adapter_model.safetensors").is_file()
    assert all(math.isfinite(loss) for _, loss in result.losses)


# --------------------------------------------------------------------------- full fine-tuning, revisions
def test_full_fine_tune_saves_a_whole_model(tiny_checkpoint, tmp_path):
    from salmon_dag.base_model.loading import load_causal_lm
    from salmon_dag.training import train_sft

    out = tmp_path / "sft"
    res = train_sft(str(tiny_checkpoint), _examples(), _cfg(lora=None, max_steps=2, learning_rate=1e-3), out,
                    seed=0, log=_quiet)
    assert not res.is_adapter and res.out_dir == out and res.steps == 2
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "training_log.json").read_text())["is_adapter"] is False
    model = load_causal_lm(str(out))  # loads alone, no base model needed
    assert model.config.vocab_size == load_causal_lm(str(tiny_checkpoint)).config.vocab_size


def test_revision_and_trust_remote_code_reach_loading(tiny_checkpoint, tmp_path, monkeypatch):
    from salmon_dag.base_model import loading
    from salmon_dag.training import train_sft

    seen: list[tuple[str, str | None, bool]] = []
    real = loading.load_pretrained

    def spy(fn, model_id, revision, trust_remote_code, **kwargs):
        seen.append((fn.__name__, revision, trust_remote_code))
        # a local checkpoint has no revisions and no remote code: load it plainly
        return real(fn, model_id, None, False, **kwargs)

    monkeypatch.setattr(loading, "load_pretrained", spy)
    train_sft(str(tiny_checkpoint), _examples(), _cfg(max_steps=1), tmp_path / "sft", seed=0, log=_quiet,
              revision="v1", trust_remote_code=True)
    assert {name for name, _, _ in seen} == {"AutoTokenizer", "AutoModelForCausalLM"}
    assert all(rev == "v1" and trust for _, rev, trust in seen)
