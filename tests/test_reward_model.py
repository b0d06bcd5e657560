"""The instructable reward model's pieces: reviewer prompt, encoding, scoring, checkpoints."""

from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from salmon_dag import templates
from salmon_dag.principles import PrincipleText
from salmon_dag.reward_model.checkpoint import (
    MissingHeadError,
    RewardModelManifest,
    load_reward_model,
    save_reward_model,
)
from salmon_dag.reward_model.data import heldout_groups, heldout_split, pairs_from_examples, tokenize_pairs
from salmon_dag.reward_model.encode import encode_review, review_parts
from salmon_dag.reward_model.scoring import RewardScorer, last_token_index

CONCISE = PrincipleText("Concise", "Be brief and to the point.", "Be long-winded and repetitive.")
KIND = PrincipleText("Kind", "Be kind and polite.", "Be rude and dismissive.")


def _example(eid: str, pair: str, preferred: int, principles: list[dict]) -> dict:
    return {"example_id": eid, "pair_id": pair, "prompt": "Name a colour.", "response_1": "Blue.",
            "response_2": "Blue is a colour that many people like a lot.", "preferred": preferred,
            "principles": json.dumps(principles)}


# --------------------------------------------------------------------------- prompt
def test_reviewer_prompt_lists_exactly_the_example_principles_in_order():
    items = [{"name": "Kind", "negated": True, "text": KIND.negative_definition},
             {"name": "Concise", "negated": False, "text": CONCISE.definition}]
    df = pl.DataFrame([_example("p1-0", "p1", 2, items)])
    (pair,) = pairs_from_examples(df)
    assert pair.principles == (KIND.negative_definition, CONCISE.definition)
    assert (pair.chosen, pair.rejected) == (df["response_2"][0], df["response_1"][0])
    head, tail = templates.reward_prompt_parts(list(pair.principles), pair.prompt)
    text = head + pair.chosen + tail
    lines = [l[2:] for l in text.splitlines() if l.startswith("- ")]
    assert lines == [KIND.negative_definition, CONCISE.definition]  # negated one as its negation
    assert KIND.definition not in text and CONCISE.negative_definition not in text
    assert "Concise" not in text and "Kind" not in text  # names are not shown
    # SALMON's order: the reply, the request, the principles, the cue last
    assert text.index(pair.chosen) < text.index(pair.prompt) < text.index(KIND.negative_definition)
    assert text.index(CONCISE.definition) < text.index(templates.REWARD_CUE) and text.endswith(templates.REWARD_CUE)


def test_compact_layout_keeps_the_order_and_drops_only_the_wording(tok):
    """The compact reviewer prompt has the standard one's parts in the same order (reply, request,
    principles, cue last), without the framing sentence, in fewer tokens; an unknown layout is
    refused before any example is encoded."""
    principles = [KIND.negative_definition, CONCISE.definition]
    standard = "".join(templates.reward_prompt_parts(principles, "Name a colour."))
    head, tail = templates.reward_prompt_parts(principles, "Name a colour.", "compact")
    text = head + "Blue." + tail
    assert text.index("Blue.") < text.index("Name a colour.") < text.index(KIND.negative_definition)
    assert [l[2:] for l in text.splitlines() if l.startswith("- ")] == principles
    assert text.startswith(templates.USER_TAG) and text.endswith(f"{templates.ASSISTANT_TAG} Rating:")
    assert "reviewing" not in text and "reviewing" in standard
    n = lambda t: len(tok(t)["input_ids"])
    assert n(head + tail) < n(standard) - 20
    for layout in ("standard", "compact"):  # the score is read at the cue's last token
        ids = encode_review(tok, review_parts(principles, layout), "Say hi. " * 200, "Hi! " * 300, 160)
        assert len(ids) <= 160 and tok.decode(ids).rstrip().endswith("Rating:" if layout == "compact" else " is")
    with pytest.raises(ValueError, match="unknown reviewer layout 'tiny'"):
        review_parts(principles, "tiny")


def test_pmp_prompt_has_no_principles():
    head, tail = templates.pmp_prompt_parts("### User: hi\n\n### Assistant:")
    assert templates.REWARD_PRINCIPLES_HEADER not in head and "- " not in head
    assert head.rstrip().endswith("Reply:") and tail.endswith(templates.PMP_CUE)
    assert not head.rstrip().removesuffix("Reply:").rstrip().endswith(templates.ASSISTANT_TAG)
    with pytest.raises(ValueError, match="at least one principle"):
        templates.reward_prompt_parts([], "x")


# --------------------------------------------------------------------------- encoding
@pytest.fixture(scope="module")
def tok(tiny_checkpoint):
    from salmon_dag.base_model.loading import load_tokenizer

    return load_tokenizer(str(tiny_checkpoint))


