"""Requests that arrive together are scored in one reward-model call.

The first request of a batch waits at most ``max_wait_s`` for others; a batch holds at most
``max_batch_tokens`` tokens (a single larger request still runs, alone). One model call runs at a
time, in a worker thread, so the event loop keeps accepting requests meanwhile. A request whose
client has gone (its future cancelled) before its batch starts is dropped unscored."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from salmon_dag.serve.metrics import ServeMetrics

ScoreIds = Callable[[list[Sequence[int]]], list[float]]


@dataclass
class _Pending:
    sequences: list[Sequence[int]]
    future: asyncio.Future

    @property
    def tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


class Batcher:
    def __init__(self, score_ids: ScoreIds, metrics: ServeMetrics, max_wait_s: float = 0.01,
                 max_batch_tokens: int = 32768):
        self.score_ids, self.metrics = score_ids, metrics
        self.max_wait_s, self.max_batch_tokens = max_wait_s, max_batch_tokens
        self._queue: deque[_Pending] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def score(self, sequences: list[Sequence[int]]) -> list[float]:
        """Scores of one request's token sequences, in order."""
        if not sequences:
            return []
        pending = _Pending(list(sequences), asyncio.get_running_loop().create_future())
        self._queue.append(pending)
        self._arrived.set()
        return await pending.future

    def _take(self) -> list[_Pending]:
        batch, tokens = [], 0
        while self._queue:
            head = self._queue[0]
            if head.future.done():  # its client left
                self._queue.popleft()
                self.metrics.cancelled += 1
                continue
            if batch and tokens + head.tokens > self.max_batch_tokens:
                break
            batch.append(self._queue.popleft())
            tokens += head.tokens
        return batch

    async def _run(self) -> None:
        while True:
            await self._arrived.wait()
            if sum(p.tokens for p in self._queue) < self.max_batch_tokens:
                await asyncio.sleep(self.max_wait_s)  # let the requests sent together arrive
            batch = self._take()
            if not self._queue:
                self._arrived.clear()
            if not batch:
                continue
            flat = [s for p in batch for s in p.sequences]
            try:
                scores = await asyncio.to_thread(self.score_ids, flat)
            except Exception as exc:  # noqa: BLE001 - every request of the batch gets the error
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.metrics.batch(len(batch), len(flat))
            start = 0
            for p in batch:
                if not p.future.done():
                    p.future.set_result(scores[start:start + len(p.sequences)])
                start += len(p.sequences)
