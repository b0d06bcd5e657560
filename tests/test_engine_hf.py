"""The transformers backend: padding-invariance, scoring, prefix sharing, generation, errors."""

import os

import numpy as np
import pytest
import torch

from salmon_dag.base_model import load_causal_lm, load_tokenizer
from salmon_dag.config import EngineConfig
from salmon_dag.engine import EngineError, PromptTooLongError, SamplingParams, create_engine
from salmon_dag.judge import JudgeItem, judge_scores, verdict_token_ids
from salmon_dag.templates import format_chat_prompt, judge_prefix, judge_suffix

PROMPTS = [
    format_chat_prompt("How do I boil an egg?"),
    format_chat_prompt("Name three planets."),
    format_chat_prompt("Explain, in detail and with examples, why the sky looks blue on a clear day."),
]


@pytest.fixture(scope="module")
def engine(tiny_checkpoint):
    eng = create_engine(EngineConfig(backend="hf", device="cpu", dtype="float32", max_batch_size=4), str(tiny_checkpoint))
    yield eng
    eng.close()


def _reference_logits(engine, ids):
    with torch.inference_mode():
        return engine.model(torch.tensor([ids])).logits[0].double().numpy()


def test_next_token_logits_match_unpadded_forward(engine):
    cands = [5, 17, 42]
    batched = engine.next_token_logits(PROMPTS, cands)
    for i, p in enumerate(PROMPTS):
        ref = _reference_logits(engine, engine.encode(p))[-1, cands]
        np.testing.assert_allclose(batched[i], ref, atol=1e-4)


def test_sequence_logprobs_match_manual(engine):
    conts = [" Put it in boiling water.", " Mars, Venus, Earth.", " Light scatters."]
    got = engine.sequence_logprobs(PROMPTS, conts)
    for p, c, lp in zip(PROMPTS, conts, got):
        prompt, cont = engine.encode(p), engine.encode_suffix(c)
        logits = torch.tensor(_reference_logits(engine, prompt + cont))
        ref = torch.log_softmax(logits, -1)[len(prompt) - 1 : -1].gather(-1, torch.tensor(cont)[:, None])[:, 0]
        assert lp.shape == (len(cont),)
        np.testing.assert_allclose(lp, ref.numpy(), atol=1e-4)


def test_left_padding_does_not_change_greedy_generation(engine):
    params = SamplingParams(max_new_tokens=12, temperature=0.0, stop=())
    together = engine.generate(PROMPTS, params)
    alone = [engine.generate([p], params)[0] for p in PROMPTS]
    assert [c[0].token_ids for c in together] == [c[0].token_ids for c in alone]
    assert all(c[0].finish_reason in ("length", "stop") for c in together)


def test_prefix_shared_judging_equals_naive(engine):
    items = [
        JudgeItem("How do I boil an egg?", "Boil water, add the egg, wait nine minutes.", "Eggs are nice."),
        JudgeItem("Name a planet.", "Mars.", "I think the answer might be the planet Jupiter, the largest."),
        JudgeItem("Say hi.", "Hi!", "Hello there, friend."),
    ]
    principles = [("Helpful", "The reply answers the request."), ("Concise", "The reply is short."),
                  ("Honest", "The reply says only true things."), ("Polite", "The reply is courteous."),
                  ("Safe", "The reply avoids harm.")]
    shared = judge_scores(engine, items, principles, shared_prefix=True)
    naive = judge_scores(engine, items, principles, shared_prefix=False)
    assert shared.shape == (3, 5, 2)
    assert np.abs(shared - naive).max() < 1e-4
    assert np.abs(shared).max() > 0  # not trivially zero


def test_shared_prefix_uses_fewer_forward_tokens(engine):
    prefixes = [PROMPTS[2]] * 2
    suffixes = [[" Yes.", " No, never.", " Maybe so."]] * 2
    engine.stats.update(forward_tokens=0, calls=0)
    engine.shared_prefix_logits(prefixes, suffixes, [5, 6])
    shared_tokens = engine.stats["forward_tokens"]
    engine.stats.update(forward_tokens=0, calls=0)
    engine.naive_prefix_logits(prefixes, suffixes, [5, 6])
    assert shared_tokens < engine.stats["forward_tokens"] / 2


