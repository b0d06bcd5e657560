"""`salmon score` through a running `salmon serve`: the server announces itself in its warehouse
(``<warehouse>/.serve.json``: URL and process) while it runs, and a client of the same warehouse
finds it there, so a single score costs an HTTP call instead of loading torch and the model."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from salmon_dag.serve.app import TOKEN_ENV
from salmon_dag.warehouse import atomic_path

SERVE_FILE = ".serve.json"


@contextmanager
def announce(warehouse, url: str) -> Iterator[None]:
    """Name this server in ``warehouse`` while the block runs."""
    path = Path(warehouse.root) / SERVE_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), "host": socket.gethostname()}), encoding="utf-8")
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
                path.unlink()
        except (OSError, ValueError):
            pass


def running_server(warehouse) -> str | None:
    """The URL of the live server announced in ``warehouse`` (this machine, process alive, /health
    answering), or None."""
    import httpx

    try:
        data = json.loads((Path(warehouse.root) / SERVE_FILE).read_text(encoding="utf-8"))
        if data.get("host") != socket.gethostname():
            return None
        os.kill(int(data["pid"]), 0)
        if httpx.get(f"{data['url']}/health", timeout=0.5).status_code == 200:
            return str(data["url"])
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        pass
    return None


def _post(url: str, body: dict):
    import httpx

    token = os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return httpx.post(f"{url}/score", json=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        raise OSError(f"salmon serve at {url}: {exc}") from None


def score_remote(url: str, prompt: str, response: str, together: list[dict[str, Any]],
                 names: list[str]) -> tuple[float | None, list[tuple[str, float, float]]]:
    """(score under ``together``, [(name, score alone, score negated)] for ``names``) from the
    server at ``url``; the total is None when those principles do not fit the model's length."""
    def item(principles: list) -> dict:
        return {"prompt": prompt, "response": response, "principles": principles}

    each = [item([n]) for n in names] + [item([{"name": n, "negated": True}]) for n in names]
    for with_total in (True, False):
        reply = _post(url, {"items": ([item(together)] if with_total else []) + each})
        if reply.status_code == 200:
            scores = reply.json()["scores"]
            total = scores.pop(0) if with_total else None
            return total, [(n, scores[i], scores[len(names) + i]) for i, n in enumerate(names)]
        error = reply.json().get("error", reply.text) if reply.headers.get("content-type", "").startswith(
            "application/json") else reply.text
        if not (with_total and reply.status_code == 400 and error.startswith("items[0]:")):
            raise ValueError(f"salmon serve at {url}: {reply.status_code} {error}")
    raise AssertionError("unreachable")
