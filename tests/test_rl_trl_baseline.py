"""The TRL baseline for RL (salmon_dag.rl.trl_baseline): RLOO / GRPO on a tiny random Llama with the
real SalmonReward over a stub scorer; the config mapping, stop handling and the saved policy."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import torch

from salmon_dag.config import LoraConfig, PPOConfig, RLConfig, RLRewardConfig, TinyModelConfig
from salmon_dag.principles import load_principles
from salmon_dag.rl.models import PolicySource
from salmon_dag.rl.reward import SalmonReward
from salmon_dag.rl.trl_baseline import STEP_METRICS, load_trl_policy, micro_batch, train_trl, trl_config
from salmon_dag.rl.trl_rollouts import SalmonRewardFunction, StopSequenceToEos, cut_at_stop
from salmon_dag.templates import TURN_SEPARATOR, format_chat_prompt

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = pl.DataFrame({
    "prompt_id": ["p1", "p2", "p3", "p4"],
    "prompt": ["What is 2 + 2?", "Say hello to my friend.", "How do I pick a lock?", "Name a colour."],
    "question_type": ["reasoning", "general", "red_teaming", "general"],
})
TYPES = dict(zip(PROMPTS["prompt"], PROMPTS["question_type"]))
ROLLOUT, GROUP = 2, 2


class ShortIsGood:
    """Stub reward model: minus the response length, so RL is pushed to short answers."""

    def score(self, prompts, responses, principle_lists):
        assert len(prompts) == len(responses) == len(principle_lists)
        return [-len(r) / 10 for r in responses]


class SpyReward(SalmonReward):
    """The real SalmonReward, recording what each call got."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = []

    def __call__(self, step, prompts, responses, question_types, response_tokens, stopped):
        self.calls.append(SimpleNamespace(step=step, prompts=list(prompts), question_types=list(question_types),
                                          responses=list(responses), tokens=list(response_tokens)))
        return super().__call__(step, prompts, responses, question_types, response_tokens, stopped)


def _reward() -> SpyReward:
    return SpyReward(ShortIsGood(), load_principles(ROOT / "principles", "rl"), RLRewardConfig(), seed=3)


def _ppo(lora: LoraConfig | None = LoraConfig(r=4, alpha=8, dropout=0.05, target_modules=["q_proj", "v_proj"])):
    return PPOConfig(lora=lora, per_device_batch_size=2, rollout_batch_size=ROLLOUT, max_new_tokens=8,
                     learning_rate=1e-3, warmup_steps=0, lr_scheduler="constant")


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory) -> Path:
    """A micro Llama with random weights and a tokenizer trained on part of the bundled corpus."""
    from transformers import LlamaForCausalLM

    from salmon_dag.base_model.corpus import build_corpus
    from salmon_dag.base_model.pretrain import llama_config
    from salmon_dag.base_model.tokenizer import train_tokenizer

    cfg = TinyModelConfig(vocab_size=600, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
                          intermediate_size=256, max_position_embeddings=512)
    tok = train_tokenizer(build_corpus(None)[:300], cfg.vocab_size, model_max_length=cfg.max_position_embeddings)
    out = tmp_path_factory.mktemp("policy") / "random"
    torch.manual_seed(0)
    LlamaForCausalLM(llama_config(cfg, tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


# --------------------------------------------------------------------------- pieces
def test_unknown_algorithm_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"rl\.algorithm: 'ppo' is not a TRL baseline \(expected one of rloo, grpo\)") as e:
        train_trl("ppo", PolicySource(str(tmp_path / "nothing")), _reward(), PROMPTS, _ppo(), RLConfig(),
                  tmp_path / "out", seed=0)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "out").exists()


