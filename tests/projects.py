"""A tiny project for end-to-end tests: the real CLI in subprocesses against a temporary
warehouse and principles folder, with the tiny profile shortened (tests/profiles/ci.yaml).

``conftest.py`` builds one per test session (``project``); tests that edit principles or launch
runs of their own can work on a copy (``copy_project``) and leave the shared one untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CI_PROFILE = ROOT / "tests" / "profiles" / "ci.yaml"

Project = tuple[Path, dict[str, str]]


def project_env(root: Path, profile: Path = CI_PROFILE) -> dict[str, str]:
    env = {
        **os.environ,
        "SALMON_PROFILE": str(profile),
        "SALMON_WAREHOUSE": str(root / "warehouse"),
        "SALMON_PRINCIPLES": str(root / "principles"),
    }
    env.pop("DAGSTER_HOME", None)
    return env


def salmon(project: Project, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    root, env = project
    proc = subprocess.run(
        [sys.executable, "-m", "assets_defs.cli", *args],
        env=env, cwd=root, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"salmon {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def states(project: Project) -> dict[str, str]:
    return {s["asset"]: s["state"] for s in json.loads(salmon(project, "status", "--format", "json").stdout)}


def make_project(root: Path) -> Project:
    """The shipped principles in ``root/principles`` and everything materialized."""
    shutil.copytree(ROOT / "principles", root / "principles")
    project = (root, project_env(root))
    salmon(project, "run", "--quiet")
    return project


def fingerprint(project: Project) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every principle file, table and model file of ``project``: what a test that
    edits or rebuilds would change (the Dagster instance and the DuckDB file, which read-only
    commands also touch, are left out)."""
    root = project[0]
    files = [*(root / "principles").rglob("*"), *(root / "warehouse").rglob("*.parquet"),
             *(root / "warehouse" / "models").rglob("*")]
    stats = {str(p.relative_to(root)): p.stat() for p in files if p.is_file()}
    return {name: (st.st_size, st.st_mtime_ns) for name, st in stats.items()}


def instance_of(project: Project):
    """The project's Dagster instance (``<warehouse>/.dagster``); use it in a ``with`` block,
    which disposes of it."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(project[0] / "warehouse" / ".dagster"))


def copy_project(project: Project, root: Path) -> Project:
    """A copy of ``project`` (principles, warehouse, Dagster instance) under ``root``.

    The model manifests and DuckDB views name absolute paths: they are pointed at the copy.
    """
    from salmon_dag.warehouse import Warehouse

    src = project[0]
    shutil.copytree(src / "principles", root / "principles")
    shutil.copytree(src / "warehouse", root / "warehouse", ignore=shutil.ignore_patterns("*.lock"))
    for manifest in (root / "warehouse" / "models").glob("*.json"):
        manifest.write_text(manifest.read_text().replace(str(src), str(root)))
    Warehouse(root / "warehouse").refresh_views()
    return root, project_env(root)


# A `salmon ui` (dagster dev: webserver, daemon, code server, run workers) started by a test in its
# own process group, so that the whole group can be stopped.
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """For a process started with ``start_new_session=True`` (``salmon ui``): SIGINT to the whole process group (dagster dev, webserver, daemon, code servers, run
    workers), then SIGKILL whatever is left after ``timeout``."""
    pgid = proc.pid  # start_new_session: the leader's pid is the group id
    if not group_alive(pgid):
        proc.wait()
        return
    os.killpg(pgid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or it keeps the group alive as a zombie
        if not group_alive(pgid):
            break
        time.sleep(0.5)
    else:
        os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while group_alive(pgid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.2)
    proc.wait(timeout=10)
