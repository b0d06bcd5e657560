"""`salmon serve` (salmon_dag.serve): the HTTP protocol on a stand-in scorer served by uvicorn in a
thread (principle forms, OpenRLHF's request, 4xx lines, batching, readiness, a client that leaves),
and, marked slow, the real command on the shared project: its scores are RewardScorer's."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from projects import free_port
from salmon_dag.principles import PrincipleText
from salmon_dag.serve import Model, ServeLimits, create_app, split_query
from salmon_dag.serve.local import served_here as served

KNOWN = {"Concise": PrincipleText("Concise", "The reply is short.", "The reply is long."),
         "Honest": PrincipleText("Honest", "The reply is true.", "The reply is false.")}


class Scorer:
    """Scores a sequence by the sum of its ids; ids encode the texts' lengths."""

    max_len = 64

    def __init__(self, delay: float = 0.0):
        self.calls: list[int] = []
        self.delay = delay

    def encode(self, texts, prompt, response):
        if "overlong" in prompt:
            raise ValueError("reward_model.max_seq_len 64 is too small: the principles and cue alone take 99 tokens")
        return [len(t) for t in texts] + [len(prompt), len(response)]

    def score_ids(self, seqs):
        self.calls.append(len(seqs))
        time.sleep(self.delay)
        return [float(sum(s)) for s in seqs]


def expected(texts, prompt, response):
    return float(sum(len(t) for t in texts) + len(prompt) + len(response))


def ready(url: str, headers=None) -> None:
    deadline = time.monotonic() + 20
    while httpx.get(f"{url}/ready", headers=headers).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_scores_under_named_negated_and_free_text_principles_with_the_breakdown():
    scorer = Scorer()
    with served(create_app(lambda: Model(scorer, KNOWN), default_principles=["Honest"])) as url:
        ready(url)
        items = [{"prompt": "Hi?", "response": "Hello.", "principles": ["Concise", {"name": "Honest", "negated": True}]},
                 {"prompt": "Why?", "response": "Because.", "principles": [{"text": "The reply rhymes."}]},
                 {"prompt": "Who?", "response": "Me."}]  # the server's default
        got = httpx.post(f"{url}/score", json={"items": items, "breakdown": True}).json()
        assert got["scores"] == [expected(["The reply is short.", "The reply is false."], "Hi?", "Hello."),
                                 expected(["The reply rhymes."], "Why?", "Because."),
                                 expected(["The reply is true."], "Who?", "Me.")]
        first = got["breakdown"][0]
        assert first[0] == {"principle": "Concise", "score": expected(["The reply is short."], "Hi?", "Hello."),
                            "negated_score": expected(["The reply is long."], "Hi?", "Hello.")}
        assert first[1]["principle"] == "not Honest" and got["breakdown"][1][0]["negated_score"] is None
        # a request's list replaces the default
        got = httpx.post(f"{url}/score", json={"items": [{"prompt": "a", "response": "b"}], "principles": ["Concise"]})
        assert got.json() == {"scores": [expected(["The reply is short."], "a", "b")]}


def test_openrlhf_requests_with_and_without_prompts():
    scorer = Scorer()
    with served(create_app(lambda: Model(scorer, KNOWN), default_principles=["Concise"])) as url:
        ready(url)
        prompt = "### User: Name a colour.\n\n### Assistant:"
        query = prompt + " Blue."
        with_prompts = httpx.post(f"{url}/get_reward", json={"query": [query], "prompts": [prompt], "labels": [""]}).json()
        bare = httpx.post(f"{url}/get_reward", json={"query": [query]}).json()
        want = expected(["The reply is short."], "Name a colour.", "Blue.")
        assert with_prompts == bare == {"rewards": [want], "scores": [want]}
        named = httpx.post(f"{url}/get_reward", json={"query": [query], "principles": ["Honest"]}).json()
        assert named["rewards"] == [expected(["The reply is true."], "Name a colour.", "Blue.")]
    assert split_query("### User: Hi there\n\n### Assistant: Hello.", None, "q") == ("Hi there", "Hello.")
    with pytest.raises(Exception, match="cannot tell the request from the response"):
        split_query("no template here", None, "query[0]")


