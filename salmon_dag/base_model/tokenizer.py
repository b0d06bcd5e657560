"""A byte-level BPE tokenizer trained on the tiny model's corpus with ``tokenizers``."""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<s>", "</s>", "<pad>", "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (BOS, EOS, PAD, UNK)  # ids 0..3, in this order


def train_tokenizer(
    texts: Sequence[str], vocab_size: int, model_max_length: int | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` (deterministic for the same texts).

    Byte-level means any text encodes without ``<unk>`` and decodes back exactly. Encoding
    prepends ``<s>`` (as the model saw it in pre-training); padding is on the left because
    batched generation and last-token scoring read the last position.
    """
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    tok = Tokenizer(models.BPE(unk_token=UNK))
    # No prefix space: "### User:" at the start of a text and after "\n\n" tokenize the same way
    # that later stages build prompts.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        # All 256 bytes are in the vocab even if the corpus lacks some, so nothing maps to <unk>.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BOS} $A", pair=f"{BOS} $A $B:1", special_tokens=[(BOS, bos_id)]
            ),
        ]
    )
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        padding_side="left",
        # Keep decode(encode(x)) == x: no " ." → "." clean-up.
        clean_up_tokenization_spaces=False,
        **kwargs,
    )