def test_sampling_seed_and_n(engine):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, n=2, seed=7, stop=())
    first = engine.generate(PROMPTS[:2], params)
    again = engine.generate(PROMPTS[:2], params)
    assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
    assert all(len(cs) == 2 for cs in first)
    assert any(cs[0].token_ids != cs[1].token_ids for cs in first)


def test_generation_logprobs_match_sequence_logprobs(engine):
    params = SamplingParams(max_new_tokens=8, temperature=0.0, stop=(), logprobs=True)
    comp = engine.generate([PROMPTS[0]], params)[0][0]
    ref = engine.sequence_logprobs([PROMPTS[0]], [list(comp.token_ids)])[0]
    np.testing.assert_allclose(np.array(comp.logprobs), ref, atol=1e-4)


def test_stop_sequence_cuts_text_and_tokens(engine):
    ids = engine.encode_suffix(" Hello there.\n\n### User: and more text")
    comp = engine.decode_completion(ids, ("\n\n### User:",), {engine.tokenizer.eos_token_id}, False, None)
    assert comp.text == " Hello there." and comp.finish_reason == "stop"
    assert "### User:" in engine.tokenizer.decode(list(comp.token_ids))
    assert "more" not in engine.tokenizer.decode(list(comp.token_ids))
    long = engine.decode_completion(ids, (), set(), True, None)
    assert long.finish_reason == "length" and long.token_ids == tuple(ids)


def test_prompt_too_long_and_truncation(tiny_checkpoint):
    cfg = EngineConfig(backend="hf", device="cpu", dtype="float32", max_context=32)
    eng = create_engine(cfg, str(tiny_checkpoint))
    long_prompt = "word " * 200
    with pytest.raises(PromptTooLongError, match=r"prompt 0 has \d+ tokens; the context window is 32") as exc:
        eng.generate([long_prompt], SamplingParams(max_new_tokens=4))
    assert "\n" not in str(exc.value)
    left = create_engine(cfg.model_copy(update={"truncation": "left"}), str(tiny_checkpoint))
    out = left.generate([long_prompt], SamplingParams(max_new_tokens=4, stop=()))
    assert len(out[0][0].token_ids) == 4
    kept = left.fit(left.encode(long_prompt), 4, 0)
    assert len(kept) == 28 and kept[0] == left.tokenizer.bos_token_id


def test_bad_input_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_engine(EngineConfig(backend="hf", device="cpu"), str(tmp_path / "missing") + "/")
    with pytest.raises(EngineError, match="unknown backend 'tpu'"):
        create_engine(EngineConfig.model_construct(backend="tpu"), str(tiny_checkpoint))
    with pytest.raises(EngineError, match="n > 1 needs sampling"):
        SamplingParams(n=2)
    eng = create_engine(EngineConfig(backend="hf", device="cpu"), str(tiny_checkpoint))
    with pytest.raises(EngineError, match="candidate token ids"):
        eng.next_token_logits(["hi"], [10**6])