def test_bad_requests_get_a_one_line_4xx_and_the_next_request_succeeds():
    scorer = Scorer()
    limits = ServeLimits(max_body_bytes=4096, max_text_chars=200, max_items=4)
    app = create_app(lambda: Model(scorer, KNOWN), token="s3cret", limits=limits)
    auth = {"Authorization": "Bearer s3cret"}
    good = {"items": [{"prompt": "a", "response": "b", "principles": ["Concise"]}]}
    bad = [
        (dict(content=b"{not json", headers=auth), 400, "not JSON"),
        (dict(json={"items": [{"prompt": "a", "response": "b", "principles": ["Kind"]}]}, headers=auth), 400,
         "unknown principle 'Kind'"),
        (dict(json={"items": [{"prompt": "a" * 201, "response": "b", "principles": ["Concise"]}]}, headers=auth), 413,
         "items[0].prompt: 201 characters"),
        (dict(json={"items": [good["items"][0]] * 5}, headers=auth), 413, "items: 5"),
        (dict(content=b"x" * 5000, headers=auth), 413, "request body"),
        (dict(json={"items": [{"prompt": "overlong", "response": "b", "principles": ["Concise"]}]}, headers=auth), 400,
         "items[0]: reward_model.max_seq_len"),
        (dict(json={"items": [{"prompt": "a", "response": "b"}]}, headers=auth), 400, "no principles"),
        (dict(json=good, headers={"Authorization": "Bearer wrong"}), 401, "bearer token"),
        (dict(json=good), 401, "bearer token"),
    ]
    with served(app) as url:
        assert httpx.get(f"{url}/health").status_code == 200  # open without the token
        ready(url, auth)
        for kwargs, status, words in bad:
            got = httpx.post(f"{url}/score", **kwargs)
            assert got.status_code == status and words in got.json()["error"], (words, got.text)
            assert "\n" not in got.json()["error"]
            assert httpx.post(f"{url}/score", json=good, headers=auth).status_code == 200
        assert httpx.get(f"{url}/metrics").status_code == 401


def test_requests_sent_together_share_a_model_call():
    scorer = Scorer(delay=0.05)
    app = create_app(lambda: Model(scorer, KNOWN), default_principles=["Concise"], limits=ServeLimits(max_wait_s=0.05))

    async def burst(url: str) -> list[float]:
        async with httpx.AsyncClient() as client:
            replies = await asyncio.gather(*(client.post(f"{url}/score", json={"items": [
                {"prompt": f"q{i}", "response": "r" * i}]}) for i in range(16)))
        return [r.json()["scores"][0] for r in replies]

    with served(app) as url:
        ready(url)
        scores = asyncio.run(burst(url))
        assert scores == [expected(["The reply is short."], f"q{i}", "r" * i) for i in range(16)]
        assert len(scorer.calls) < 16 and sum(scorer.calls) == 16
        text = httpx.get(f"{url}/metrics").text
    batches = int(next(line.split()[-1] for line in text.splitlines() if line.startswith("salmon_serve_batches_total")))
    assert batches == len(scorer.calls)
    assert 'salmon_serve_requests_total{path="/score",status="200"} 16' in text


def test_ready_says_loading_until_the_model_is_loaded():
    loaded = threading.Event()

    def load():
        loaded.wait(10)
        return Model(Scorer(), KNOWN)

    with served(create_app(load, default_principles=["Concise"])) as url:
        assert httpx.get(f"{url}/health").status_code == 200
        got = httpx.get(f"{url}/ready")
        assert got.status_code == 503 and "still loading" in got.json()["error"]
        assert httpx.post(f"{url}/score", json={"items": [{"prompt": "a", "response": "b"}]}).status_code == 503
        loaded.set()
        ready(url)


