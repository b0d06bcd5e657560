"""The server's counters and histograms, in the Prometheus text format (``GET /metrics``).

A handful of series, so they are kept here rather than through a client library: counters by
label set and fixed-bucket histograms, read and written from the event loop only."""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, count in zip(self.buckets, self.counts):
            running += count
            out.append(f'{name}_bucket{{le="{bound:g}"}} {running}')
        out += [f'{name}_bucket{{le="+Inf"}} {self.n}', f"{name}_sum {self.total:.6f}", f"{name}_count {self.n}"]
        return out


@dataclass
class ServeMetrics:
    """What ``salmon serve`` counts: requests by path and status, batches and their sizes (requests
    and sequences per model call), request latency, and requests dropped because their client left."""

    requests: Counter = field(default_factory=Counter)
    batches: int = 0
    cancelled: int = 0
    batch_requests: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    batch_sequences: Histogram = field(default_factory=lambda: Histogram(SIZE_BUCKETS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))

    def request(self, path: str, status: int, seconds: float) -> None:
        self.requests[(path, status)] += 1
        self.latency.observe(seconds)

    def batch(self, requests: int, sequences: int) -> None:
        self.batches += 1
        self.batch_requests.observe(requests)
        self.batch_sequences.observe(sequences)

    def text(self) -> str:
        lines = ["# HELP salmon_serve_requests_total HTTP requests by path and status.",
                 "# TYPE salmon_serve_requests_total counter"]
        lines += [f'salmon_serve_requests_total{{path="{p}",status="{s}"}} {n}' for (p, s), n in sorted(self.requests.items())]
        lines += ["# HELP salmon_serve_batches_total Reward-model calls (each scores one batch of requests).",
                  "# TYPE salmon_serve_batches_total counter", f"salmon_serve_batches_total {self.batches}",
                  "# HELP salmon_serve_cancelled_total Requests dropped unscored because their client disconnected.",
                  "# TYPE salmon_serve_cancelled_total counter", f"salmon_serve_cancelled_total {self.cancelled}",
                  "# HELP salmon_serve_batch_requests Requests per reward-model call.",
                  "# TYPE salmon_serve_batch_requests histogram", *self.batch_requests.lines("salmon_serve_batch_requests"),
                  "# HELP salmon_serve_batch_sequences Sequences per reward-model call.",
                  "# TYPE salmon_serve_batch_sequences histogram", *self.batch_sequences.lines("salmon_serve_batch_sequences"),
                  "# HELP salmon_serve_request_seconds Request latency.",
                  "# TYPE salmon_serve_request_seconds histogram", *self.latency.lines("salmon_serve_request_seconds")]
        return "\n".join(lines) + "\n"
