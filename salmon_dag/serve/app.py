"""``salmon serve``: the instructable reward model over HTTP (a Starlette app, run by uvicorn).

The reward model is loaded once (in the background: ``/ready`` answers 503 until it is) and every
request is scored through the project's one scoring path (:class:`RewardScorer`), with the requests
that arrive together batched into one model call (:mod:`salmon_dag.serve.batcher`).

- ``POST /score``: ``{"items": [{"prompt", "response", "principles"?}], "principles"?, "breakdown"?}``;
  a principle is a name from ``reward_model.yaml`` (``"Concise"``), that name negated
  (``{"name": "Concise", "negated": true}``) or free text (``{"text": "..."}``); an item's own list
  replaces the request's, which replaces the server's default (``salmon serve --principle``).
  Answers ``{"scores": [...]}``, with ``breakdown`` also each named principle alone and negated.
- ``POST /get_reward``: OpenRLHF's remote reward protocol (``--remote_rm_url``): ``{"query": [...],
  "prompts"?: [...], "principles"?: [...]}`` -> ``{"rewards": [...], "scores": [...]}``. A query is
  prompt + response; with ``prompts`` the response is what follows the prompt, else the text after
  the last ``### Assistant:`` (the project's chat template).
- ``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus text).

Safe by default: the CLI binds 127.0.0.1; with a token (from an environment variable) every
endpoint but ``/health`` needs ``Authorization: Bearer <token>``; body, item, text and principle
limits; a bad request gets a 4xx with one line (``{"error": ...}``) and the server goes on; a client
that disconnects before its batch runs costs no model time. No dagster import here.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from salmon_dag.errors import first_line
from salmon_dag.principles import PrincipleText
from salmon_dag.serve.batcher import Batcher
from salmon_dag.serve.metrics import ServeMetrics
from salmon_dag.templates import ASSISTANT_TAG, USER_TAG

TOKEN_ENV = "SALMON_SERVE_TOKEN"


@dataclass(frozen=True)
class ServeLimits:
    max_body_bytes: int = 1 << 20
    max_items: int = 256
    max_text_chars: int = 32_000
    max_principles: int = 32
    max_wait_s: float = 0.002
    max_batch_tokens: int = 32_768


class BadRequest(Exception):
    """A request the server refuses: its status and one line saying why."""

    def __init__(self, status: int, line: str):
        super().__init__(line)
        self.status, self.line = status, line


class _ClientGone(Exception):
    pass


@dataclass(frozen=True)
class Principle:
    """A resolved principle: its label in answers, the text scored, and its negation (named ones)."""

    label: str
    text: str
    negated: str | None = None
    name: str | None = None


@dataclass
class Model:
    """What the server scores with: the scorer (``encode``, ``score_ids``, ``max_len``) and the
    reward-model principles by name."""

    scorer: Any
    principles: dict[str, PrincipleText]
    source: str = ""


def resolve_principle(spec: Any, known: dict[str, PrincipleText], where: str) -> Principle:
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict):
        raise BadRequest(400, f"{where}: a principle is a name, {{'name', 'negated'}} or {{'text'}}, got {type(spec).__name__}")
    if "text" in spec:
        text = spec["text"]
        if not isinstance(text, str) or not text.strip():
            raise BadRequest(400, f"{where}.text: must be a non-empty string")
        return Principle(label=text[:60], text=text.strip())
    name = spec.get("name")
    if name not in known:
        raise BadRequest(400, f"{where}: unknown principle {name!r} (known: {', '.join(known)})")
    p = known[name]
    if spec.get("negated"):
        return Principle(label=f"not {name}", text=p.negative_definition, negated=p.definition, name=name)
    return Principle(label=name, text=p.definition, negated=p.negative_definition, name=name)


def _text(value: Any, where: str, limits: ServeLimits) -> str:
    if not isinstance(value, str):
        raise BadRequest(400, f"{where}: must be a string")
    if len(value) > limits.max_text_chars:
        raise BadRequest(413, f"{where}: {len(value)} characters, more than the server's {limits.max_text_chars}")
    return value


def _principles(specs: Any, known: dict[str, PrincipleText], where: str, limits: ServeLimits) -> list[Principle]:
    if not isinstance(specs, list) or not specs:
        raise BadRequest(400, f"{where}: must be a non-empty list")
    if len(specs) > limits.max_principles:
        raise BadRequest(413, f"{where}: {len(specs)} principles, more than the server's {limits.max_principles}")
    return [resolve_principle(s, known, f"{where}[{i}]") for i, s in enumerate(specs)]


def split_query(query: str, prompt: str | None, where: str) -> tuple[str, str]:
    """(request, response) of an OpenRLHF query: after ``prompt`` when given, else around the last
    ``### Assistant:`` of the project's chat template."""
    if prompt is not None:
        if not query.startswith(prompt):
            raise BadRequest(400, f"{where}: the query does not start with its prompt")
        request, response = prompt, query[len(prompt):]
    else:
        cut = query.rfind(ASSISTANT_TAG)
        if cut < 0:
            raise BadRequest(400, f"{where}: no {ASSISTANT_TAG!r} in the query and no 'prompts' given: "
                                  "cannot tell the request from the response")
        request, response = query[:cut], query[cut + len(ASSISTANT_TAG):]
    user = request.rfind(USER_TAG)
    if user >= 0:
        request = request[user + len(USER_TAG):]
    return request.replace(ASSISTANT_TAG, "").strip(), response.strip()


