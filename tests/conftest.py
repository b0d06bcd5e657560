import os
import shutil
from pathlib import Path

import pytest

# Never reach for the Hub during tests; keep torch on the two CPU cores CI has.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist each worker (and every process its tests start) gets its share of the cores:
# with torch's default of one OpenMP thread per core, two workers ran four or more busy threads on
# two cores, and OpenMP threads that wait for each other slow down far more than twice.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // _WORKERS)))

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
    """The whole tiny graph materialized once per session (tests/projects.py), shared read-only by
    every test and every pytest-xdist worker: the first worker builds it under a file lock, the
    others wait for it. A test that edits principles or runs assets works on ``copy_project``; a
    test that changed the shared project fails at teardown (:func:`projects.fingerprint`)."""
    from filelock import FileLock
    from projects import fingerprint, make_project, project_env

    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "shared-project"
        with FileLock(f"{root}.lock"):
            if not (root / ".built").is_file():
                shutil.rmtree(root, ignore_errors=True)
                make_project(root)
                (root / ".built").touch()
        proj = (root, project_env(root))
    else:
        proj = make_project(tmp_path_factory.mktemp("project"))
    before = fingerprint(proj)
    yield proj
    after = fingerprint(proj)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert not changed, f"a test changed the shared project (use copy_project): {changed[:5]}"


# Test modules whose tests on the shared project take longest (minutes each: rebuilds, the daemon,
# the seed study, the browser), measured with `--durations`; they start first.
LONGEST_FIRST = ("test_rebuilds", "test_study", "test_ui_browser", "test_pool", "test_pipeline_e2e")


def pytest_collection_modifyitems(config, items):
    """Order the tests for pytest-xdist's ``worksteal``, which gives each of n workers one
    contiguous n-th of the list and lets an idle worker take the end of another's queue: the
    first queue starts with its share of the slow tests on the shared project (longest first: its
    first test builds the project), the others with the slow tests that do not need it
    (multi-process launches, run while the project builds) and then their share of the project's;
    unit tests fill every queue's end, which is what gets stolen. Without xdist the same order
    runs one test at a time."""
    def rank(item) -> int:
        name = item.module.__name__.rsplit(".", 1)[-1]
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    n = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    slow = [i for i in items if i.get_closest_marker("slow")]
    fast = [i for i in items if not i.get_closest_marker("slow")]
    on_project = sorted((i for i in slow if "project" in i.fixturenames), key=rank)
    alone = [i for i in slow if "project" not in i.fixturenames]
    queues = [on_project[k::n] for k in range(n)]
    others = max(1, n - 1)
    for k in range(n - 1, 0, -1) if n > 1 else [0]:
        queues[k][:0] = alone[k - 1::others] if n > 1 else alone
    ordered, left = [], len(items)
    for k, queue in enumerate(queues):
        size = left // (n - k)  # what worksteal sends worker k first
        fill = max(0, size - len(queue))
        ordered += queue + fast[:fill]
        fast = fast[fill:]
        left -= len(queue) + fill
    items[:] = ordered + fast
