"""The sandbox for generated code: every bad program fails safely and the next run still works.

The hostile programs are bounded on purpose (a fork loop of at most 200, not an exponential bomb),
so even a broken sandbox could not take the machine down.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from salmon_dag.benchmarks.sandbox import SandboxLimits, SandboxResult, run_python, sandbox_support

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = sandbox_support()
FAST = SandboxLimits(timeout_s=2.0)

pytestmark = pytest.mark.skipif(
    not SUPPORT["can_run"],
    reason="sandbox refuses to run here: running as root without the ability to drop privileges (uid_drop)",
)

HUMANEVAL_LIKE = '''
def add(a: int, b: int) -> int:
    return a + b

def check(candidate):
    assert candidate(2, 3) == 5
    assert candidate(-1, 1) == 0

check(add)
print("ok")
'''


def _runs_on() -> None:
    """After any bad run, a normal one still passes."""
    result = run_python(HUMANEVAL_LIKE, FAST)
    assert result.status == "passed", result
    assert result.stdout == "ok\n"


def test_support_report_names_every_layer():
    for key in ("running_as_root", "uid_drop", "network_namespace", "socket_block_fallback",
                "mount_namespace", "read_only_filesystem", "process_limit", "resource_limits", "can_run"):
        assert isinstance(SUPPORT[key], bool), key
    assert SUPPORT["network_namespace"] != SUPPORT["socket_block_fallback"]


def test_passing_program_passes_and_assertion_fails():
    ok = run_python(HUMANEVAL_LIKE, FAST)
    assert isinstance(ok, SandboxResult)
    assert (ok.status, ok.returncode, ok.stdout) == ("passed", 0, "ok\n")
    bad = run_python(HUMANEVAL_LIKE.replace("== 5", "== 6"), FAST)
    assert bad.status == "failed" and bad.returncode == 1
    assert "AssertionError" in bad.stderr
    raised = run_python("raise ValueError('boom')", FAST)
    assert raised.status == "failed" and "ValueError: boom" in raised.stderr


def test_child_gets_isolated_interpreter_and_minimal_environment(monkeypatch):
    monkeypatch.setenv("SALMON_SANDBOX_SECRET", "hunter2")
    code = (
        "import os, sys\n"
        "print(sys.flags.isolated, sys.flags.no_site)\n"
        "print(sorted(os.environ))\n"
        "print(os.environ['HOME'] == os.getcwd())\n"
        "print(os.getuid())\n"
    )
    result = run_python(code, FAST)
    assert result.status == "passed", result
    lines = result.stdout.splitlines()
    assert lines[0] == "1 1"
    assert "SALMON_SANDBOX_SECRET" not in lines[1] and "PYTHONPATH" not in lines[1]
    assert lines[2] == "True"
    if SUPPORT["uid_drop"]:
        assert int(lines[3]) >= 61000


def test_infinite_loop_times_out_and_the_run_goes_on():
    limits = SandboxLimits(timeout_s=1.0)
    result = run_python("while True:\n    pass\n", limits)
    assert result.status == "timeout"
    assert result.seconds < limits.timeout_s + 1.0
    # A sleeping child in its own session (escaping the process group) is killed too.
    result = run_python(
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\ntime.sleep(60)\n", limits
    )
    assert result.status == "timeout" and result.seconds < limits.timeout_s + 1.5
    _runs_on()


@pytest.mark.skipif(not SUPPORT["process_limit"], reason="RLIMIT_NPROC not enforceable: no uid drop (process_limit)")
def test_fork_bomb_is_contained_and_the_run_goes_on():
    # Bounded: at most 200 forks in a loop, each child sleeps and exits; max_processes is 16.
    code = '''
import os, time
made = refused = 0
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        refused += 1
        continue
    if pid == 0:
        time.sleep(5)
        os._exit(0)
    made += 1
print(made, refused)
raise SystemExit(3 if refused else 0)
'''
    result = run_python(code, SandboxLimits(timeout_s=3.0, max_processes=16))
    assert result.status == "failed" and result.returncode == 3, result
    made, refused = map(int, result.stdout.split())
    assert made < 16 and refused > 0
    _runs_on()
    # Threads count too.
    threads = run_python(
        "import threading, time\n"
        "ts = [threading.Thread(target=time.sleep, args=(1,)) for _ in range(64)]\n"
        "[t.start() for t in ts]\n",
        FAST,
    )
    assert threads.status == "failed" and "can't start new thread" in threads.stderr
    _runs_on()


def test_huge_allocation_fails_with_memory_error_and_the_run_goes_on():
    result = run_python("x = bytearray(10 * 1024**3)\n", SandboxLimits(timeout_s=3.0, memory_mb=512))
    assert result.status == "failed"
    assert "MemoryError" in result.stderr
    _runs_on()


def test_no_network_reaches_a_server_the_test_listens_on():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'escaped')\n"
            "print('connected')\n"
        )
        result = run_python(code, SandboxLimits(timeout_s=4.0))
        assert result.status == "failed", result
        assert "connected" not in result.stdout
        with pytest.raises(TimeoutError):
            conn, _ = server.accept()
            conn.close()
    finally:
        server.close()
    if SUPPORT["network_namespace"]:  # no interfaces at all beyond a down loopback
        outside = run_python(
            "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\n", SandboxLimits(timeout_s=4.0)
        )
        assert outside.status == "failed" and outside.seconds < 3.0
    _runs_on()


@pytest.mark.skipif(not SUPPORT["uid_drop"], reason="no uid drop (uid_drop): the child runs as the caller")
def test_cannot_write_into_a_root_owned_directory(tmp_path):
    target_dir = tmp_path / "owned_by_caller"
    target_dir.mkdir(mode=0o755)
    os.chmod(tmp_path, 0o755)
    target = target_dir / f"escape_{uuid.uuid4().hex}"
    result = run_python(f"open({str(target)!r}, 'w').write('x')\n", FAST)
    assert result.status == "failed"
    assert "PermissionError" in result.stderr or "Read-only file system" in result.stderr
    assert not target.exists()
    _runs_on()


@pytest.mark.skipif(
    not SUPPORT["read_only_filesystem"],
    reason="no mount namespace (mount_namespace): world-writable dirs such as /tmp stay writable",
)
def test_cannot_write_to_tmp_or_the_project():
    escapes = [
        Path(tempfile.gettempdir()) / f"salmon_sandbox_escape_{uuid.uuid4().hex}",
        Path("/dev/shm") / f"salmon_sandbox_escape_{uuid.uuid4().hex}",
        ROOT / f"salmon_sandbox_escape_{uuid.uuid4().hex}",
    ]
    for target in escapes:
        result = run_python(f"open({str(target)!r}, 'w').write('x')\n", FAST)
        assert result.status == "failed", (target, result)
        assert not target.exists()
    _runs_on()


def test_file_size_is_limited_inside_the_work_dir():
    result = run_python("open('big.bin', 'wb').write(b'x' * (2 << 20))\n", SandboxLimits(max_output_bytes=1 << 20))
    assert result.status == "failed" and "File too large" in result.stderr
    _runs_on()


def test_output_is_truncated():
    limits = SandboxLimits(timeout_s=3.0, max_output_bytes=1000)
    result = run_python("import sys\nprint('x' * 100_000)\nsys.stderr.write('y' * 100_000)\n", limits)
    assert result.status == "passed"
    assert result.stdout.startswith("x" * 1000) and "truncated" in result.stdout
    assert len(result.stdout) < 1200 and len(result.stderr) < 1200


def test_temp_dir_is_removed_even_after_a_timeout():
    # each run's own temp dir (the work dir's parent), not a listing of the temp folder: other
    # tests (another pytest-xdist worker) may be running sandboxes at the same time
    seen = run_python("import os\nprint(os.getcwd())\n", FAST)
    assert seen.status == "passed"
    timed = run_python("import os, time\nprint(os.getcwd(), flush=True)\ntime.sleep(30)\n", SandboxLimits(timeout_s=0.5))
    assert timed.status == "timeout"
    for work in (Path(seen.stdout.strip()), Path(timed.stdout.strip())):
        assert work.parent.name.startswith("salmon-sandbox-") and work.parent.parent == Path(tempfile.gettempdir())
        assert not work.exists() and not work.parent.exists()


def test_parallel_runs_do_not_interfere():
    results: dict[int, SandboxResult] = {}

    def work(i: int) -> None:
        code = "import os, time\nopen('mine.txt', 'w').write(str(%d))\ntime.sleep(0.3)\nprint(open('mine.txt').read())\n" % i
        results[i] = run_python(code, FAST)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # A hostile neighbour at the same time must not starve the others.
    hostile = run_python(
        "import os, time\nfor _ in range(100):\n    try:\n        if os.fork() == 0:\n            time.sleep(3); os._exit(0)\n"
        "    except OSError:\n        pass\n",
        FAST,
    )
    for t in threads:
        t.join()
    for i, result in results.items():
        assert result.status == "passed", result
        assert result.stdout.strip() == str(i)
    assert hostile.status in ("passed", "failed")
    _runs_on()


def test_setup_failure_is_an_error_not_a_crash(monkeypatch):
    from salmon_dag.benchmarks import sandbox

    monkeypatch.setattr(sandbox, "_NOFILE", 0)  # the launcher cannot even open /dev/null
    result = run_python("print('hi')\n", FAST)
    assert result.status == "error" and result.returncode is None
    monkeypatch.undo()
    _runs_on()


def test_timing_is_reported():
    start = time.monotonic()
    result = run_python("pass\n", FAST)
    assert 0 <= result.seconds <= time.monotonic() - start + 0.01
