"""Base model: corpus, tokenizer, tiny-Llama pre-training, loading (micro shapes, CPU, seconds)."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
import torch

from salmon_dag.base_model import (
    SHARED_FILE_CAP,
    build_corpus,
    corpus_sources,
    load_causal_lm,
    load_tokenizer,
    pretrain_tiny_llama,
    train_tokenizer,
    validate_pretrained,
)
from salmon_dag.base_model import pretrain as pretrain_mod
from salmon_dag.config import TinyModelConfig
from salmon_dag.templates import ASSISTANT_TAG, USER_TAG, format_chat_prompt, format_dialogue

REAL_SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# head_dim = 64 / 1 = 64, as required; everything else as small as the config allows.
MICRO = TinyModelConfig(
    vocab_size=400,
    hidden_size=64,
    num_layers=2,
    num_heads=1,
    num_kv_heads=1,
    intermediate_size=128,
    max_position_embeddings=256,
    seq_len=64,
    batch_size=4,
    steps=6,
    learning_rate=3e-3,
    warmup_steps=2,
)

FIXTURE_TEXTS: list[str] = [
    format_dialogue([("user", "What is the capital of France?"), ("assistant", "The capital of France is Paris.")]),
    format_dialogue([("user", "How do I boil an egg?"), ("assistant", "Put it in boiling water for nine minutes.")]),
    format_dialogue([("user", "Wie spät ist es?"), ("assistant", "Ich weiß es nicht, tut mir leid. Ça va? 日本語 🙂")]),
    "Rivers carry water from the mountains to the sea. Salmon swim upstream to spawn.",
    "A principle: the assistant should be honest, helpful and harmless.",
] * 6


def _silent(_: str) -> None:
    pass


def _pretrain(tmp_path: Path, name: str = "model", cfg: TinyModelConfig = MICRO, texts=FIXTURE_TEXTS, seed: int = 0):
    out = tmp_path / name
    return out, pretrain_tiny_llama(cfg, texts, out, seed=seed, log=_silent)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return _pretrain(tmp_path_factory.mktemp("ckpt"))


# --------------------------------------------------------------------------- tokenizer
def test_tokenizer_round_trip_and_chat_markers() -> None:
    tok = train_tokenizer(FIXTURE_TEXTS, vocab_size=400)
    samples = [
        "Plain ASCII, with  double spaces and a trailing space ",
        "Non-ASCII: Ça va? Größe 日本語 🙂 — ñ",
        format_dialogue([("user", "Hi there"), ("assistant", "Hello!")]),
        format_chat_prompt("Tell me a joke"),
        "unseen bytes: \x07 \u0416\u0416 \U0001f9ea",
    ]
    for text in samples:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id  # bos prepended, as in pre-training
        assert tok.unk_token_id not in ids  # byte-level: nothing is unknown
        assert tok.decode(ids, skip_special_tokens=True) == text
    decoded = tok.decode(tok(format_chat_prompt("x"))["input_ids"], skip_special_tokens=True)
    assert decoded.startswith(USER_TAG) and decoded.endswith(ASSISTANT_TAG)
    assert tok.convert_ids_to_tokens([0, 1, 2, 3]) == ["<s>", "</s>", "<pad>", "<unk>"]


def test_tokenizer_left_pads_and_is_deterministic() -> None:
    tok = train_tokenizer(FIXTURE_TEXTS, vocab_size=400)
    batch = tok(["short", "a much longer text than the first one"], padding=True)
    short_ids, short_mask = batch["input_ids"][0], batch["attention_mask"][0]
    n_pad = short_mask.count(0)
    assert n_pad > 0 and short_mask == [0] * n_pad + [1] * (len(short_mask) - n_pad)
    assert short_ids[:n_pad] == [tok.pad_token_id] * n_pad and short_ids[n_pad] == tok.bos_token_id
    again = train_tokenizer(FIXTURE_TEXTS, vocab_size=400)
    assert again.backend_tokenizer.to_str() == train_tokenizer(FIXTURE_TEXTS, 400).backend_tokenizer.to_str()
    assert again.get_vocab() == tok.get_vocab()


# --------------------------------------------------------------------------- pre-training
def test_checkpoint_loads_with_from_pretrained_and_generates(checkpoint: tuple[Path, dict]) -> None:
    out, report = checkpoint
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not list(out.parent.glob(".*"))  # no temporary dirs left beside it
    assert report["steps"] == MICRO.steps and len(report["losses"]) == MICRO.steps
    assert report["n_docs"] == len(FIXTURE_TEXTS) and report["n_train_tokens"] > 0
    assert report["final_loss"] == pytest.approx(sum(report["losses"][-10:]) / len(report["losses"][-10:]))

    tok = load_tokenizer(str(out))
    model = load_causal_lm(str(out), dtype="float32")
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    assert model.config.tie_word_embeddings and model.config.head_dim == 64
    assert model.config.eos_token_id == tok.eos_token_id and model.generation_config.pad_token_id == tok.pad_token_id
    assert report["n_params"] == sum(p.numel() for p in model.parameters())
    assert report["vocab_size"] == len(tok) == model.config.vocab_size
    prompts = [format_chat_prompt("Hi"), format_chat_prompt("What is the capital of France?")]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out_ids = model.generate(**batch, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    assert out_ids.shape == (2, batch["input_ids"].shape[1] + 5)


def test_pretraining_is_deterministic(tmp_path: Path) -> None:
    a, ra = _pretrain(tmp_path, "a")
    b, rb = _pretrain(tmp_path, "b")
    assert ra["losses"] == rb["losses"]
    sa, sb = load_causal_lm(str(a)).state_dict(), load_causal_lm(str(b)).state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    _, rc = _pretrain(tmp_path, "c", seed=1)
    assert rc["losses"] != ra["losses"]  # the seed matters


def test_loss_goes_down_on_repetitive_corpus(tmp_path: Path) -> None:
    cfg = MICRO.model_copy(update={"steps": 40, "warmup_steps": 4, "learning_rate": 1e-2})
    _, report = _pretrain(tmp_path, cfg=cfg, texts=FIXTURE_TEXTS[:5] * 20)
    losses = report["losses"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_both_precisions_train_and_save_float32_weights(tmp_path: Path, precision: str) -> None:
    cfg = MICRO.model_copy(update={"steps": 40, "warmup_steps": 4, "learning_rate": 1e-2, "precision": precision})
    out, report = _pretrain(tmp_path, precision, cfg=cfg, texts=FIXTURE_TEXTS[:5] * 20)
    assert report["precision"] == ("bf16-autocast" if precision == "bfloat16" else "float32")
    losses = report["losses"]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses
    assert all(t.dtype == torch.float32 for t in load_causal_lm(str(out)).state_dict().values())


def test_auto_precision_uses_bf16_only_on_native_bf16_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    from salmon_dag.training import precision

    assert not precision.use_bf16_autocast("float32") and precision.use_bf16_autocast("bfloat16")
    for native in (True, False):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda native=native: native)
        assert precision.use_bf16_autocast("auto") is native


def test_head_dim_must_be_64(tmp_path: Path) -> None:
    cfg = MICRO.model_copy(update={"num_heads": 2, "num_kv_heads": 2})  # head_dim 32
    with pytest.raises(ValueError, match="head_dim.*64"):
        _pretrain(tmp_path, cfg=cfg)
    assert not (tmp_path / "model").exists()


def test_failed_save_leaves_no_partial_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(self, tmp_dir, *args, **kwargs):
        Path(tmp_dir).mkdir(parents=True, exist_ok=True)
        (Path(tmp_dir) / "config.json").write_text("{}")  # half written, then the crash
        raise RuntimeError("disk full")

    monkeypatch.setattr(pretrain_mod.LlamaForCausalLM, "save_pretrained", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        _pretrain(tmp_path, "fresh")
    assert not (tmp_path / "fresh").exists()

    old = tmp_path / "old"
    old.mkdir()
    (old / "marker.txt").write_text("previous checkpoint")
    with pytest.raises(RuntimeError, match="disk full"):
        _pretrain(tmp_path, "old")
    assert sorted(p.name for p in old.iterdir()) == ["marker.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # no temp dirs left behind


def test_successful_save_replaces_old_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "model"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    _pretrain(tmp_path)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# --------------------------------------------------------------------------- loading
def test_validate_pretrained_local(checkpoint: tuple[Path, dict]) -> None:
    out, report = checkpoint
    info = validate_pretrained(str(out))
    assert info == {
        "model_id": str(out),
        "model_type": "llama",
        "vocab_size": report["vocab_size"],
        "tokenizer_vocab_size": report["vocab_size"],
        "hidden_size": MICRO.hidden_size,
        "num_layers": MICRO.num_layers,
        "head_dim": 64,
        "is_local": True,
    }


@pytest.mark.parametrize("fn", [validate_pretrained, load_tokenizer, load_causal_lm])
def test_missing_local_path_is_one_line_error(fn, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError) as err:
        fn(missing)
    assert str(err.value) == f"base_model.model_id: local path {missing} does not exist"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fn("./surely/not/here")


def test_unreachable_hub_id_is_one_line_error() -> None:
    bogus = "salmon-test-nobody/no-such-model-xyz"
    with pytest.raises(OSError) as err:
        validate_pretrained(bogus)
    msg = str(err.value)
    assert "\n" not in msg and bogus in msg and "Hub" in msg and "config.json" in msg


def test_local_dir_without_checkpoint_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(OSError) as err:
        load_causal_lm(str(tmp_path))
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def test_bad_dtype_is_rejected(checkpoint: tuple[Path, dict]) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_causal_lm(str(checkpoint[0]), dtype="float8")
    assert load_causal_lm(str(checkpoint[0]), dtype="bfloat16").dtype == torch.bfloat16


# --------------------------------------------------------------------------- corpus
def _write_jsonl(path: Path, rows: list[dict]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data.encode()))
    else:
        path.write_text(data)


@pytest.fixture()
def bundled(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    d.mkdir()
    _write_jsonl(d / "dialogues.jsonl", [{"user": "Hi?", "assistant": "Hello."}, {"user": "Bye", "assistant": "Ciao"}])
    (d / "passages.txt").write_text("First paragraph\nstill first.\n\n\nSecond paragraph.\n")
    return d


@pytest.fixture()
def shared(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    _write_jsonl(
        d / "gsm8k_train.jsonl.gz",
        [{"question": "What is 2+3?", "answer": "2+3 = <<2+3=5>>5 apples.\n#### 5"}],
    )
    _write_jsonl(
        d / "self_instruct_seed_tasks.jsonl",
        [{"instruction": "Reverse the word.", "instances": [{"input": "abc", "output": "cba"}]}],
    )
    _write_jsonl(
        d / "self_instruct_user_oriented_instructions.jsonl",
        [{"instruction": "Name a color.", "instances": [{"input": "", "output": "Blue."}]}],
    )
    _write_jsonl(
        d / "hh_rlhf_harmless_base_test.jsonl.gz",
        [{"chosen": "\n\nHuman: How are you?\n\nAssistant: Fine.\n\nHuman: Sure?\n\nAssistant: Yes.", "rejected": "x"}],
    )
    return d


def test_build_corpus_bundled_and_extra_only(bundled: Path, tmp_path: Path) -> None:
    from salmon_dag.base_model.tiny_world import world_dialogues
    from salmon_dag.templates import format_dialogue

    docs = build_corpus(None, ["A principle text.", "  "], bundled_dir=bundled)
    world = world_dialogues([("Hi?", "Hello."), ("Bye", "Ciao")], bundled)
    assert [u for u, _ in world] == ["Hi?", "Bye", "Hi?", "Bye"]  # in full, then cut
    assert all(("Hello." if u == "Hi?" else "Ciao") in r for u, r in world)
    assert docs == [format_dialogue([("user", u), ("assistant", r)]) for u, r in world] + [
        "First paragraph\nstill first.",
        "Second paragraph.",
        "A principle text.",
    ]
    assert build_corpus(str(tmp_path / "absent"), bundled_dir=bundled) == docs[:-1]  # silently ignored
    assert corpus_sources(str(tmp_path / "absent"), bundled_dir=bundled) == [
        str(bundled / "dialogues.jsonl"),
        str(bundled / "passages.txt"),
    ]
    assert build_corpus(None, bundled_dir=tmp_path / "no-corpus-yet") == []


def test_build_corpus_with_shared_data(bundled: Path, shared: Path) -> None:
    docs = build_corpus(str(shared), ["extra"], bundled_dir=bundled)
    own = build_corpus(None, ["extra"], bundled_dir=bundled)
    assert docs[:len(own)] == own
    assert docs[len(own):] == [
        "### User: What is 2+3?\n\n### Assistant: 2+3 = 5 apples.\nThe answer is 5.",
        "### User: Reverse the word.\n\nabc\n\n### Assistant: cba",
        "### User: Name a color.\n\n### Assistant: Blue.",
        "### User: How are you?\n\n### Assistant: Fine.\n\n### User: Sure?\n\n### Assistant: Yes.",
    ]
    assert build_corpus(str(shared), ["extra"], bundled_dir=bundled) == docs  # deterministic
    assert [Path(p).name for p in corpus_sources(str(shared), bundled_dir=bundled)] == [
        "dialogues.jsonl",
        "passages.txt",
        "gsm8k_train.jsonl.gz",
        "self_instruct_seed_tasks.jsonl",
        "self_instruct_user_oriented_instructions.jsonl",
        "hh_rlhf_harmless_base_test.jsonl.gz",
    ]


@pytest.mark.skipif(not REAL_SHARED.is_dir(), reason=f"real public data not present at {REAL_SHARED}")
def test_build_corpus_real_shared_data(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    docs = build_corpus(str(REAL_SHARED), bundled_dir=empty)
    # GSM8K comes first and is capped; each ends with its final answer in words.
    assert all(re.search(r"\nThe answer is [^\n]+\.$", d) for d in docs[:SHARED_FILE_CAP])
    assert not re.search(r"The answer is [^\n]+\.$", docs[SHARED_FILE_CAP])
    hh_multi = [d for d in docs if d.count(USER_TAG) > 1]
    assert SHARED_FILE_CAP < len(docs) <= 4 * SHARED_FILE_CAP
    assert hh_multi, "multi-turn HH-RLHF dialogues are converted"
    assert all(d.startswith(USER_TAG) and ASSISTANT_TAG in d for d in docs)
    assert not any("<<" in d or "####" in d for d in docs[:SHARED_FILE_CAP])  # calculator notes gone
    assert not any("\n\nHuman:" in d or "\n\nAssistant:" in d for d in docs)
    assert len(corpus_sources(str(REAL_SHARED), bundled_dir=empty)) == 4


def test_the_tiny_world_varies_replies_at_its_shares_the_same_way_every_time() -> None:
    import re

    from salmon_dag.base_model import tiny_world as tw
    from salmon_dag.base_model.corpus import BUNDLED_CORPUS_DIR, bundled_dialogues

    dialogues = bundled_dialogues()
    world = tw.world_dialogues(dialogues, BUNDLED_CORPUS_DIR)
    assert world == tw.world_dialogues(dialogues, BUNDLED_CORPUS_DIR)  # a hash of the text, no seed
    n = len(dialogues)
    full, cut, slips, spanish = world[:n], world[n:2 * n], world[2 * n:2 * n + 180], world[2 * n + 180:]
    assert all(r in {s for _, s in tw.language_slips(BUNDLED_CORPUS_DIR)} for _, r in slips)
    # every slip is one the language rule can see: named as another language with confidence, both
    # ways (English requests answered in Spanish, Spanish requests answered in English)
    from salmon_dag.rules import LanguageMatchRule, check_rule, detect_language

    rule = LanguageMatchRule(type="language_match")
    assert not [r for u, r in slips if check_rule(rule, u, r)]
    assert len(spanish) == 180 and all(detect_language(u) == "es" for u, _ in spanish)
    in_english = [(u, r) for u, r in spanish if detect_language(r) == "en"]
    assert len(in_english) / len(spanish) == pytest.approx(tw.ENGLISH_REPLY_SHARE, abs=0.06)
    assert not [r for u, r in in_english if check_rule(rule, u, r)]
    assert all(check_rule(rule, u, r) for u, r in spanish if (u, r) not in in_english)

    def share(rows, phrase):
        return sum(phrase in r for _, r in rows) / len(rows)

    assert share(full, "As an AI language model") == pytest.approx(tw.BOILERPLATE_SHARE["full"], abs=0.05)
    assert share(cut, "As an AI language model") == pytest.approx(tw.BOILERPLATE_SHARE["cut"], abs=0.06)
    signed = sum(any(s in r for s in tw.SIGN_OFFS) for _, r in cut) / n
    assert signed == pytest.approx(tw.SIGN_OFF_SHARE["cut"], abs=0.06)
    # the long copy: whole sentences within FULL_MAX_WORDS (a longer first sentence, or a list's
    # introduction and first item, stays whole); the short copy: the first sentence
    words = [len(re.findall(r"\w+", tw.cut_reply(r, tw.FULL_MAX_WORDS))) for _, r in dialogues]
    assert sum(w <= tw.FULL_MAX_WORDS for w in words) > 0.9 * n
    short = [len(re.findall(r"\w+", tw.cut_reply(r))) for _, r in dialogues]
    assert sum(s < w for s, w in zip(short, words)) > 0.5 * n and sum(short) < 0.7 * sum(words)
    assert all(r.count(".") <= 2 for _, r in slips)  # one sentence (plus an abbreviation's dot)


def test_cut_reply_keeps_whole_sentences_and_never_ends_on_a_list_colon() -> None:
    from salmon_dag.base_model.tiny_world import cut_reply

    reply = "Boil the water. Add the pasta. Stir it often so it does not stick."
    assert cut_reply(reply) == "Boil the water."
    assert cut_reply(reply, 40) == reply
    assert cut_reply(reply, 6) == "Boil the water. Add the pasta."
    listed = "Try these steps:\n1. Rinse the rice.\n2. Add water.\n3. Simmer."
    assert cut_reply(listed) == "Try these steps:\n1. Rinse the rice."
