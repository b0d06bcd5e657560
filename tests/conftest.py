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
