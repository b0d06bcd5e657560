"""Our PPO loop on a random tiny Llama: what the policy sees, the reference, the critic's start,
which prompts each step takes, and resuming (an epoch's last step included)."""

from pathlib import Path

import polars as pl
import pytest
import torch

from salmon_dag.perf.models import random_model, random_reward_model
from salmon_dag.config import PPOConfig, RLConfig, load_profile
from salmon_dag.principles import load_principles
from salmon_dag.reward_model.checkpoint import load_scorer
from salmon_dag.rl.models import PolicySource, load_policy, load_value_model
from salmon_dag.rl.ppo import PPOTrainer, policy_prompts, prompts_for_step, total_steps
from salmon_dag.rl.reward import SalmonReward
from salmon_dag.rl.stage import SAMPLE_SCHEMA, samples_frame, steps_frame, train_policy
from salmon_dag.rl.principle_set import rl_principle_set, steering_set
from salmon_dag.training.checkpoints import default_work_dir

ROOT = Path(__file__).resolve().parents[1]
N_PROMPTS = 16
CFG = PPOConfig(
    lora={"r": 4, "alpha": 8, "dropout": 0.0}, rollout_batch_size=4, per_device_batch_size=2, ppo_epochs=1,
    max_new_tokens=6, temperature=1.0, epochs=2, learning_rate=5e-3, save_every=4, samples_every=2, warmup_steps=0,
)  # 16 prompts / 4 per rollout: 4 steps an epoch, 8 in all; checkpoints at 4 (an epoch's end) and 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rl")
    policy = random_model(root / "policy")
    return PolicySource(str(policy)), random_reward_model(policy, root / "rm")


@pytest.fixture(scope="module")
def prompts() -> pl.DataFrame:
    return pl.DataFrame({
        "prompt_id": [f"p{i:02d}" for i in range(N_PROMPTS)],
        "prompt": [f"Name {i} colours of the sea near island number {i}." for i in range(N_PROMPTS)],
        "question_type": ["general", "reasoning", "red_teaming", "general"] * (N_PROMPTS // 4),
    })


def rl_set():
    return load_principles(ROOT / "principles", "rl")


def trainer_for(models, prompts, generator_wrapper=None, cfg: PPOConfig = CFG):
    from salmon_dag.rl.generation import LivePolicyGenerator

    source, rm = models
    policy, tok = load_policy(source, cfg, "cpu", seed=0)
    value = load_value_model(rm, cfg, "cpu", tok)
    rows, _ = policy_prompts(prompts, tok, 256)
    gen = LivePolicyGenerator(policy.model, tok, 8)
    reward = SalmonReward(load_scorer(rm), rl_set(), RLConfig().reward, seed=0)
    trainer = PPOTrainer(policy, tok, value, reward, rows, cfg, 0, generator_wrapper(gen) if generator_wrapper else gen)
    return trainer, tok


class Recording:
    def __init__(self, inner):
        self.inner, self.prompts = inner, []

    def sync(self, step):
        return self.inner.sync(step)

    def generate(self, ids, params):
        self.prompts.extend(ids)
        return self.inner.generate(ids, params)


def test_the_policy_prompt_contains_the_instruction(models, prompts):
    trainer, tok = trainer_for(models, prompts, Recording)
    trainer.rollout(0)
    seen = [tok.decode(ids, skip_special_tokens=True) for ids in trainer.generator.prompts]
    wanted = {prompts["prompt"][i] for i in prompts_for_step(0, N_PROMPTS, CFG.rollout_batch_size, 0)}
    assert len(seen) == CFG.rollout_batch_size
    for text in seen:
        assert text.rstrip().endswith("### Assistant:")
        assert any(instruction in text for instruction in wanted), text


def test_kl_is_exactly_zero_while_policy_equals_reference_and_the_critic_starts_at_zero(models, prompts):
    trainer, _ = trainer_for(models, prompts)
    _, exp, _ = trainer.rollout(0)  # fresh LoRA (B = 0): the policy is the SFT model
    assert torch.equal(exp.old_logprobs, exp.ref_logprobs)
    assert torch.count_nonzero(exp.kl) == 0
    assert torch.count_nonzero(exp.old_values) == 0  # zero-initialised value head
    assert exp.batch.action_mask.sum(-1).tolist() == exp.response_tokens.tolist()

    trainer.update(exp, 0)
    _, after, _ = trainer.rollout(0)  # same prompts and sampling seed, updated policy
    assert torch.count_nonzero(after.kl) > 0
    from salmon_dag.rl.experience import token_logprobs

    with trainer.policy.as_reference() as ref, trainer.autocast():  # the reference did not move
        assert torch.equal(token_logprobs(ref, exp.batch, CFG.temperature)[0], exp.ref_logprobs)


def test_each_epoch_visits_every_prompt_once_and_shards_are_disjoint():
    per_epoch = [i for s in range(4) for i in prompts_for_step(s, N_PROMPTS, 4, seed=3)]
    assert sorted(per_epoch) == list(range(N_PROMPTS))
    assert per_epoch != [i for s in range(4, 8) for i in prompts_for_step(s, N_PROMPTS, 4, seed=3)]  # reshuffled
    straddling = prompts_for_step(2, 10, 4, seed=3)  # items 8..11 of 10 per epoch: two epochs
    assert len(straddling) == 4
    ranks = [prompts_for_step(0, N_PROMPTS, 4, seed=3, rank=r, world=2) for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])
    assert total_steps(N_PROMPTS, CFG) == 8
    assert total_steps(N_PROMPTS, CFG.model_copy(update={"max_steps": 3})) == 3