def test_peft_adapter_is_applied(tiny_checkpoint, tmp_path):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = load_causal_lm(str(tiny_checkpoint))
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = load_tokenizer(str(tiny_checkpoint))(PROMPTS[0])["input_ids"]
    with torch.inference_mode():
        expected = peft_model(torch.tensor([ids])).logits[0, -1, [5, 6]].double().numpy()
    cfg = EngineConfig(backend="hf", device="cpu", dtype="float32")
    adapted = create_engine(cfg, str(tiny_checkpoint), adapter_path=str(tmp_path / "adapter"))
    plain = create_engine(cfg, str(tiny_checkpoint))
    got = adapted.next_token_logits([PROMPTS[0]], [5, 6])[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert np.abs(got - plain.next_token_logits([PROMPTS[0]], [5, 6])[0]).max() > 1e-4


def test_judge_scores_equal_plain_calls_on_the_whole_judge_string(engine):
    item = JudgeItem("Name a planet.", "Mars.", "I think the answer might be the planet Jupiter, the largest.")
    principles = [("Helpful", "The reply answers the request."), ("Concise", "The reply is short.")]
    scores = judge_scores(engine, [item], principles)
    a, b = verdict_token_ids(engine.tokenizer)
    for j, principle in enumerate(principles):
        forward = judge_prefix(item.instruction, item.output_1, item.output_2) + judge_suffix(*principle)
        backward = judge_prefix(item.instruction, item.output_2, item.output_1) + judge_suffix(*principle)
        plain = engine.next_token_logits([forward, backward], [a, b])
        np.testing.assert_allclose(scores[0, j], [plain[0, 0] - plain[0, 1], plain[1, 1] - plain[1, 0]], atol=1e-4)


def test_judge_left_truncation(tiny_checkpoint):
    cfg = EngineConfig(backend="hf", device="cpu", dtype="float32", max_context=96)
    item = JudgeItem("Tell me about rivers. " * 10, "Rivers flow to the sea. " * 5, "Water moves downhill. " * 5)
    principles = [("Helpful", "The reply answers the request."), ("Concise", "Short.")]
    with pytest.raises(PromptTooLongError, match="set engine truncation: left") as exc:
        judge_scores(create_engine(cfg, str(tiny_checkpoint)), [item], principles)
    assert "\n" not in str(exc.value)
    left = create_engine(cfg.model_copy(update={"truncation": "left"}), str(tiny_checkpoint))
    scores = judge_scores(left, [item], principles)
    naive = judge_scores(left, [item], principles, shared_prefix=False)
    assert np.abs(scores - naive).max() < 1e-4
    # the longest suffix sees exactly what a plain left-truncated call sees: the last 95 tokens + BOS
    a, b = verdict_token_ids(left.tokenizer)
    text = judge_prefix(item.instruction, item.output_1, item.output_2) + judge_suffix(*principles[0])
    plain = left.next_token_logits([text], [a, b])
    np.testing.assert_allclose(scores[0, 0, 0], plain[0, 0] - plain[0, 1], atol=1e-4)


def test_generation_over_a_shared_prompt_prefix_equals_plain_generation(engine, monkeypatch):
    """A long prefix shared by a batch (the self-align prompt) is encoded once; every row must
    still see exactly its own prompt: greedy tokens and their log-probs match plain generation."""
    import salmon_dag.engine.hf as hf

    shared = "Principles: be kind, be brief, be honest. " * 12
    prompts = [format_chat_prompt(shared + q) for q in ("Name a planet.", "How do I boil an egg?", "Say hi.")]
    assert len(os.path.commonprefix([engine.encode(p) for p in prompts])) >= hf.SHARED_PROMPT_MIN_TOKENS
    greedy = SamplingParams(max_new_tokens=10, temperature=0.0, stop=(), logprobs=True)
    widths = []
    forward = engine._forward
    monkeypatch.setattr(engine, "_forward", lambda ids, *a, **kw: widths.append(tuple(ids.shape)) or forward(ids, *a, **kw))
    fast = engine.generate(prompts, greedy)
    assert len(widths) == 1 and widths[0][0] == 1 and widths[0][1] >= hf.SHARED_PROMPT_MIN_TOKENS  # once, one row
    monkeypatch.setattr(hf, "SHARED_PROMPT_MIN_TOKENS", 10**9)
    plain = engine.generate(prompts, greedy)
    assert len(widths) == 1  # the plain path encodes every prompt in full inside generate
    assert [c[0].token_ids for c in fast] == [c[0].token_ids for c in plain]
    for f, p in zip(fast, plain):
        np.testing.assert_allclose(f[0].logprobs, p[0].logprobs, atol=1e-4)
    monkeypatch.undo()
    # several samples per prompt over the shared cache, reproducible with a seed
    params = SamplingParams(max_new_tokens=8, temperature=1.0, n=3, seed=5, stop=())
    first, again = engine.generate(prompts, params), engine.generate(prompts, params)
    assert [[c.token_ids for c in cs] for cs in first] == [[c.token_ids for c in cs] for cs in again]
    assert all(len(cs) == 3 for cs in first) and any(len({c.token_ids for c in cs}) > 1 for cs in first)
