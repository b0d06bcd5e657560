"""A running ``salmon serve`` as reward functions of TRL's ``GRPOTrainer`` / ``RLOOTrainer``.

::

    funcs, weights = salmon_reward_funcs("http://127.0.0.1:8000", ["Concise", "Harmless"])
    GRPOTrainer(model=..., reward_funcs=funcs, args=GRPOConfig(..., reward_weights=weights), ...)

The first function scores each completion under all the principles together (SALMON's reward,
weight 1); with ``parts`` one more per principle scores it under that principle alone with weight
0, so TRL logs it as its own column (``rewards/salmon_<principle>/mean``) without changing the
reward. Prompts and completions may be plain text or conversations (the last user and assistant
messages are scored). The token comes from ``$SALMON_SERVE_TOKEN`` unless given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

from salmon_dag.serve.app import TOKEN_ENV


def _text(value: Any, role: str) -> str:
    if isinstance(value, str):
        return value
    messages = [m for m in value if m.get("role") == role]  # a conversation: its last message of that role
    return str(messages[-1]["content"]) if messages else ""


def _name(spec: Any) -> str:
    label = spec if isinstance(spec, str) else spec.get("name") or spec.get("text", "principle")[:24]
    if isinstance(spec, dict) and spec.get("negated"):
        label = f"not {label}"
    return re.sub(r"\W+", "_", label).strip("_").lower()


def salmon_reward_funcs(url: str, principles: Sequence[Any], token: str | None = None, parts: bool = True,
                        timeout: float = 300.0) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """(reward functions, their weights) for TRL; ``principles`` as ``POST /score`` takes them."""
    import httpx

    token = token if token is not None else os.environ.get(TOKEN_ENV)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def scorer(specs: list[Any], name: str) -> Callable[..., list[float]]:
        def reward(prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
            items = [{"prompt": _text(p, "user"), "response": _text(c, "assistant"), "principles": specs}
                     for p, c in zip(prompts, completions)]
            reply = client.post("/score", json={"items": items})
            if reply.status_code != 200:
                raise RuntimeError(f"salmon serve at {url}: {reply.status_code} {reply.text[:300]}")
            return reply.json()["scores"]

        reward.__name__ = name  # TRL names the reward's log column after it
        return reward

    funcs = [scorer(list(principles), "salmon")]
    weights = [1.0]
    if parts:
        for spec in principles:
            funcs.append(scorer([spec], f"salmon_{_name(spec)}"))
            weights.append(0.0)
    return funcs, weights


# verl: custom_reward_function.path=<this file> custom_reward_function.name=verl_compute_score, with
# SALMON_SERVE_URL and SALMON_SERVE_PRINCIPLES (comma-separated names) in the workers' environment
URL_ENV, PRINCIPLES_ENV = "SALMON_SERVE_URL", "SALMON_SERVE_PRINCIPLES"


def verl_compute_score(data_source: Any, solution_str: str, ground_truth: Any = None, extra_info: dict | None = None,
                       **_: Any) -> float:
    """verl's custom reward function signature: the reply's score under the principles named in
    ``$SALMON_SERVE_PRINCIPLES``; the request is ``extra_info["question"]`` (or ``["prompt"]``)."""
    import httpx

    url, names = os.environ.get(URL_ENV), [n.strip() for n in os.environ.get(PRINCIPLES_ENV, "").split(",") if n.strip()]
    if not url or not names:
        raise RuntimeError(f"verl_compute_score needs ${URL_ENV} and ${PRINCIPLES_ENV} (comma-separated principle names)")
    info = extra_info or {}
    prompt = _text(info.get("question") or info.get("prompt") or "", "user")
    token = os.environ.get(TOKEN_ENV)
    reply = httpx.post(f"{url.rstrip('/')}/score", timeout=300, headers={"Authorization": f"Bearer {token}"} if token else {},
                       json={"items": [{"prompt": prompt, "response": solution_str, "principles": names}]})
    if reply.status_code != 200:
        raise RuntimeError(f"salmon serve at {url}: {reply.status_code} {reply.text[:300]}")
    return float(reply.json()["scores"][0])