def test_long_prompts_lose_request_and_reply_but_keep_principles_and_cue(tok):
    parts = review_parts([CONCISE.definition, KIND.definition])
    long_request = "Please explain this. " * 80
    long_reply = "Here is more detail. " * 200
    head, tail = parts("")
    budget = len(tok(head + tail)["input_ids"]) + 120  # room for some request and some reply
    ids = encode_review(tok, parts, long_request, long_reply, budget)
    assert budget - 8 <= len(ids) <= budget
    text = tok.decode(ids, skip_special_tokens=True)
    assert CONCISE.definition in text and KIND.definition in text
    assert text.rstrip().endswith(templates.REWARD_CUE)
    assert "Here is more detail" in text and "Please explain this" in text  # both shortened, not dropped
    # a long conversation (PMP prompt) in text that retokenizes differently once cut still fits
    context = "### User: Qué tal? 🤖 Ünïcödé — “quotes” …\n\n### Assistant: Ça va ✓.\n\n" * 40 + "### Assistant:"
    for max_len in (96, 160, 256):
        ids = encode_review(tok, review_parts(None), context, "Réponse: très bien 👍 " * 30, max_len)
        assert len(ids) <= max_len
        assert tok.decode(ids, skip_special_tokens=True).rstrip().endswith(templates.PMP_CUE)
    with pytest.raises(ValueError, match="max_seq_len 20 is too small"):
        encode_review(tok, parts, "q", "r", 20)


# --------------------------------------------------------------------------- scoring
@pytest.fixture(scope="module")
def rm(tiny_checkpoint, tok):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_checkpoint), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    return model.eval()


def _texts():
    prompts = ["Name a colour.", "What is two plus two?", "Say hi.", "Give me a tip for sleeping better."]
    replies = ["Blue.", "Two plus two is four, as you can check by counting.", "Hi!", "Keep a regular bedtime."]
    return prompts, replies


def test_scores_do_not_depend_on_batch_composition(rm, tok):
    prompts, replies = _texts()
    alone = [RewardScorer(rm, tok, 256, batch_size=1).score([p], [r], [CONCISE.definition])[0]
             for p, r in zip(prompts, replies)]
    batched = RewardScorer(rm, tok, 256, batch_size=4).score(prompts, replies, [CONCISE.definition])
    reversed_ = RewardScorer(rm, tok, 256, batch_size=3).score(prompts[::-1], replies[::-1], [CONCISE.definition])
    assert batched == pytest.approx(alone, abs=1e-4)
    assert reversed_[::-1] == pytest.approx(alone, abs=1e-4)
    assert len(set(round(x, 4) for x in alone)) > 1  # not a constant


def test_each_distinct_reviewer_prompt_runs_through_the_model_once(rm, tok):
    """A prompt repeated within a call runs once; with a memo (evaluation's) also across calls,
    with the score the model gives it on its own."""
    prompts, replies = _texts()
    rows = []
    hook = rm.model.register_forward_hook(lambda _m, args, kwargs, _o: rows.append(kwargs["input_ids"].shape[0]),
                                          with_kwargs=True)
    try:
        scorer = RewardScorer(rm, tok, 256, batch_size=3, cache_size=100)
        first = scorer.score(prompts * 2, replies * 2, [CONCISE.definition])
        assert sum(rows) == 4 and first[:4] == first[4:]
        again = scorer.score(prompts[:2] + ["Say bye."], replies[:2] + ["Bye."], [CONCISE.definition])
        assert sum(rows) == 5 and again[:2] == first[:2]  # only the new one ran
        fresh = RewardScorer(rm, tok, 256)  # no memo across calls (RL's): the same prompt runs again
        assert fresh.score(prompts, replies, [CONCISE.definition]) == pytest.approx(first[:4], abs=1e-4)
        fresh.score(prompts[:1], replies[:1], [CONCISE.definition])
        assert sum(rows) == 5 + 4 + 1
    finally:
        hook.remove()


def test_a_reward_model_trained_under_bf16_autocast_scores_under_it(rm, tok, tmp_path, tiny_checkpoint):
    """The manifest records the CPU numeric path the model trained in; loading scores in it where
    this CPU computes bf16 natively, and the scores stay close to float32's."""
    from salmon_dag.training.precision import cpu_has_native_bf16
    from salmon_dag.reward_model.checkpoint import load_scorer

    manifest = RewardModelManifest(kind="merged", base_model_id=str(tiny_checkpoint), revision=None,
                                   trust_remote_code=False, max_seq_len=256, cpu_bf16_autocast=True)
    save_reward_model(rm, tok, tmp_path / "rm", manifest)
    scorer = load_scorer(tmp_path / "rm")
    assert scorer.cpu_bf16_autocast == cpu_has_native_bf16()
    prompts, replies = _texts()
    fp32 = RewardScorer(rm, tok, 256).score(prompts, replies, [KIND.definition])
    assert scorer.score(prompts, replies, [KIND.definition]) == pytest.approx(fp32, abs=0.05)
    save_reward_model(rm, tok, tmp_path / "rm32", _manifest("merged", str(tiny_checkpoint)))
    assert not load_scorer(tmp_path / "rm32").cpu_bf16_autocast  # trained in float32: scored so


