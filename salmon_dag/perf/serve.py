"""``salmon bench serve``: requests/s and latency of ``salmon serve`` with batching against the same
server scoring one request per model call (the naive loop a plain handler would be), at several
concurrencies, measured in one run over real HTTP on loopback. Plain Python: no dagster import."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from pathlib import Path

CONCURRENCY = (1, 8, 32)
# original text: two principles a request is scored under, and replies of a few lengths
PRINCIPLES = [{"text": "The reply answers the question directly."}, {"text": "The reply is brief and plain."}]
REPLIES = ["Blue.", "The sky looks blue because air scatters short wavelengths of sunlight more than long ones.",
           "It depends on the time of day and the weather, but on a clear afternoon it is usually a light blue."]


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
    from salmon_dag.reward_model.checkpoint import load_scorer
    from salmon_dag.serve import Model, ServeLimits, create_app
    from salmon_dag.serve.local import served_here

    scorer = load_scorer(reward_model)
    modes = {"batched": ServeLimits(), "naive": ServeLimits(max_wait_s=0.0, max_batch_tokens=1)}
    results: dict = {}
    log(f"salmon serve on {reward_model}: one-item requests, 2 principles; naive = one request per model call")
    log(f"{'concurrency':>11} {'mode':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for mode, limits in modes.items():
        with served_here(create_app(lambda: Model(scorer, {}, str(reward_model)), limits=limits)) as url:
            import httpx

            while httpx.get(f"{url}/ready").status_code != 200:
                time.sleep(0.05)
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