def create_app(load: Callable[[], Model], default_principles: Sequence[Any] = (), token: str | None = None,
               limits: ServeLimits = ServeLimits()) -> Starlette:
    """The app. ``load`` builds the :class:`Model` (run once, in a thread, at startup);
    ``default_principles``: specs used when a request names none; ``token``: the bearer token
    every endpoint but /health requires (None: none)."""
    metrics = ServeMetrics()
    state: dict[str, Any] = {"model": None, "error": None}

    @asynccontextmanager
    async def lifespan(_app):
        batcher = Batcher(lambda seqs: state["model"].scorer.score_ids(seqs), metrics, limits.max_wait_s,
                          limits.max_batch_tokens)
        batcher.start()
        state["batcher"] = batcher

        async def load_model():
            try:
                state["model"] = await asyncio.to_thread(load)
            except Exception as exc:  # noqa: BLE001 - said by /ready and every request
                state["error"] = first_line(exc, 400)

        loading = asyncio.get_running_loop().create_task(load_model())
        try:
            yield
        finally:
            loading.cancel()
            await batcher.stop()

    def authorized(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise BadRequest(401, "missing or wrong bearer token (Authorization: Bearer <token>)")

    def ready_model() -> Model:
        if state["model"] is None:
            raise BadRequest(503, f"the reward model failed to load: {state['error']}" if state["error"]
                             else "the reward model is still loading")
        return state["model"]

    async def body(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise BadRequest(413, f"request body of {length} bytes, more than the server's {limits.max_body_bytes}")
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limits.max_body_bytes:
                raise BadRequest(413, f"request body over the server's {limits.max_body_bytes} bytes")
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(400, f"request body is not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise BadRequest(400, "request body must be a JSON object")
        return data

    async def scored(request: Request, sequences: list[list[int]]) -> list[float]:
        """The batcher's scores, or _ClientGone when the client disconnects first."""
        work = asyncio.ensure_future(state["batcher"].score(sequences))
        gone = asyncio.ensure_future(_disconnected(request))
        done, _ = await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            gone.cancel()
            return work.result()
        work.cancel()
        raise _ClientGone

    encoding = threading.Lock()  # one tokenizer, used from worker threads: one request at a time

    def encode(model: Model, rows: list[tuple[list[str], str, str]], where: list[str]) -> list[list[int]]:
        out = []
        with encoding:
            for (texts, prompt, response), at in zip(rows, where):
                try:
                    out.append(model.scorer.encode(texts, prompt, response))
                except ValueError as exc:
                    raise BadRequest(400, f"{at}: {exc}") from None
        return out

    def request_principles(data: dict, model: Model) -> list[Principle] | None:
        """The request's ``principles``, else the server's default (None: neither)."""
        if data.get("principles") is not None:
            return _principles(data["principles"], model.principles, "principles", limits)
        if default_principles:
            return _principles(list(default_principles), model.principles, "the server's --principle", limits)
        return None

    def items_of(data: dict, model: Model) -> tuple[list[tuple[str, str, list[Principle]]], bool]:
        items = data.get("items")
        if not isinstance(items, list) or not items:
            raise BadRequest(400, "items: must be a non-empty list of {prompt, response, principles?}")
        if len(items) > limits.max_items:
            raise BadRequest(413, f"items: {len(items)}, more than the server's {limits.max_items}")
        base = request_principles(data, model)
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise BadRequest(400, f"items[{i}]: must be an object")
            prompt = _text(item.get("prompt"), f"items[{i}].prompt", limits)
            response = _text(item.get("response"), f"items[{i}].response", limits)
            own = item.get("principles")
            ps = _principles(own, model.principles, f"items[{i}].principles", limits) if own is not None else base
            if ps is None:
                raise BadRequest(400, f"items[{i}]: no principles (name them in the item or the request, or start "
                                      "the server with --principle)")
            out.append((prompt, response, ps))
        breakdown = data.get("breakdown", False)
        if not isinstance(breakdown, bool):
            raise BadRequest(400, "breakdown: must be true or false")
        return out, breakdown

    async def score_endpoint(request: Request) -> Response:
        authorized(request)
        model = ready_model()
        items, breakdown = items_of(await body(request), model)
        rows, where = [], []
        for i, (prompt, response, ps) in enumerate(items):
            rows.append(([p.text for p in ps], prompt, response))
            where.append(f"items[{i}]")
            if breakdown:
                for p in ps:
                    rows.append(([p.text], prompt, response))
                    where.append(f"items[{i}] principle {p.label!r}")
                    if p.negated is not None:
                        rows.append(([p.negated], prompt, response))
                        where.append(f"items[{i}] principle {p.label!r} negated")
        seqs = await asyncio.to_thread(encode, model, rows, where)
        values = iter(await scored(request, seqs))
        scores, parts = [], []
        for _, _, ps in items:
            scores.append(next(values))
            if breakdown:
                row = []
                for p in ps:
                    alone = next(values)
                    negated = next(values) if p.negated is not None else None
                    row.append({"principle": p.label, "score": alone, "negated_score": negated})
                parts.append(row)
        return JSONResponse({"scores": scores, **({"breakdown": parts} if breakdown else {})})

    async def openrlhf_endpoint(request: Request) -> Response:
        authorized(request)
        model = ready_model()
        data = await body(request)
        queries, prompts = data.get("query"), data.get("prompts")
        if not isinstance(queries, list) or not queries:
            raise BadRequest(400, "query: must be a non-empty list of strings (prompt + response)")
        if len(queries) > limits.max_items:
            raise BadRequest(413, f"query: {len(queries)}, more than the server's {limits.max_items}")
        if prompts is not None and (not isinstance(prompts, list) or len(prompts) != len(queries)):
            raise BadRequest(400, "prompts: must be a list as long as query")
        ps = request_principles(data, model)
        if ps is None:
            raise BadRequest(400, "no principles: send 'principles' or start the server with --principle")
        rows = []
        for i, q in enumerate(queries):
            q = _text(q, f"query[{i}]", limits)
            prompt = _text(prompts[i], f"prompts[{i}]", limits) if prompts is not None else None
            request_text, response = split_query(q, prompt, f"query[{i}]")
            rows.append(([p.text for p in ps], request_text, response))
        seqs = await asyncio.to_thread(encode, model, rows, [f"query[{i}]" for i in range(len(rows))])
        rewards = await scored(request, seqs)
        return JSONResponse({"rewards": rewards, "scores": rewards})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        authorized(request)
        ready_model()
        return JSONResponse({"ready": True, "model": state["model"].source})

    async def metrics_endpoint(request: Request) -> Response:
        authorized(request)
        return PlainTextResponse(metrics.text(), media_type="text/plain; version=0.0.4")

    def handled(endpoint):
        async def run(request: Request) -> Response:
            start = time.perf_counter()
            try:
                response = await endpoint(request)
            except BadRequest as exc:
                response = JSONResponse({"error": exc.line}, status_code=exc.status)
            except _ClientGone:
                response = Response(status_code=499)  # nobody reads it; counted as such
            metrics.request(request.url.path, response.status_code, time.perf_counter() - start)
            return response
        return run

    routes = [Route("/score", handled(score_endpoint), methods=["POST"]),
              Route("/get_reward", handled(openrlhf_endpoint), methods=["POST"]),
              Route("/health", handled(health), methods=["GET"]),
              Route("/ready", handled(ready), methods=["GET"]),
              Route("/metrics", handled(metrics_endpoint), methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
