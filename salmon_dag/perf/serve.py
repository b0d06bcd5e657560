"""``salmon bench serve``: requests/s and latency of ``salmon serve`` with batching against the same
server scoring one request per model call (the naive loop a plain handler would be), at several
concurrencies, measured in one run over real HTTP on loopback. Plain Python: no dagster import."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CONCURRENCY = (1, 8, 32)
# original text: three principles a request is scored under (the length of reward_model.yaml's, as
# many as RL draws), and replies of a few lengths
PRINCIPLES = [
    {"text": "The AI answers the question that was asked, directly and correctly, and says plainly when "
             "it is unsure instead of guessing or padding the answer with unrelated detail."},
    {"text": "The AI keeps the reply short and plain: no preamble, no repeated points, no closing "
             "pleasantries, only the sentences the user needs in order to act on it."},
    {"text": "The AI stays safe and respectful: it gives no advice that could cause harm, and it "
             "treats the user and any people mentioned without mockery or prejudice."},
]
REPLIES = ["Blue.", "The sky looks blue because air scatters short wavelengths of sunlight more than long ones.",
           "It depends on the time of day and the weather, but on a clear afternoon it is usually a light blue."]


def _serve(reward_model: str, max_wait_s: float, max_batch_tokens: int, port: int) -> None:
    """A server process: ``salmon serve``'s app on ``reward_model``."""
    import uvicorn
    from transformers.utils import logging as hf_logging

    from salmon_dag.reward_model.checkpoint import load_scorer
    from salmon_dag.serve import Model, ServeLimits, create_app

    hf_logging.disable_progress_bar()
    limits = ServeLimits(max_wait_s=max_wait_s, max_batch_tokens=max_batch_tokens)
    app = create_app(lambda: Model(load_scorer(reward_model), {}, reward_model), limits=limits)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def _server_process(reward_model: Path, limits) -> Iterator[str]:
    import socket
    import subprocess
    import sys

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (f"from salmon_dag.perf.serve import _serve; _serve({str(reward_model)!r}, {limits.max_wait_s!r}, "
            f"{limits.max_batch_tokens!r}, {port})")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    try:
        while True:
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the benchmark's server on {url} did not become ready: {proc.stderr.read()[-500:]}"
                                   if proc.poll() is not None else f"the benchmark's server on {url} did not become ready")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


async def _load(url: str, concurrency: int, requests: int) -> tuple[float, list[float]]:
    """(requests per second, each request's latency) for ``requests`` one-item requests sent by
    ``concurrency`` clients at once."""
    import httpx

    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=concurrency)) as client:
        async def one(i: int) -> None:
            body = {"items": [{"prompt": f"Question {i}: what colour is the sky?", "response": REPLIES[i % len(REPLIES)]}],
                    "principles": PRINCIPLES}
            async with gate:
                start = time.perf_counter()
                reply = await client.post(f"{url}/score", json=body)
                latencies.append(time.perf_counter() - start)
                reply.raise_for_status()

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return requests / (time.perf_counter() - start), latencies


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def bench_serve(reward_model: Path, log: Callable[[str], None] = print, requests_per_client: int = 4) -> dict:
    """Measure both servers at each of :data:`CONCURRENCY`; log a table and the ratio at the
    highest concurrency; return {(mode, concurrency): (rps, p50, p99)}."""
    from salmon_dag.serve import ServeLimits

    # salmon serve against the same server making one model call per request; each server in a
    # process of its own, as clients are in theirs
    modes = {"batched": ServeLimits(), "naive": ServeLimits(max_wait_s=0.0, max_batch_tokens=1)}
    results: dict = {}
    log(f"salmon serve on {reward_model}: one-item requests, {len(PRINCIPLES)} principles; naive = one request "
        "per model call")
    log(f"{'concurrency':>11} {'mode':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for mode, limits in modes.items():
        with _server_process(reward_model, limits) as url:
            asyncio.run(_load(url, 4, 8))  # warm up
            for c in CONCURRENCY:
                n = max(16, c * requests_per_client)
                rps, lat = asyncio.run(_load(url, c, n))
                results[(mode, c)] = (rps, _percentile(lat, 50) * 1000, _percentile(lat, 99) * 1000)
                log(f"{c:>11} {mode:>8} {rps:>8.1f} {results[(mode, c)][1]:>8.1f} {results[(mode, c)][2]:>8.1f}")
    top = CONCURRENCY[-1]
    ratio = results[("batched", top)][0] / results[("naive", top)][0]
    log(f"batched / naive throughput at concurrency {top}: {ratio:.2f}x "
        f"({results[('batched', top)][0]:.1f} vs {results[('naive', top)][0]:.1f} requests/s)")
    return results
