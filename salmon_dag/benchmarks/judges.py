"""The judges of the open-ended benchmarks (MT-Bench ratings, pairwise win rates).

A *text judge* reads a grading request (salmon_dag.templates.rating_request / pairwise_request)
and writes a verdict that the benchmark parses: an LLM behind our engine (:class:`EngineJudge`) or
an OpenAI-compatible chat-completions endpoint (:class:`OpenAIJudge`). When no judge LLM is
configured, :class:`RewardModelJudge` scores answers with the instructable reward model under the
evaluation principles: a weaker proxy (a score, not a reading of the answer), documented as such.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from salmon_dag.config import BenchmarkJudgeConfig
from salmon_dag.engine.base import Engine, SamplingParams
from salmon_dag.templates import format_chat_prompt


class JudgeError(RuntimeError):
    """A judge that cannot be set up or reached."""


# a grading request: the user message, or (system prompt, user message) as FastChat's prompts are
Request = str | tuple[str, str]


def _parts(request: Request) -> tuple[str | None, str]:
    return request if isinstance(request, tuple) else (None, request)


class TextJudge(Protocol):
    name: str

    def complete(self, requests: Sequence[Request]) -> list[str]:
        """The judge's output text for each grading request, in order."""
        ...


@dataclass
class EngineJudge:
    """An LLM judge loaded through our engine; greedy, in our chat format."""

    engine: Engine
    max_new_tokens: int = 512

    @property
    def name(self) -> str:
        return f"engine:{self.engine.model_id}"

    def complete(self, requests: Sequence[Request]) -> list[str]:
        params = SamplingParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        # our chat format has no system turn: a system prompt leads the user message
        texts = ["\n\n".join(p for p in _parts(r) if p) for r in requests]
        outs = self.engine.generate([format_chat_prompt(t) for t in texts], params)
        return [o[0].text for o in outs]


@dataclass
class OpenAIJudge:
    """An OpenAI-compatible ``/chat/completions`` endpoint (vLLM's server, OpenAI, ...), called with
    ``concurrency`` requests in flight, temperature 0, and retries with backoff on 429 / 5xx /
    connection errors. Persistent failure is a :class:`JudgeError`, never a silent empty verdict."""

    base_url: str
    model: str
    api_key: str | None = None
    max_new_tokens: int = 512
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 3

    @property
    def name(self) -> str:
        return f"openai:{self.model}"

    @classmethod
    def from_env(cls, cfg: BenchmarkJudgeConfig) -> "OpenAIJudge":
        base_url = os.environ.get(cfg.base_url_env)
        model = cfg.model or os.environ.get(cfg.model_env)
        if not base_url:
            raise JudgeError(f"benchmarks.judge.kind is 'openai' but ${cfg.base_url_env} (the endpoint's base URL) is not set")
        if not model:
            raise JudgeError(f"benchmarks.judge.kind is 'openai' but neither benchmarks.judge.model nor ${cfg.model_env} is set")
        return cls(base_url.rstrip("/"), model, os.environ.get(cfg.api_key_env), cfg.max_new_tokens,
                   cfg.concurrency, cfg.timeout_s, cfg.retries)

    def _post(self, request: Request) -> str:
        system, user = _parts(request)
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        body = json.dumps({"model": self.model, "messages": messages,
                           "temperature": 0, "max_tokens": self.max_new_tokens}).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        url = f"{self.base_url}/chat/completions"
        for attempt in range(self.retries + 1):
            try:
                req = urllib.request.Request(url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    payload = json.loads(resp.read().decode())
                return payload["choices"][0]["message"]["content"] or ""
            except urllib.error.HTTPError as exc:
                retry = exc.code == 429 or exc.code >= 500
                error = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                retry, error = True, str(getattr(exc, "reason", exc))
            except (KeyError, IndexError, json.JSONDecodeError) as exc:
                retry, error = False, f"unexpected response ({exc!r})"
            if not retry or attempt == self.retries:
                raise JudgeError(f"judge endpoint {url}: {error}")
            time.sleep(min(2.0 ** attempt, 30.0))
        raise AssertionError("unreachable")

    def complete(self, requests: Sequence[Request]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._post, requests))


@dataclass
class RewardModelJudge:
    """The instructable RM as a proxy judge: one score per (request, answer) under ``principles``."""

    scorer: object  # salmon_dag.reward_model.scoring.RewardScorer
    principles: tuple[str, ...]  # the evaluation principles' definitions

    name: str = "reward_model"

    def score(self, requests: Sequence[str], answers: Sequence[str]) -> list[float]:
        return self.scorer.score(list(requests), list(answers), list(self.principles))
