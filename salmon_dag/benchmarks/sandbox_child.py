"""The sandbox's child-side code (salmon_dag.benchmarks.sandbox): what runs in the confined
process tree, before and instead of the untrusted code.

Run as a script by the real (non-venv) interpreter with ``-I -S`` (no site-packages, no
environment), so it uses the standard library only:

* ``launch CFG``: runs as the caller's user (root or not), reads the code on stdin, confines itself
  (namespaces, read-only mounts, a tmpfs work dir, limits, a dropped uid), then execs the sandboxed
  interpreter. On failure it writes the reason to the status fd (close-on-exec, so a successful
  exec leaves it empty) and exits 125.
* ``reap UID GID``: kills every process of a uid: ``kill(-1)`` as that uid signals exactly the
  processes it owns, and the kernel does it under the tasklist lock, so a fork bomb cannot outrun it.
* ``probe``: prints which isolation layers this machine allows; each probe runs in a forked child,
  so whatever it changes dies with it.

Importing this module runs nothing.
"""

import ctypes
import json
import os
import resource
import sys


def launch(cfg_json: str) -> None:
    cfg = json.loads(cfg_json)
    status_fd = cfg["status_fd"]
    os.set_inheritable(status_fd, False)

    def fail(msg):
        try:
            os.write(status_fd, msg.encode("utf-8", "replace"))
        finally:
            os._exit(125)

    try:
        code = sys.stdin.buffer.read()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

        def mount(src, target, fstype, flags, data=None):
            enc = lambda s: None if s is None else s.encode()
            if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
                e = ctypes.get_errno()
                raise OSError(e, "mount %r on %r: %s" % (src, target, os.strerror(e)))

        CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWIPC = 0x00020000, 0x40000000, 0x08000000
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
        MS_NOATIME, MS_NODIRATIME, MS_REMOUNT, MS_BIND = 1024, 2048, 32, 4096
        MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
        KEEP = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": MS_NOATIME,
                "nodiratime": MS_NODIRATIME, "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}

        netns = mountns = False
        if cfg["drop"]:
            for flags, net, mnt in ((CLONE_NEWNS | CLONE_NEWNET, True, True), (CLONE_NEWNET, True, False),
                                    (CLONE_NEWNS, False, True)):
                if libc.unshare(flags) == 0:
                    netns, mountns = net, mnt
                    break
            libc.unshare(CLONE_NEWIPC)  # best effort: private SysV IPC
        elif cfg["try_userns"]:
            # Unprivileged: a user namespace lets us take a network namespace of our own.
            if libc.unshare(0x10000000 | CLONE_NEWNET) == 0:
                netns = True
        if cfg["require_netns"] and not netns:
            fail("network namespace unavailable")

        work, pyroot, uid, gid = cfg["work"], cfg["pyroot"], cfg["uid"], cfg["gid"]
        exe = cfg["exe"]
        env = {"PATH": cfg["path"], "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        if mountns:
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            mount("tmpfs", work, "tmpfs", MS_NOSUID | MS_NODEV,
                  "size=%d,nr_inodes=%d,mode=0700,uid=%d,gid=%d" % (cfg["tmpfs_bytes"], cfg["tmpfs_inodes"], uid, gid))
            mount(cfg["prefix"], pyroot, None, MS_BIND | MS_REC)
            exe = os.path.join(pyroot, cfg["exe_rel"])
            env["LD_LIBRARY_PATH"] = os.path.join(pyroot, "lib")
            with open("/proc/self/mountinfo") as f:
                mounts = [line.split() for line in f]
            for fields in mounts:
                point = fields[4].encode().decode("unicode_escape")  # octal escapes (\040) in paths
                if point == work:
                    continue
                flags = MS_BIND | MS_REMOUNT | MS_RDONLY
                for opt in fields[5].split(","):
                    flags |= KEEP.get(opt, 0)
                try:
                    mount(None, point, None, flags)
                except OSError as e:
                    # An over-mounted point is remounted through its top mount; only a real failure
                    # on a visible mount is fatal.
                    if e.errno not in (2, 22):  # ENOENT, EINVAL
                        fail("cannot make %s read-only: %s" % (point, e))
        main = os.path.join(work, "main.py")
        fd = os.open(main, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(code)
        argv = [exe, "-I", "-S", "-B", "main.py"]
        if not netns:
            wrapper = os.path.join(work, "_sandbox_run.py")
            with open(wrapper, "w") as f:
                f.write(cfg["nonet_wrapper"])
            argv = [exe, "-I", "-S", "-B", "_sandbox_run.py"]
        if cfg["drop"]:
            os.chown(main, uid, gid)

        # A PID namespace: the code's first process is its init, and when it ends the kernel kills
        # and reaps everything it left behind at once (even children that setsid() away). This
        # launcher stays outside as the waiter and passes the exit status on.
        pidns = cfg["drop"] and libc.unshare(0x20000000) == 0  # CLONE_NEWPID
        if pidns:
            child = os.fork()
            if child:
                os.close(status_fd)
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
                _, st = os.waitpid(child, 0)
                if os.WIFSIGNALED(st):
                    import signal
                    sig = os.WTERMSIG(st)
                    signal.signal(sig, signal.SIG_DFL)
                    os.kill(os.getpid(), sig)
                    os._exit(128 + sig)
                os._exit(os.waitstatus_to_exitcode(st))
            if mountns:
                try:  # a /proc showing only the sandbox's own processes
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                except OSError:
                    pass
        mb = cfg["memory_bytes"]
        resource.setrlimit(resource.RLIMIT_AS, (mb, mb))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"] + 1))
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg["nofile"], cfg["nofile"]))
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize"], cfg["fsize"]))
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: no setuid escalation via exec
            fail("prctl(PR_SET_NO_NEW_PRIVS) failed")
        if cfg["drop"]:
            try:
                os.setgroups([])
                os.setresgid(gid, gid, gid)
                os.setresuid(uid, uid, uid)
            except OSError as e:
                fail("cannot drop privileges to uid %d (refusing to run as root): %s" % (uid, e))
            if os.getuid() == 0 or os.geteuid() == 0:
                fail("still root after dropping privileges; refusing to run")
        libc.prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL (after setuid, which clears it)
        os.chdir(work)
        devnull = os.open("/dev/null", os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.execve(exe, argv, env)
    except SystemExit:
        raise
    except BaseException as e:
        fail("sandbox setup failed: %s: %s" % (type(e).__name__, e))


def reap(uid: int, gid: int) -> None:
    u, g = uid, gid
    os.setgroups([]); os.setresgid(g, g, g); os.setresuid(u, u, u)
    try:
        os.kill(-1, 9)
    except ProcessLookupError:
        pass


def probe() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    def probe(fn):
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if fn() else 1)
            except BaseException:
                os._exit(1)
        return os.waitpid(pid, 0)[1] == 0
    def drop():
        os.setgroups([]); os.setresgid(61999, 61999, 61999); os.setresuid(61999, 61999, 61999)
        return os.getuid() == 61999
    print(json.dumps({
        "network_namespace": probe(lambda: libc.unshare(0x40000000) == 0),
        "mount_namespace": probe(lambda: libc.unshare(0x00020000) == 0),
        "user_namespace": probe(lambda: libc.unshare(0x10000000 | 0x40000000) == 0),
        "uid_drop": probe(drop),
    }))


def main(argv: list[str]) -> None:
    command, args = argv[1], argv[2:]
    if command == "launch":
        launch(*args)
    elif command == "reap":
        reap(int(args[0]), int(args[1]))
    elif command == "probe":
        probe()
    else:
        sys.exit(f"sandbox_child: unknown command {command!r}")


if __name__ == "__main__":
    main(sys.argv)