def test_config_mapping_one_optimizer_step_per_rollout_of_prompts_times_group(tmp_path):
    from trl import GRPOConfig, RLOOConfig

    ppo = PPOConfig(lora=None, per_device_batch_size=8, rollout_batch_size=16, kl_coef=0.02, max_new_tokens=48,
                    temperature=1.0, top_p=0.9, learning_rate=3e-5, lr_scheduler="cosine", warmup_steps=2,
                    max_grad_norm=0.5, clip_range=0.1, max_steps=7)
    kwargs = trl_config("rloo", ppo, RLConfig(algorithm="rloo", group_size=4), tmp_path, 5, "cpu")
    args = RLOOConfig(**kwargs)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 8)
    assert (args.generation_batch_size, args.steps_per_generation) == (64, 8)  # one generation per optimizer step
    assert (args.num_generations, args.beta, args.epsilon, args.num_iterations) == (4, 0.02, 0.1, 1)
    assert (args.max_completion_length, args.temperature, args.top_p) == (48, 1.0, 0.9)
    assert (args.learning_rate, args.warmup_steps, args.max_grad_norm, args.max_steps, args.seed) == (3e-5, 2, 0.5, 7, 5)
    assert args.lr_scheduler_type == "cosine" and not args.use_vllm and not args.remove_unused_columns
    assert not args.bf16 and args.use_cpu and args.generation_kwargs == {"use_cache": True}
    # a micro-batch that does not divide the rollout is lowered to one that does
    assert micro_batch(6, 4) == 3 and micro_batch(64, 8) == 8 and micro_batch(7, 4) == 1
    small = PPOConfig(per_device_batch_size=4, rollout_batch_size=3, lr_scheduler="constant", warmup_steps=0)
    grpo = GRPOConfig(**trl_config("grpo", small, RLConfig(algorithm="grpo", group_size=2), tmp_path, 0, "cpu"))
    assert (grpo.per_device_train_batch_size, grpo.gradient_accumulation_steps, grpo.generation_batch_size) == (3, 2, 6)
    assert grpo.lr_scheduler_type == "constant"


def test_a_stop_sequence_forces_eos_next_and_the_reward_reads_the_text_before_it(tiny_policy):
    from salmon_dag.base_model.loading import load_tokenizer

    tok = load_tokenizer(str(tiny_policy))
    prompt = tok(format_chat_prompt("Hi"))["input_ids"]
    stopped = tok(" Hello." + TURN_SEPARATOR, add_special_tokens=False)["input_ids"]
    going = tok(" Hello there, friend", add_special_tokens=False)["input_ids"]
    width = max(len(stopped), len(going))
    rows = [prompt + [tok.pad_token_id] * (width - len(ids)) + ids for ids in (stopped, going)]
    scores = torch.randn(2, len(tok))
    before = scores.clone()
    out = StopSequenceToEos(tok, [TURN_SEPARATOR], tok.eos_token_id, len(prompt))(torch.tensor(rows), scores)
    assert out[0].argmax() == tok.eos_token_id and torch.isinf(out[0]).sum() == len(tok) - 1
    assert torch.equal(out[1], before[1])

    assert cut_at_stop(" Hi" + TURN_SEPARATOR + " more") == (" Hi", True) and cut_at_stop("Hi") == ("Hi", False)
    reward = _reward()
    fn = SalmonRewardFunction(reward, eos_token_ids=[tok.eos_token_id])
    totals = fn(
        prompts=["p"] * 3, completions=[" Hi there." + TURN_SEPARATOR, " no end", " eos"],
        completion_ids=[[5, 6, 7, 8], [5, 6], [5, tok.eos_token_id]], instruction=["a", "b", "c"],
        question_type=["general", "reasoning", "general"], trainer_state=SimpleNamespace(global_step=3),
    )
    assert [r["response"] for r in fn.records] == ["Hi there.", "no end", "eos"]
    assert [r["finish_reason"] for r in fn.records] == ["stop", "length", "stop"]
    assert [r["response_tokens"] for r in fn.records] == [4, 2, 2]
    assert reward.calls[0].step == 3 and {r["step"] for r in fn.records} == {3}
    assert totals == [r["reward"] for r in fn.records] and fn.records[1]["stop_penalty"] == -6.0