def test_a_client_that_leaves_before_its_batch_costs_no_model_time():
    scorer = Scorer(delay=0.6)
    with served(create_app(lambda: Model(scorer, KNOWN), default_principles=["Concise"])) as url:
        ready(url)

        async def run() -> None:
            async with httpx.AsyncClient() as client:
                busy = asyncio.ensure_future(client.post(f"{url}/score", json={"items": [{"prompt": "a", "response": "b"}]}))
                await asyncio.sleep(0.2)  # the model is busy with the first request
                async with httpx.AsyncClient(timeout=0.1) as impatient:
                    with pytest.raises(httpx.TimeoutException):
                        await impatient.post(f"{url}/score", json={"items": [{"prompt": "left", "response": "early"}]})
                assert (await busy).status_code == 200

        asyncio.run(run())
        time.sleep(0.8)
        text = httpx.get(f"{url}/metrics").text
    assert scorer.calls == [1]  # the second request never reached the model
    assert "salmon_serve_cancelled_total 1" in text


@pytest.mark.slow
def test_salmon_serve_scores_like_the_reward_scorer(project):
    """The real command on the shared project's reward model: /score equals RewardScorer's scores
    for the same inputs, an OpenRLHF-shaped request works, and a wrong token is refused."""
    import os
    import signal
    import subprocess
    import sys

    from salmon_dag.principles import load_principles, principle_texts
    from salmon_dag.reward_model.checkpoint import load_scorer, warehouse_checkpoint
    from salmon_dag.warehouse import Warehouse

    root, env = project
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "assets_defs.cli", "serve", "--port", str(port), "--principle", "Concise"],
                            env={**env, "SALMON_SERVE_TOKEN": "t0k"}, cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer t0k"}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/ready", headers=auth).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else ""
            time.sleep(0.2)
        items = [{"prompt": "Name a colour.", "response": "Blue."},
                 {"prompt": "What is two plus two?", "response": "Four, because two and two make four.",
                  "principles": ["Concise", {"name": "Concise", "negated": True}]}]
        got = httpx.post(f"{url}/score", json={"items": items}, headers=auth).json()["scores"]
        reward = httpx.post(f"{url}/get_reward", headers=auth,
                            json={"query": ["### User: Name a colour.\n\n### Assistant: Blue."]}).json()["rewards"]
        assert httpx.post(f"{url}/score", json={"items": items}).status_code == 401
        # salmon score finds the server through the warehouse and asks it (no model load of its own)
        served = json.loads(subprocess.run(
            [sys.executable, "-m", "assets_defs.cli", "score", "--prompt", "Name a colour.", "--response", "Blue.",
             "--principle", "Concise", "--format", "json"], env={**env, "SALMON_SERVE_TOKEN": "t0k"}, cwd=root,
            capture_output=True, text=True, check=True).stdout)
        assert (root / "warehouse" / ".serve.json").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert not (root / "warehouse" / ".serve.json").exists()  # a stopped server is no longer announced
    here = json.loads(subprocess.run(
        [sys.executable, "-m", "assets_defs.cli", "score", "--prompt", "Name a colour.", "--response", "Blue.",
         "--principle", "Concise", "--format", "json"], env=env, cwd=root, capture_output=True, text=True,
        check=True).stdout)
    # the same prompts in batches of another shape: equal up to the CPU's bf16 autocast
    assert served["score"] == pytest.approx(here["score"], abs=1e-3)
    assert served["principles"][0]["negated_score"] == pytest.approx(here["principles"][0]["negated_score"], abs=1e-3)
    known = {p.name: p for p in principle_texts(load_principles(root / "principles", "reward_model"))}
    scorer = load_scorer(warehouse_checkpoint(Warehouse(root / "warehouse")))
    want = scorer.score(["Name a colour.", "What is two plus two?"], ["Blue.", "Four, because two and two make four."],
                        [[known["Concise"].definition],
                         [known["Concise"].definition, known["Concise"].negative_definition]])
    alone = scorer.score(["Name a colour."], ["Blue."], [known["Concise"].definition])  # batched alone, as served
    assert got == pytest.approx(want, abs=1e-5) and reward == pytest.approx(alone, abs=1e-5)
    assert json.dumps(got)  # plain floats


