"""Training the reward model (salmon_dag.reward_model.train) on the micro checkpoint: CPU, fast."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import TrainerCallback

from salmon_dag.config import LoraConfig, RewardModelConfig
from salmon_dag.model_ref import ModelRef
from salmon_dag.reward_model.data import ReviewPair, tokenize_pairs

BRIEF = "Answer in as few words as possible."
PROMPTS = ["Name a colour.", "What is two plus two?", "Say hi.", "Where is Paris?"]
SHORT = ["Blue.", "Four.", "Hi!", "France."]
LONG = ["Blue is a colour, and many people say that it is their favourite colour of all.",
        "Two plus two is four, which you can check by counting on your fingers one by one.",
        "Hi there! It is very nice to meet you, and I hope that you are having a good day.",
        "Paris is in France, in the north of the country, on the river Seine, near the coast."]


def _cfg(**kw) -> RewardModelConfig:
    base = dict(lora=LoraConfig(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]),
                per_device_batch_size=4, learning_rate=5e-3, max_steps=12, max_seq_len=192, cpu_precision="float32")
    base.update(kw)
    return RewardModelConfig(**base)


def _data(tok, layout: str = "standard"):
    from salmon_dag.reward_model.train import RewardData

    pairs = [ReviewPair(f"g{i}", p, (BRIEF,), s, l) for i, (p, s, l) in enumerate(zip(PROMPTS, SHORT, LONG))]
    return RewardData(tokenize_pairs(tok, pairs * 2, 192, layout), tokenize_pairs(tok, pairs, 192, layout))


def _quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def base(tiny_checkpoint) -> ModelRef:
    return ModelRef(name="base_model", model_id=str(tiny_checkpoint))


@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    from salmon_dag.base_model.loading import load_tokenizer

    return load_tokenizer(str(tiny_checkpoint))


def test_loss_decreases_and_checkpoint_scores_as_trained(base, tok, tmp_path):
    from salmon_dag.reward_model.checkpoint import load_reward_model
    from salmon_dag.reward_model.scoring import RewardScorer
    from salmon_dag.reward_model.train import train_reward_model

    lines: list[str] = []
    res = train_reward_model("reward_model", base, _data(tok), _cfg(), tmp_path / "rm", seed=0, device="cpu",
                             log=lines.append)
    losses = [l for _, l in res.losses]
    assert res.steps == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1  # Bradley-Terry loss goes down
    assert not res.is_adapter  # saved merged by default: a whole model
    assert any("eval" in line and "accuracy" in line for line in lines)
    model, ltok, manifest = load_reward_model(tmp_path / "rm")
    assert manifest.kind == "merged" and manifest.max_seq_len == 192
    from salmon_dag.training.precision import use_bf16_autocast

    assert manifest.cpu_bf16_autocast == use_bf16_autocast(_cfg().cpu_precision)  # scored as it trained
    scores = RewardScorer(model, ltok, 192).score(PROMPTS * 2, SHORT + LONG, [BRIEF])
    assert sum(scores[i] > scores[4 + i] for i in range(4)) >= 3  # it learned the toy preference
    assert (tmp_path / "rm" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_adapter_save_keeps_the_head(base, tok, tmp_path):
    from salmon_dag.reward_model.checkpoint import adapter_has_head, load_reward_model
    from salmon_dag.reward_model.train import train_reward_model

    cfg = _cfg(max_steps=2, reviewer_layout="compact")
    res = train_reward_model("reward_model", base, _data(tok, "compact"), cfg, tmp_path / "rm", seed=0,
                             device="cpu", save="adapter", log=_quiet)
    assert res.is_adapter and adapter_has_head(tmp_path / "rm")
    _, _, manifest = load_reward_model(tmp_path / "rm")
    assert manifest.kind == "adapter" and manifest.base_model_id == base.model_id
    assert manifest.reviewer_layout == "compact"  # scoring encodes as it trained


def test_resume_continues_from_the_last_checkpoint(base, tok, tmp_path):
    from salmon_dag.reward_model.train import train_reward_model

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("simulated interruption at step 3")

    out, work = tmp_path / "rm", tmp_path / "work"
    cfg = _cfg(max_steps=4)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train_reward_model("reward_model", base, _data(tok), cfg, out, seed=0, device="cpu", work_dir=work,
                           save_steps=2, callbacks=[Interrupt()], log=_quiet)
    assert not out.exists()
    res = train_reward_model("reward_model", base, _data(tok), cfg, out, seed=0, device="cpu", work_dir=work,
                             save_steps=2, log=_quiet)
    assert res.resumed_from is not None and Path(res.resumed_from) == work / "checkpoint-2"
    assert res.steps == 4 and [s for s, _ in res.losses] == [1, 2, 3, 4]


def test_length_grouped_batches_pad_less_and_keep_every_pair(base, tok, tmp_path):
    from salmon_dag.reward_model.train import RewardData, build_reward_trainer

    words = " ".join(LONG).split()
    pairs = [ReviewPair(f"g{k}", PROMPTS[k % 4], (BRIEF,), " ".join(words[:k % 60]), " ".join(words[:k % 60 + 3]))
             for k in range(120)]
    data = RewardData(tokenize_pairs(tok, pairs, 192), None)

    def batches(grouped: bool) -> list:
        cfg = _cfg(lora=None, group_by_length=grouped)
        trainer = build_reward_trainer(base, data, cfg, tmp_path / f"g{grouped}", seed=0, device="cpu")
        return list(trainer.get_train_dataloader())

    plain, grouped = batches(False), batches(True)
    # every pair once either way (a batch holds its chosen prompts, then its rejected ones)
    assert sum(len(b["input_ids"]) for b in grouped) == sum(len(b["input_ids"]) for b in plain) == 240
    assert sum(b["attention_mask"].sum() for b in grouped) == sum(b["attention_mask"].sum() for b in plain)
    # fewer padded positions (7% here, ~15% on the tiny profile's pairs): similar lengths share a batch
    assert sum(b["input_ids"].numel() for b in grouped) < 0.95 * sum(b["input_ids"].numel() for b in plain)