def _train(models, prompts, out, on_step=None):
    source, rm = models
    return train_policy(source, rm, rl_set(), prompts, CFG, RLConfig(), out, seed=0, device="cpu",
                        log=lambda _: None, on_step=on_step)


class Interrupted(Exception):
    pass


def _interrupt_after(step_index):
    def on_step(step, metrics):
        if step == step_index:
            raise Interrupted

    return on_step


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(models, prompts, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "policy"
    return _train(models, prompts, out), out


def test_a_run_records_every_step_and_samples_with_their_reward_parts(uninterrupted):
    result, out = uninterrupted
    assert [s["step"] for s in result.steps] == list(range(8))
    frame = steps_frame(result.steps)
    metrics = set(frame["metric"])
    assert {"objective/reward", "objective/rm_score", "objective/length_bonus", "objective/stop_penalty",
            "objective/kl", "objective/entropy", "objective/response_tokens", "ppo/clip_fraction",
            "ppo/value_clip_fraction", "ppo/value_loss", "ppo/policy_loss", "ppo/explained_variance",
            "time/generation", "time/reward", "time/training"} <= metrics
    samples = samples_frame(result.samples)
    assert sorted(set(samples["step"])) == [0, 2, 4, 6, 7]
    row = samples.row(0, named=True)
    assert row["principles"][:3] == [p.name for p in rl_set().always_on()]
    assert row["reward"] == pytest.approx(row["rm_score"] + row["length_bonus"] + row["stop_penalty"] + row["rule_penalty"])
    assert (out / "rl_curves.png").stat().st_size > 0
    assert not result.is_adapter and (out / "model.safetensors").is_file()


def test_resume_from_a_checkpoint_at_an_epoch_boundary_equals_the_uninterrupted_run(models, prompts, tmp_path, uninterrupted):
    full, full_out = uninterrupted
    out = tmp_path / "policy"
    with pytest.raises(Interrupted):
        _train(models, prompts, out, on_step=_interrupt_after(3))  # crash right after checkpoint-4
    assert not out.exists()  # nothing half-written where the policy goes
    resumed = _train(models, prompts, out)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-4")
    assert [s["step"] for s in resumed.steps] == list(range(8))  # 4 more steps, not zero
    for a, b in zip(full.steps, resumed.steps):
        assert a["objective/reward"] == b["objective/reward"] and a["objective/kl"] == b["objective/kl"]
    assert all(torch.equal(v, _weights(out)[k]) for k, v in _weights(full_out).items())


def test_a_checkpoint_at_the_last_step_resumes_into_the_final_save(models, prompts, tmp_path):
    out = tmp_path / "policy"
    with pytest.raises(Interrupted):
        _train(models, prompts, out, on_step=_interrupt_after(7))
    resumed = _train(models, prompts, out)
    assert resumed.resumed_from.endswith("checkpoint-8") and len(resumed.steps) == 8
    assert (out / "model.safetensors").is_file()


def test_steering_sets_use_the_reward_model_texts_verbatim():
    rm = load_principles(ROOT / "principles", "reward_model")
    concise = {p.name: p for _, p in rm.principles()}["Concise"]
    steer = steering_set(rm, ["Concise"])
    assert {qt for qt, _ in steer.principles()} == {"general", "reasoning", "red_teaming"}
    assert {p.definition for _, p in steer.principles()} == {concise.definition}
    assert steer.always_on() == []
    with pytest.raises(ValueError, match="Brief"):
        steering_set(rm, ["Brief"])
    tiny = load_profile("tiny").rl
    chosen = rl_principle_set(rl_set(), rm, tiny)
    assert chosen.always_on() == rl_set().always_on()
    assert {p.name for qt, p in chosen.principles() if qt == "general"} == set(tiny.reward_model_principles)
    with pytest.raises(ValueError, match=r"^rl\.reward_model_principles: Brief not in .*reward_model\.yaml"):
        rl_principle_set(rl_set(), rm, RLConfig(reward_model_principles=["Brief"]))
    bare = rl_principle_set(rl_set(), rm, RLConfig(always_on=False))
    assert bare.always_on() == [] and bare.principles() == rl_set().principles()


def test_a_trl_baseline_run_fills_the_same_outputs(models, prompts, tmp_path):
    from transformers import AutoModelForCausalLM

    source, rm = models
    cfg = CFG.model_copy(update={"rollout_batch_size": 2, "max_steps": 2, "samples_every": 1, "samples_per_step": 1})
    too_long = pl.DataFrame({"prompt_id": ["long"], "prompt": ["sea " * (cfg.max_prompt_tokens + 10)],
                             "question_type": ["general"]})
    result = train_policy(source, rm, rl_set(), pl.concat([prompts, too_long]), cfg,
                          RLConfig(algorithm="rloo", group_size=2), tmp_path / "policy", seed=0, device="cpu",
                          log=lambda _: None)
    assert result.algorithm == "rloo" and not result.is_adapter and len(result.steps) == 2
    assert (result.prompts, result.dropped_prompts) == (N_PROMPTS, 1)  # counted as our PPO counts them
    assert {"objective/rm_score", "objective/kl", "objective/response_tokens"} <= set(steps_frame(result.steps)["metric"])
    assert samples_frame(result.samples)["step"].to_list() == [0, 1]
    assert all(set(s) == set(SAMPLE_SCHEMA) and s["finish_reason"] in ("stop", "length") for s in result.samples)
    AutoModelForCausalLM.from_pretrained(tmp_path / "policy")  # a whole model, loadable like ours
    # saved once: the merged policy with its curves, no adapter copy left in the work dir
    assert (tmp_path / "policy" / "rl_curves.png").is_file() and (tmp_path / "policy" / "rl_steps.json").is_file()
    assert not any(default_work_dir(tmp_path / "policy").glob("*adapter*"))


def test_the_reward_scale_multiplies_the_kl_term_too():
    from salmon_dag.rl.experience import per_token_rewards

    totals, kl, mask = torch.tensor([1.5, -2.0]), torch.tensor([[0.2, -0.1, 0.0], [0.3, 0.4, 0.0]]), \
        torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    one = per_token_rewards(totals, kl, mask, CFG.model_copy(update={"kl_coef": 0.5}))
    ten = per_token_rewards(totals, kl, mask, CFG.model_copy(update={"kl_coef": 0.5, "reward_scale": 10.0}))
    assert torch.allclose(ten, 10 * one)  # SALMON: the whole per-token reward x 10
    assert one[0].tolist() == pytest.approx([-0.1, 0.05 + 1.5, 0.0])


def test_warm_up_counts_rollouts_when_asked_and_the_optimizer_follows_the_profile(models, prompts, monkeypatch):
    import sys
    import types

    from salmon_dag.rl.ppo import make_optimizer

    base = CFG
    cfg = base.model_copy(update={"warmup_steps": 2, "warmup_unit": "rollouts", "ppo_epochs": 2})
    trainer, _ = trainer_for(models, prompts, cfg=cfg)
    per_rollout = cfg.optimizer_steps_per_rollout()
    assert per_rollout == 4  # 4 prompts / 2 per micro-batch x 2 epochs
    warm = trainer.scheduler.lr_lambdas[0]
    assert warm(1) == pytest.approx(1 / (2 * per_rollout)) and warm(2 * per_rollout) == pytest.approx(1.0)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert make_optimizer(params, base).param_groups[0]["weight_decay"] == 0.01  # torch's default
    assert make_optimizer(params, base.model_copy(update={"weight_decay": 0.0})).param_groups[0]["weight_decay"] == 0
    paged = base.model_copy(update={"optimizer": "paged_adamw_32bit", "weight_decay": 0.0})
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ValueError, match="paged_adamw_32bit needs bitsandbytes"):
        make_optimizer(params, paged)
    made = {}
    fake = types.SimpleNamespace(optim=types.SimpleNamespace(PagedAdamW32bit=lambda p, **kw: made.update(kw) or "paged"))
    monkeypatch.setitem(sys.modules, "bitsandbytes", fake)
    assert make_optimizer(params, paged) == "paged" and made == {"lr": base.learning_rate, "weight_decay": 0.0}


def test_rl_yaml_groups_the_run_does_not_draw_from_are_named_in_a_warning():
    from salmon_dag.rl.principle_set import unused_groups

    rl = rl_set()
    assert unused_groups(rl, RLConfig()) is None  # the groups are drawn
    warning = unused_groups(rl, RLConfig(reward_model_principles=["Concise"]))
    assert warning.startswith(f"{rl.path}: its {len(rl.principles())} group principles are not drawn")
    assert "rl.reward_model_principles (Concise)" in warning and "always_on lines still apply" in warning
