"""A Llama-2-shaped model with random weights and a Llama-style tokenizer (``base_model.kind:
random``): what a rehearsal (salmon_dag.rehearsal) runs in place of a Hub checkpoint.

Nothing is downloaded or trained but the tokenizer: the pipeline's mechanics (loading, LoRA and
QLoRA, vLLM, launched ranks, saving) do not depend on what the weights know. The checkpoint is an
ordinary ``save_pretrained`` directory, loaded like a real one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, processors, trainers
from transformers import GenerationConfig, LlamaForCausalLM, LlamaTokenizerFast

from salmon_dag.base_model.config import RandomModelConfig
from salmon_dag.base_model.pretrain import llama_config, save_atomically

# Llama-2's special tokens and their ids; it has no pad token (loading reuses </s>)
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
# Llama-2's config.json values that the rehearsal keeps whatever the size
RMS_NORM_EPS = 1e-5
ROPE_THETA = 10000.0


def _normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])


def train_llama_tokenizer(texts: Sequence[str], vocab_size: int, model_max_length: int) -> LlamaTokenizerFast:
    """A SentencePiece-style BPE as Llama's: spaces as "▁" with one prepended, byte fallback for
    unseen characters (``<0x..>`` tokens), ``<unk>``/``<s>``/``</s>`` as ids 0-2, ``<s>`` added."""
    if not texts:
        raise ValueError("train_llama_tokenizer needs at least one text")
    # Llama's layout: the three special tokens, the 256 byte tokens, then the learned pieces
    trainer = trainers.BpeTrainer(vocab_size=max(vocab_size - 256, 16), special_tokens=[UNK, BOS, EOS],
                                  min_frequency=2, show_progress=False)
    learner = Tokenizer(models.BPE(unk_token=UNK))
    learner.normalizer = _normalizer()
    learner.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
    learned = json.loads(learner.to_str())["model"]
    vocab = {UNK: 0, BOS: 1, EOS: 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, byte_fallback=True, fuse_unk=True))
    tok.normalizer = _normalizer()
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([UNK, BOS, EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])])
    return LlamaTokenizerFast(tokenizer_object=tok, unk_token=UNK, bos_token=BOS, eos_token=EOS,
                              add_bos_token=True, add_eos_token=False, padding_side="left",
                              clean_up_tokenization_spaces=False, model_max_length=model_max_length)


def build_random_llama(cfg: RandomModelConfig, texts: Sequence[str], out_dir: Path, seed: int) -> dict[str, Any]:
    """Train the tokenizer on ``texts``, initialise the model from ``seed`` and save both to
    ``out_dir`` atomically. Returns the model's shape."""
    start = time.perf_counter()
    tokenizer = train_llama_tokenizer(texts, cfg.vocab_size, cfg.max_position_embeddings)
    torch.manual_seed(seed)
    # Llama-2's own settings; it has no pad token
    model = LlamaForCausalLM(llama_config(cfg, tokenizer, rms_norm_eps=RMS_NORM_EPS, rope_theta=ROPE_THETA,
                                          tie_word_embeddings=False, pad_token_id=None)).eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    save_atomically(model, tokenizer, Path(out_dir))
    return {
        "like": cfg.like,
        "weights": "random",
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "hidden_size": cfg.hidden_size,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "seconds": time.perf_counter() - start,
    }