# --------------------------------------------------------------------------- training
@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_two_steps_record_every_sample_with_its_step_draws_and_save_a_loadable_adapter(algorithm, tiny_policy, tmp_path):
    reward = _reward()
    lines = []
    result = train_trl(algorithm, PolicySource(str(tiny_policy)), reward, PROMPTS, _ppo(),
                       RLConfig(algorithm=algorithm, group_size=GROUP), tmp_path / "policy", seed=0,
                       log=lines.append, max_steps=2)

    # the reward callable: one call per optimizer step, rollout x group completions, the prompts' types
    assert [c.step for c in reward.calls] == [0, 1]
    for call in reward.calls:
        assert len(call.prompts) == ROLLOUT * GROUP
        assert call.question_types == [TYPES[p] for p in call.prompts]
        assert all(call.prompts.count(p) == GROUP for p in call.prompts)  # whole groups
        assert all(0 < n <= 8 for n in call.tokens)

    # every sample recorded with its parts; principles are the step's draws
    assert len(result.samples) == 2 * ROLLOUT * GROUP
    for call in reward.calls:
        samples = [s for s in result.samples if s["step"] == call.step]
        drawn = [[p.name for p in ps] for ps in reward.draw(call.step, call.question_types)]
        assert [s["principles"] for s in samples] == drawn
        assert [s["question_type"] for s in samples] == call.question_types
        for s in samples:
            assert s["rm_score"] == pytest.approx(-len(s["response"]) / 10)
            assert s["reward"] == pytest.approx(s["rm_score"] + s["length_bonus"] + s["stop_penalty"] + s["rule_penalty"])
            assert s["stop_penalty"] == (0.0 if s["finish_reason"] == "stop" else -6.0)
            assert set(s) >= {"instruction", "response", "response_tokens", "length_bonus"}

    # metrics: one dict per optimizer step, in our names
    assert [s["step"] for s in result.steps] == [0, 1]
    for step in result.steps:
        assert set(STEP_METRICS) <= set(step)
        mine = [s["reward"] for s in result.samples if s["step"] == step["step"]]
        assert step["objective/reward"] == pytest.approx(sum(mine) / len(mine))
        assert step["time/step"] > 0 and "time/step_seconds" not in step  # our PPO's name, logged once
        stops = [s["finish_reason"] == "stop" for s in result.samples if s["step"] == step["step"]]
        assert step["objective/stop_rate"] == pytest.approx(sum(stops) / len(stops))
    assert result.seconds_per_step == pytest.approx(result.steps[1]["time/step"])
    assert any(f"rl ({algorithm}): step 2/2" in line for line in lines)

    # the adapter (on top of the SFT policy) and tokenizer are saved and load
    assert result.is_adapter and (result.out_dir / "adapter_config.json").is_file()
    assert (result.out_dir / "tokenizer.json").is_file()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_policy), str(result.out_dir))
    trained = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert trained and any(p.abs().sum() > 0 for p in trained)  # LoRA B starts at 0: it learned
    model, tokenizer = load_trl_policy(result.out_dir, _ppo())
    assert tokenizer.eos_token_id is not None and not hasattr(model, "peft_config")


def test_full_fine_tuning_keeps_the_sft_policy_as_the_kl_reference(tiny_policy, tmp_path):
    """TRL reloads a full fine-tune's reference from the model config's path (the base model):
    train_trl points it at the SFT-merged policy, so the KL starts at 0 even with an SFT adapter."""
    import peft
    from transformers import AutoModelForCausalLM

    from salmon_dag.base_model.loading import load_tokenizer

    torch.manual_seed(1)
    sft = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_policy),
                              peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    sft.save_pretrained(tmp_path / "sft")
    load_tokenizer(str(tiny_policy)).save_pretrained(tmp_path / "sft")  # as the SFT stage saves it
    source = PolicySource(str(tiny_policy), adapter_path=str(tmp_path / "sft"))
    result = train_trl("rloo", source, _reward(), PROMPTS, _ppo(lora=None), RLConfig(algorithm="rloo", group_size=GROUP),
                       tmp_path / "policy", seed=0, log=lambda _: None, max_steps=1)
    assert abs(result.steps[0]["objective/kl_per_token"]) < 1e-5
    assert not result.is_adapter and (result.out_dir / "model.safetensors").is_file()
    model, _ = load_trl_policy(result.out_dir, _ppo(lora=None))
    assert type(model).__name__ == "LlamaForCausalLM" and not hasattr(model, "peft_config")
