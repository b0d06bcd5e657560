import os
from pathlib import Path

import pytest

# Never reach for the Hub during tests; keep torch on the two CPU cores CI has.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public test data not present at {SHARED_DATA} (only in the dev/CI checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A micro Llama (head_dim 64, GQA) pre-trained for a few seconds on the bundled corpus."""
    from salmon_dag.base_model import build_corpus, pretrain_tiny_llama
    from salmon_dag.config import TinyModelConfig

    cfg = TinyModelConfig(
        vocab_size=600, hidden_size=128, num_layers=2, num_heads=2, num_kv_heads=1,
        intermediate_size=256, max_position_embeddings=1024, seq_len=64, batch_size=8,
        steps=40, learning_rate=3e-3, warmup_steps=4,
    )
    out = tmp_path_factory.mktemp("ckpt") / "micro"
    pretrain_tiny_llama(cfg, build_corpus(None)[:300], out, seed=0, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def project(tmp_path_factory):
    """The whole tiny graph materialized once per session (tests/projects.py)."""
    from projects import make_project

    return make_project(tmp_path_factory.mktemp("project"))