def test_a_reward_model_is_scored_in_the_reviewer_layout_it_trained_on(rm, tok, tmp_path, tiny_checkpoint):
    """The manifest records the layout (``reward_model.reviewer_layout``); the one scoring path
    encodes in it, and a checkpoint written before the field existed reads as standard."""
    from salmon_dag.reward_model.checkpoint import MANIFEST, load_scorer

    manifest = RewardModelManifest(kind="merged", base_model_id=str(tiny_checkpoint), revision=None,
                                   trust_remote_code=False, max_seq_len=256, reviewer_layout="compact")
    save_reward_model(rm, tok, tmp_path / "rm", manifest)
    scorer = load_scorer(tmp_path / "rm")
    prompts, replies = _texts()
    compact = RewardScorer(rm, tok, 256, layout="compact")
    assert scorer.encode([KIND.definition], prompts[0], replies[0]) == compact.encode([KIND.definition], prompts[0], replies[0])
    assert scorer.score(prompts, replies, [KIND.definition]) == pytest.approx(
        compact.score(prompts, replies, [KIND.definition]), abs=1e-4)
    assert compact.score(prompts, replies, [KIND.definition]) != pytest.approx(
        RewardScorer(rm, tok, 256).score(prompts, replies, [KIND.definition]), abs=1e-4)
    data = json.loads((tmp_path / "rm" / MANIFEST).read_text())
    del data["reviewer_layout"]
    (tmp_path / "rm" / MANIFEST).write_text(json.dumps(data))
    assert load_scorer(tmp_path / "rm").layout == "standard"


@pytest.mark.parametrize("pad_is_eos", [False, True])
def test_last_token_is_found_for_left_and_right_padding(rm, tok, pad_is_eos):
    """Right-padded (as TRL trains) and left-padded (as we score) batches read the same position,
    also when the pad token is the eos token, and match transformers' own pooling."""
    prompts, replies = _texts()
    scorer = RewardScorer(rm, tok, 256)
    seqs = [scorer.encode([KIND.definition], p, r) for p, r in zip(prompts, replies)]
    pad = tok.eos_token_id if pad_is_eos else tok.pad_token_id
    width = max(map(len, seqs))
    right = torch.full((len(seqs), width), pad)
    mask = torch.zeros_like(right)
    for i, s in enumerate(seqs):
        right[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    assert last_token_index(mask).tolist() == [len(s) - 1 for s in seqs]
    rm.config.pad_token_id = pad
    try:
        with torch.no_grad():
            hf = rm(input_ids=right, attention_mask=mask).logits.squeeze(-1).tolist()
    finally:
        rm.config.pad_token_id = tok.pad_token_id
    ours = scorer.score_ids(seqs)
    assert ours == pytest.approx(hf, abs=1e-4)


def test_breakdown_scores_each_principle_alone_and_negated(rm, tok):
    scorer = RewardScorer(rm, tok, 256)
    total, rows = scorer.breakdown("Name a colour.", "Blue.", [CONCISE, KIND])
    assert [r.principle for r in rows] == ["Concise", "Kind"]
    expected = scorer.score(["Name a colour."], ["Blue."], [KIND.negative_definition])[0]
    assert rows[1].negated_score == pytest.approx(expected, abs=1e-5)
    assert total == pytest.approx(
        scorer.score(["Name a colour."], ["Blue."], [CONCISE.definition, KIND.definition])[0], abs=1e-5)
    # principles that only fit one at a time: a breakdown, but no combined score
    one = len(scorer.encode([CONCISE.definition], "Name a colour.", "Blue."))
    short = RewardScorer(rm, tok, one + 4)
    total, rows = short.breakdown("Name a colour.", "Blue.", [CONCISE, CONCISE, CONCISE])
    assert total is None and len(rows) == 3


# --------------------------------------------------------------------------- checkpoints
def _manifest(kind: str, base: str) -> RewardModelManifest:
    return RewardModelManifest(kind=kind, base_model_id=base, revision=None, trust_remote_code=False, max_seq_len=256)


def test_merged_checkpoint_round_trips_and_missing_head_is_an_error(rm, tok, tmp_path, tiny_checkpoint):
    save_reward_model(rm, tok, tmp_path / "rm", _manifest("merged", str(tiny_checkpoint)))
    loaded, ltok, manifest = load_reward_model(tmp_path / "rm")
    assert manifest.kind == "merged"
    prompts, replies = _texts()
    a = RewardScorer(rm, tok, 256).score(prompts, replies, [KIND.definition])
    b = RewardScorer(loaded, ltok, 256).score(prompts, replies, [KIND.definition])
    assert a == pytest.approx(b, abs=1e-5)
    # The base LM itself has no head: loading it as a reward model must fail, not score randomly.
    (tmp_path / "lm").mkdir()
    for f in tiny_checkpoint.iterdir():
        (tmp_path / "lm" / f.name).write_bytes(f.read_bytes())
    _manifest("merged", str(tiny_checkpoint)).write(tmp_path / "lm")
    with pytest.raises(MissingHeadError, match="no 'score' weights"):
        load_reward_model(tmp_path / "lm")
    # a checkpoint trained on another reviewer layout would score prompts it never saw: refused
    manifest_path = next((tmp_path / "rm").glob("salmon_reward_model.json"))
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "template_version": "1"}))
    with pytest.raises(ValueError, match="reviewer template version 1"):
        load_reward_model(tmp_path / "rm")