@pytest.mark.slow
def test_bench_serve_measures_both_servers_and_prints_the_ratio(tiny_checkpoint, tmp_path):
    from salmon_dag.perf.models import random_reward_model
    from salmon_dag.perf.serve import CONCURRENCY, bench_serve

    lines: list[str] = []
    results = bench_serve(random_reward_model(tiny_checkpoint, tmp_path / "rm"), log=lines.append, requests_per_client=1)
    assert set(results) == {(mode, c) for mode in ("batched", "naive") for c in CONCURRENCY}
    assert all(rps > 0 and p50 <= p99 for rps, p50, p99 in results.values())
    assert lines[-1].startswith(f"batched / naive throughput at concurrency {CONCURRENCY[-1]}: ")


def test_verl_and_trl_reward_functions_ask_the_server(monkeypatch):
    from salmon_dag.serve.trl_reward import salmon_reward_funcs, verl_compute_score

    with served(create_app(lambda: Model(Scorer(), KNOWN))) as url:
        ready(url)
        monkeypatch.setenv("SALMON_SERVE_URL", url)
        monkeypatch.setenv("SALMON_SERVE_PRINCIPLES", "Concise, Honest")
        got = verl_compute_score("gsm8k", "Blue.", None, {"question": "Name a colour."})
        assert got == expected(["The reply is short.", "The reply is true."], "Name a colour.", "Blue.")
        funcs, _ = salmon_reward_funcs(url, ["Concise"])
        chat = funcs[0]([[{"role": "user", "content": "Hi?"}]], [[{"role": "assistant", "content": "Hello."}]])
        assert chat == [expected(["The reply is short."], "Hi?", "Hello.")]  # conversations: the last messages
    monkeypatch.delenv("SALMON_SERVE_PRINCIPLES")
    with pytest.raises(RuntimeError, match="SALMON_SERVE_PRINCIPLES"):
        verl_compute_score("x", "y")


@pytest.mark.slow
def test_trl_grpo_trains_against_the_served_reward_model_with_each_principle_logged(tiny_checkpoint, tmp_path):
    """TRL's own GRPOTrainer, one step on the micro model, its reward from a served stand-in RM:
    the total under both principles drives it, each principle is its own logged column."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from salmon_dag.serve.trl_reward import salmon_reward_funcs

    scorer = Scorer()
    with served(create_app(lambda: Model(scorer, KNOWN))) as url:
        ready(url)
        funcs, weights = salmon_reward_funcs(url, ["Concise", {"name": "Honest", "negated": True}])
        assert [f.__name__ for f in funcs] == ["salmon", "salmon_concise", "salmon_not_honest"] and weights == [1, 0, 0]
        tok = AutoTokenizer.from_pretrained(tiny_checkpoint)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        prompts = datasets.Dataset.from_dict({"prompt": ["### User: Name a colour.\n\n### Assistant:",
                                                         "### User: Say hi.\n\n### Assistant:"]})
        args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_steps=1,
                          max_completion_length=6, reward_weights=weights, report_to="none", use_cpu=True,
                          logging_steps=1, save_strategy="no", disable_tqdm=True)
        trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_checkpoint), reward_funcs=funcs,
                              args=args, train_dataset=prompts, processing_class=tok)
        trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"rewards/salmon/mean", "rewards/salmon_concise/mean", "rewards/salmon_not_honest/mean"} <= logged
    assert len(scorer.calls) >= 3  # the total and both parts were asked of the server
