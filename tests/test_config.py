"""Profiles: bundled ones validate; bad keys and values give one-line errors naming the key."""

import pytest

from salmon_dag.config import (
    AggregationConfig,
    PairsConfig,
    PPOConfig,
    ProfileError,
    RewardModelConfig,
    SFTStageConfig,
    TrainingConfig,
    available_profiles,
    load_profile,
)


def test_bundled_profiles_validate():
    names = available_profiles()
    assert {"tiny", "llama2-7b-qlora", "llama2-70b-qlora"} <= set(names)
    tiny = load_profile("tiny")
    assert tiny.base_model.kind == "tiny"
    assert tiny.base_model.tiny.hidden_size // tiny.base_model.tiny.num_heads == 64
    big = load_profile("llama2-70b-qlora")
    # extends llama2-7b-qlora: inherited keys stay, overridden ones change
    assert big.base_model.model_id == "meta-llama/Llama-2-70b-hf"
    assert big.sft.lora.quantization == "4bit"
    assert big.sft.launcher == "accelerate" and big.sft.deepspeed_stage == 2 and big.engine.tensor_parallel_size == 8


def test_unknown_key_names_file_and_key():
    with pytest.raises(ProfileError) as exc:
        load_profile("tiny", {"engine": {"bakend": "hf"}})
    msg = str(exc.value)
    assert "tiny.yaml" in msg and "engine.bakend" in msg and "unknown key" in msg
    assert "\n" not in msg


def test_bad_value_names_key():
    with pytest.raises(ProfileError, match=r"engine\.backend"):
        load_profile("tiny", {"engine": {"backend": "tpu"}})
    with pytest.raises(ProfileError, match=r"prompt_pool\.eval_fraction"):
        load_profile("tiny", {"prompt_pool": {"eval_fraction": 1.5}})
    with pytest.raises(ProfileError, match="head"):
        load_profile("tiny", {"base_model": {"tiny": {"num_heads": 3}}})


def test_pretrained_needs_model_id():
    with pytest.raises(ProfileError, match="model_id"):
        load_profile("tiny", {"base_model": {"kind": "pretrained"}})


def test_unknown_profile_and_yaml_errors(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile 'nope'"):
        load_profile("nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ProfileError, match=r"bad\.yaml.*invalid YAML"):
        load_profile(str(bad))


def test_extends_from_file_and_section_hash(tmp_path):
    child = tmp_path / "mine.yaml"
    child.write_text("extends: tiny\nseed: 7\nbase_model:\n  tiny:\n    steps: 5\n    long_context_steps: 0\n")
    p = load_profile(str(child))
    assert p.name == "mine" and p.seed == 7 and p.base_model.tiny.steps == 5
    assert p.base_model.tiny.hidden_size == 256  # inherited
    tiny = load_profile("tiny")
    assert p.section_hash("base_model") != tiny.section_hash("base_model")
    # a change elsewhere leaves the base_model hash alone (only the seed is shared)
    other = load_profile("tiny", {"engine": {"max_batch_size": 3}})
    assert other.section_hash("base_model") == tiny.section_hash("base_model")
    # a dotted section is one field: other fields of its section do not count
    assert other.section_hash("engine.device") == tiny.section_hash("engine.device")
    assert other.section_hash("engine") != tiny.section_hash("engine")
    assert load_profile("tiny", {"engine": {"device": "cuda"}}).section_hash("engine.device") != tiny.section_hash("engine.device")
    with pytest.raises(KeyError, match="engine.nope"):
        tiny.section_hash("engine.nope")


def test_preference_defaults_are_the_papers_and_profiles_state_their_rule_scope():
    agg, pairs = AggregationConfig(), PairsConfig()
    assert (agg.subset_p, agg.rule_label_noise, agg.label_noise, agg.passes, agg.max_principles) == (0.2, 0.25, 0.1, 4, 8)
    assert agg.global_rule_prob == 0.5 and agg.exclude_principles == []
    assert (pairs.max_new_tokens, pairs.temperature, pairs.min_chars, pairs.candidates) == (768, 0.7, 16, 2)
    for name in ("llama2-7b-qlora", "llama2-70b-qlora"):
        real = load_profile(name)
        assert real.pairs.max_new_tokens == 768 and real.aggregation.rule_scope == "global"
    assert load_profile("tiny").aggregation.rule_scope == "principle"
    with pytest.raises(ProfileError, match=r"aggregation\.rule_scope"):
        load_profile("tiny", {"aggregation": {"rule_scope": "everywhere"}})


def test_each_training_stage_has_its_own_config_class():
    for name in available_profiles():
        p = load_profile(name)
        assert (type(p.sft), type(p.reward_model), type(p.ppo)) == (SFTStageConfig, RewardModelConfig, PPOConfig)
        assert all(isinstance(c, TrainingConfig) for c in (p.sft, p.reward_model, p.ppo))
    tiny = load_profile("tiny")
    assert tiny.sft.lora.r == 8 and tiny.reward_model.max_seq_len == 512 and tiny.ppo.max_steps == 30
    with pytest.raises(ProfileError, match=r"reward_model\.epochs"):
        load_profile("tiny", {"reward_model": {"epochs": 0}})


def test_reward_model_config():
    tiny = load_profile("tiny").reward_model
    assert tiny.lora is None and tiny.save == "merged" and tiny.human_eval.optional
    assert tiny.pmp is None and tiny.human_eval.source.endswith("hh_rlhf_harmless_base_test.jsonl.gz")
    for name in ("llama2-7b-qlora", "llama2-70b-qlora"):
        rm = load_profile(name).reward_model
        assert rm.lora.quantization == "4bit" and "score" not in rm.lora.target_modules
        assert rm.save == "adapter" and rm.lr_scheduler == "cosine" and rm.pmp.data.split == "train"
        assert rm.reviewer_layout == "standard"  # real models read the reviewer prompt in words
    assert tiny.reviewer_layout == "compact"
    with pytest.raises(ProfileError, match=r"reward_model\.reviewer_layout"):
        load_profile("tiny", {"reward_model": {"reviewer_layout": "short"}})
    with pytest.raises(ProfileError, match=r"reward_model\.pmp\.share"):
        load_profile("tiny", {"reward_model": {"pmp": {"share": 1.0}}})
    with pytest.raises(ProfileError, match=r"reward_model\.human_eval\.source"):
        load_profile("tiny", {"reward_model": {"human_eval": {"split": "test", "source": None}}})
