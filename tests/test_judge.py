"""Judge verdict letters across tokenizer families, and the judge's order bookkeeping."""

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from salmon_dag.base_model import build_corpus, train_tokenizer
from salmon_dag.engine.base import Engine, EngineError
from salmon_dag.judge import letter_token_id, verdict_token_ids
from salmon_dag.templates import JUDGE_ANSWER_LEAD, judge_prefix, judge_suffix

CONTEXT = judge_prefix("Q?", "First.", "Second.") + judge_suffix("Helpful", "Be helpful.")
TEXTS = build_corpus(None)[:200] + [CONTEXT + "a", CONTEXT + "b", "Output (a) Output (b) (a) (b) a b"]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>")


def sentencepiece_like() -> PreTrainedTokenizerFast:
    """Llama-2 style: Metaspace ("▁a") pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=800, special_tokens=["<s>", "</s>", "<unk>", "<pad>"]))
    return _wrap(tok)


def gpt2_like() -> PreTrainedTokenizerFast:
    """GPT-2 style byte-level BPE with a prefix space ("Ġa")."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=800, special_tokens=["<s>", "</s>", "<unk>", "<pad>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _wrap(tok)


def merges_paren() -> PreTrainedTokenizerFast:
    """A tokenizer that learned "(a" and "(b" as single tokens: the context/letter split must still work."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["Output (a", "Output (b"] * 500 + TEXTS[:50],
                            trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "</s>", "<unk>", "<pad>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return _wrap(tok)


TOKENIZERS = {
    "project-tiny": lambda: train_tokenizer(TEXTS, 800),
    "sentencepiece-like": sentencepiece_like,
    "gpt2-like": gpt2_like,
    "merges-paren": merges_paren,
}


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_verdict_letters_are_what_the_model_would_emit(name):
    tok = TOKENIZERS[name]()
    a, b = verdict_token_ids(tok)
    assert a != b
    ctx = tok(CONTEXT, add_special_tokens=False)["input_ids"]
    for letter, tid in (("a", a), ("b", b)):
        # appending the id to the context's tokens reads as context + letter
        assert tok.decode(ctx + [tid]).endswith(JUDGE_ANSWER_LEAD + letter), (name, tok.convert_ids_to_tokens([tid]))
        assert tok.decode([tid]).strip() == letter


def test_letter_without_single_token_is_an_error():
    tok = train_tokenizer(["xyz " * 50], 300)
    with pytest.raises(EngineError, match="no single token for the judge letter 'qq'"):
        letter_token_id(tok, "Output (", "qq")


def test_order_bookkeeping_with_a_scripted_engine():
    """Output 1 preferred in both orders gives two positive scores."""
    from salmon_dag.judge import JudgeItem, judge_scores

    tok = train_tokenizer(TEXTS, 800)
    a, b = verdict_token_ids(tok)

    class Scripted:
        tokenizer = tok
        encode_shared = Engine.encode_shared

        def shared_prefix_logits(self, prefixes, suffixes, cands):
            # favour whichever letter shows the text "GOOD"
            out = []
            for p, sufs in zip(prefixes, suffixes):
                text = tok.decode(p)
                good_is_a = text.index("GOOD") < text.index("BAD")
                row = [3.0, 1.0] if good_is_a else [1.0, 3.0]
                out.append(np.array([row] * len(sufs)))
            return out

    scores = judge_scores(Scripted(), [JudgeItem("q", "GOOD", "BAD"), JudgeItem("q", "BAD", "GOOD")],
                          [("P", "d")])
    assert scores[0, 0].tolist() == [2.0, 2.0]
    assert scores[1, 0].tolist() == [-2.0, -2.0]


def test_answer_lead_names_the_principle_right_before_the_letter():
    suffix = judge_suffix("Concise", "The reply is short.")
    assert suffix.endswith(f"Judging by Concise, the better reply is {JUDGE_ANSWER_LEAD}")
    assert suffix.index("The reply is short.") < suffix.rindex("Concise")
    assert "Concise" not in judge_prefix("Q?", "First.", "Second.")  # the prefix stays principle-free


class _Tokens:
    """Just enough of an engine to call Engine.encode_shared with a given tokenizer."""

    encode_shared = Engine.encode_shared

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_shared_prefix_split_is_exactly_the_plain_tokenization(name):
    tok = TOKENIZERS[name]()
    prefix = judge_prefix("How do I boil an egg?", "Boil it for nine minutes.", "Eggs are nice.")
    prompts = [prefix + judge_suffix(n, d) for n, d in
               (("Helpful", "Be helpful."), ("Concise", "Be brief."), ("Honest", "Say true things."))]
    head, rest = _Tokens(tok).encode_shared(prompts)
    for text, tail in zip(prompts, rest):
        assert head + tail == tok(text, add_special_tokens=True)["input_ids"]
        assert tail  # every suffix keeps a token to score
    # the shared part covers (nearly) the whole principle-free prefix
    assert len(head) >= len(tok(prefix, add_special_tokens=True)["input_ids"]) - 2
    # one prompt: all but its last token are shared
    head, rest = _Tokens(tok).encode_shared(prompts[:1])
    assert len(rest[0]) == 1 and head + rest[0] == tok(prompts[0], add_special_tokens=True)["input_ids"]


def test_sentencepiece_suffix_encoded_alone_differs_at_the_seam():
    """Why the judge tokenizes whole strings: Metaspace adds a dummy-prefix space to a suffix
    encoded on its own, so prefix ids + suffix ids are not the ids of the whole string."""
    tok = sentencepiece_like()
    prefix, suffix = "Output (a): yes", "Principle: Concise"
    alone = tok(prefix, add_special_tokens=True)["input_ids"] + tok(suffix, add_special_tokens=False)["input_ids"]
    assert alone != tok(prefix + suffix, add_special_tokens=True)["input_ids"]
