"""The weaker network block where no network namespace is allowed (salmon_dag.benchmarks.sandbox):
copied into the sandbox's work dir and run there as ``__main__``, it replaces ``socket.socket`` &
co. (ctypes or a subprocess could get around it), then runs ``main.py`` as ``__main__``. Importing
this module runs nothing."""

if __name__ == "__main__":
    import _socket, socket
    def _no_network(*args, **kwargs):
        raise OSError(1, "network access is disabled in the sandbox")
    for _mod in (_socket, socket):
        for _name in ("socket", "socketpair", "fromfd", "create_connection", "create_server",
                      "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            if hasattr(_mod, _name):
                setattr(_mod, _name, _no_network)
    del _mod, _name, _socket, socket
    import runpy
    runpy.run_path("main.py", run_name="__main__")
