"""What the throughput benchmarks run on: models of the tiny profile's shape with random weights
(throughput does not depend on what the weights learned), and a one-line description of the machine."""

from __future__ import annotations

import platform
from pathlib import Path

from salmon_dag.config import load_profile


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def random_model(out: Path, seed: int = 0) -> Path:
    """The tiny profile's architecture with random weights and a tokenizer trained on the corpus."""
    import torch
    from transformers import LlamaForCausalLM

    from salmon_dag.base_model.pretrain import llama_config
    from salmon_dag.base_model.tokenizer import train_tokenizer
    from salmon_dag.base_model.corpus import build_corpus

    cfg = load_profile("tiny").base_model.tiny
    tok = train_tokenizer(build_corpus(None), cfg.vocab_size, model_max_length=cfg.max_position_embeddings)
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(cfg, tok)).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def random_reward_model(policy_dir: Path, out: Path, seed: int = 1, max_len: int = 512) -> Path:
    """A reward-model checkpoint on ``policy_dir``'s random weights with a random (not zero) head."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from salmon_dag.base_model.loading import load_tokenizer
    from salmon_dag.reward_model.checkpoint import RewardModelManifest, save_reward_model

    model = AutoModelForSequenceClassification.from_pretrained(policy_dir, num_labels=1)
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.score.weight, std=0.5)  # a head that tells responses apart
    save_reward_model(model, load_tokenizer(str(policy_dir)), out,
                      RewardModelManifest("merged", str(policy_dir), None, False, max_len))
    return out