def test_adapter_checkpoint_needs_its_head(tiny_checkpoint, tok, tmp_path):
    import peft
    from transformers import AutoModelForSequenceClassification

    def adapter(modules_to_save: list[str]):
        torch.manual_seed(0)
        base = AutoModelForSequenceClassification.from_pretrained(str(tiny_checkpoint), num_labels=1)
        cfg = peft.LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                              modules_to_save=modules_to_save)
        return peft.get_peft_model(base, cfg)

    good = adapter(["score"])
    save_reward_model(good, tok, tmp_path / "good", _manifest("adapter", str(tiny_checkpoint)))
    loaded, ltok, _ = load_reward_model(tmp_path / "good")
    prompts, replies = _texts()
    assert RewardScorer(loaded, ltok, 256).score(prompts, replies, [KIND.definition]) == pytest.approx(
        RewardScorer(good, tok, 256).score(prompts, replies, [KIND.definition]), abs=1e-5)

    # The same adapter with the head's weights stripped: loading must fail, not score randomly.
    from safetensors.torch import load_file, save_file

    import shutil

    shutil.copytree(tmp_path / "good", tmp_path / "bad")
    weights = tmp_path / "bad" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    save_file({k: v for k, v in tensors.items() if ".score." not in k}, str(weights))
    with pytest.raises(MissingHeadError, match="no 'score' head"):
        load_reward_model(tmp_path / "bad")


# --------------------------------------------------------------------------- data
def test_heldout_split_keeps_each_pair_on_one_side(tok):
    items = [{"name": "Concise", "negated": False, "text": CONCISE.definition}]
    rows = [_example(f"p{i}-{k}", f"p{i}", 1 + (i + k) % 2, items) for i in range(60) for k in range(3)]
    pairs = pairs_from_examples(pl.DataFrame(rows))
    train, held = heldout_split(pairs, 0.2, seed=0)
    assert {p.group for p in train}.isdisjoint({p.group for p in held})
    assert 3 <= len({p.group for p in held}) <= 24
    assert heldout_split(pairs[::-1], 0.2, seed=0)[1] == held[::-1]  # order-independent
    ds = tokenize_pairs(tok, held, 256)
    assert ds.column_names == ["chosen_ids", "rejected_ids"] and len(ds) == len(held)


def test_a_small_run_always_holds_out_one_pair_group():
    # pair ids hash the replies, which differ between machines: with a handful of groups and a
    # 20% share, some boxes would otherwise hold out nothing (CI once evaluated on no pair)
    for seed in range(40):
        groups = [f"g{seed}-{i}" for i in range(4)]
        held = heldout_groups(groups, 0.2, seed)
        assert 1 <= len(held) and held < set(groups)
        assert held == heldout_groups(groups[::-1], 0.2, seed)
    assert heldout_groups(["only"], 0.2, 0) <= {"only"} and heldout_groups(["a", "b"], 0.0, 0) == set()


def test_pmp_trains_with_its_own_length_and_warm_up_where_the_profile_sets_them():
    from salmon_dag.config import load_profile
    from salmon_dag.reward_model.config import PMPConfig, RewardModelConfig
    from salmon_dag.reward_model.stage import pmp_training_config

    rm = RewardModelConfig(max_seq_len=1280, warmup_ratio=0.03, learning_rate=3e-5, pmp=PMPConfig())
    inherited = pmp_training_config(rm)  # unset: the reward model's own
    assert (inherited.max_seq_len, inherited.warmup_ratio, inherited.learning_rate) == (1280, 0.03, 5e-5)
    salmon = pmp_training_config(load_profile("llama2-7b-qlora").reward_model)
    assert (salmon.max_seq_len, salmon.warmup_ratio, salmon.learning_rate, salmon.save) == (1024, 0.01, 5e-5, "adapter")
