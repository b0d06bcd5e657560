"""Judging open-ended answers (issue 11): an OpenAI-compatible HTTP judge against a local fake
server, MT-Bench grading and win rates with scripted judges and the reward-model proxy, and the
comparison report / RL-below-SFT rule."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import polars as pl
import pytest

from salmon_dag.benchmarks.grading import grade_mt_bench, judge_win_rate
from salmon_dag.benchmarks.judges import JudgeError, OpenAIJudge, RewardModelJudge
from salmon_dag.benchmarks.mt_bench import Question
from salmon_dag.benchmarks.report import below_reference, comparison_markdown
from salmon_dag.benchmarks.stage import evaluation_principles
from salmon_dag.config import BenchmarkJudgeConfig
from salmon_dag.principles import PrincipleText


# ---------------------------------------------------------------- a fake OpenAI-compatible server
class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        server = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        server.seen.append((self.path, self.headers.get("Authorization"), body))
        if server.fail_first and len(server.seen) <= server.fail_first:
            self.send_response(503)
            self.end_headers()
            self.wfile.write(b"busy")
            return
        if server.status != 200:
            self.send_response(server.status)
            self.end_headers()
            self.wfile.write(b"bad request")
            return
        content = server.reply(body["messages"][0]["content"])
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def fake_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.seen, server.fail_first, server.status = [], 0, 200
    server.reply = lambda text: "Looks fine. Rating: [[7]]"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_openai_judge_from_env_posts_chat_completions(fake_server, monkeypatch):
    monkeypatch.setenv("SALMON_JUDGE_BASE_URL", f"http://127.0.0.1:{fake_server.server_port}/v1/")
    monkeypatch.setenv("SALMON_JUDGE_MODEL", "judge-7b")
    monkeypatch.setenv("SALMON_JUDGE_API_KEY", "sk-test")
    judge = OpenAIJudge.from_env(BenchmarkJudgeConfig(kind="openai", max_new_tokens=64))
    assert judge.complete(["grade A", "grade B"]) == ["Looks fine. Rating: [[7]]"] * 2
    path, auth, body = fake_server.seen[0]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "judge-7b" and body["temperature"] == 0 and body["max_tokens"] == 64
    assert sorted(b["messages"][0]["content"] for _, _, b in fake_server.seen) == ["grade A", "grade B"]


def test_openai_judge_retries_then_fails_clearly(fake_server, monkeypatch):
    monkeypatch.setattr("salmon_dag.benchmarks.judges.time.sleep", lambda s: None)
    url = f"http://127.0.0.1:{fake_server.server_port}/v1"
    fake_server.fail_first = 2  # two 503s, then an answer
    assert OpenAIJudge(url, "m", retries=3).complete(["x"]) == ["Looks fine. Rating: [[7]]"]
    fake_server.fail_first, fake_server.status = 0, 400  # a client error is not retried
    fake_server.seen.clear()
    with pytest.raises(JudgeError, match="HTTP 400"):
        OpenAIJudge(url, "m", retries=3).complete(["x"])
    assert len(fake_server.seen) == 1
    with pytest.raises(JudgeError, match="127.0.0.1:9"):
        OpenAIJudge("http://127.0.0.1:9/v1", "m", retries=1, timeout_s=2).complete(["x"])


def test_openai_judge_names_missing_environment(monkeypatch):
    monkeypatch.delenv("SALMON_JUDGE_BASE_URL", raising=False)
    with pytest.raises(JudgeError, match=r"\$SALMON_JUDGE_BASE_URL"):
        OpenAIJudge.from_env(BenchmarkJudgeConfig(kind="openai"))
    monkeypatch.setenv("SALMON_JUDGE_BASE_URL", "http://x")
    monkeypatch.delenv("SALMON_JUDGE_MODEL", raising=False)
    with pytest.raises(JudgeError, match=r"\$SALMON_JUDGE_MODEL"):
        OpenAIJudge.from_env(BenchmarkJudgeConfig(kind="openai"))


# ---------------------------------------------------------------- MT-Bench grading
class Scripted:
    name = "scripted"

    def __init__(self, reply):
        self.reply, self.requests = reply, []

    def complete(self, requests):
        self.requests += requests
        return [self.reply(r) for r in requests]


QUESTIONS = [
    Question("1", "writing", ("Write a haiku.", "Now make it sadder.")),
    Question("2", "math", ("What is 2+3?", "And times 4?"), ("5", "20")),
]
ANSWERS = [["Leaves fall softly", "Grey leaves fall alone"], ["5", "twenty"]]


def test_mt_bench_ratings_per_turn_with_malformed_outputs_excluded():
    outputs = iter(["Good. Rating: [[8]]", "meh [6]", "Rating: [[11]]", "no verdict at all"])
    judge = Scripted(lambda r: next(outputs))
    items, scores = grade_mt_bench(QUESTIONS, ANSWERS, judge)
    by = {s.metric: s for s in scores}
    assert [i.score for i in items] == [8.0, 6.0, None, None]
    assert (by["rating/turn_1"].value, by["rating/turn_1"].n) == (8.0, 1)
    assert (by["rating/turn_2"].value, by["rating/turn_2"].n) == (6.0, 1)
    assert (by["rating/overall"].value, by["rating/overall"].n) == (7.0, 2)
    assert by["unparseable"].value == 2
    # reference-guided only for math/reasoning/coding, with that turn's reference; turn 2 sees turn 1
    assert "[Reference answer]" not in judge.requests[0] and "[Reference answer]\n20\n" in judge.requests[3]
    assert "Leaves fall softly" in judge.requests[1] and "Now make it sadder." in judge.requests[1]
    assert items[3].reference == "20" and items[3].turn == 2 and items[3].judge_output == "no verdict at all"


class FakeScorer:
    """Scores a reply by its length: enough to check what the proxy judge passes on."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses, principles):
        self.calls.append((prompts, responses, principles))
        return [float(len(r)) for r in responses]


def test_mt_bench_reward_model_proxy_scores_in_context():
    scorer = FakeScorer()
    items, scores = grade_mt_bench(QUESTIONS, ANSWERS, RewardModelJudge(scorer, ("Be thorough.",)))
    prompts, responses, principles = scorer.calls[0]
    assert principles == ["Be thorough."] and responses == ["Leaves fall softly", "Grey leaves fall alone", "5", "twenty"]
    assert prompts[0] == "Write a haiku." and "Leaves fall softly" in prompts[1] and prompts[1].endswith("Now make it sadder.")
    by = {s.metric: s.value for s in scores}
    assert by["rm_score/overall"] == pytest.approx((18 + 22 + 1 + 6) / 4) and "unparseable" not in by


# ---------------------------------------------------------------- win rate
INSTR = ["a", "b", "c", "d"]
POLICY = ["long answer one", "long answer two", "x", "long answer four"]
REFERENCE = ["short", "short", "a much longer answer", "short"]


def test_win_rate_both_orders_cancel_position_bias():
    always_a = Scripted(lambda r: "I prefer the first. [[A]]")
    items, scores = judge_win_rate(INSTR, POLICY, REFERENCE, always_a, ["1", "2", "3", "4"])
    by = {s.metric: s for s in scores}
    assert by["win_rate"].value == 0.5 and by["win_rate"].n == 4 and len(always_a.requests) == 8
    assert all(i.score == 0.5 for i in items) and "[policy shown as B]" in items[0].judge_output


def test_win_rate_prefers_longer_and_length_control_removes_it():
    def longer(request):
        a = re.search(r"\[Reply A\]\n(.*?)\n\[End", request, re.S).group(1)
        b = re.search(r"\[Reply B\]\n(.*?)\n\[End", request, re.S).group(1)
        return "[[A]]" if len(a) > len(b) else "[[B]]"

    items, scores = judge_win_rate(INSTR, POLICY, REFERENCE, Scripted(longer), ["1", "2", "3", "4"])
    by = {s.metric: s for s in scores}
    assert by["win_rate"].value == 0.75 and by["win_rate"].stderr == pytest.approx(0.25)
    # the length-adjusted arithmetic is tested in test_benchmark_scoring.py; here: it is reported
    assert 0 < by["length_adjusted_win_rate"].value < 1 and by["length_adjusted_win_rate"].n == 4
    assert by["length_ratio"].value > 1 and by["excluded"].value == 0


def test_win_rate_reward_model_proxy_with_tie_margin():
    items, scores = judge_win_rate(INSTR, POLICY, REFERENCE, RewardModelJudge(FakeScorer(), ("p",)),
                                   ["1", "2", "3", "4"], tie_margin=10.0)
    # length differences 10, 10, -19, 11: two ties, one loss, one win
    assert [i.score for i in items] == [0.5, 0.5, 0.0, 1.0]
    assert {s.metric: s.value for s in scores}["win_rate"] == 0.5


# ---------------------------------------------------------------- report and check rule
def _scores():
    rows = [("base_model", "mt_bench", "rm_score/overall", -1.0, 0.1), ("sft_model", "mt_bench", "rm_score/overall", 0.5, 0.1),
            ("ppo_policy", "mt_bench", "rm_score/overall", 1.5, 0.2), ("ppo_policy", "win_rate", "win_rate", 0.4, 0.05),
            ("base_model", "gsm8k", "exact_match_strict", 0.1, 0.05), ("sft_model", "gsm8k", "exact_match_strict", 0.2, 0.05),
            ("ppo_policy", "gsm8k", "exact_match_strict", 0.15, 0.05)]
    return pl.DataFrame([dict(policy=p, benchmark=b, metric=m, value=v, n=10, stderr=s) for p, b, m, v, s in rows])


def test_rl_below_sft_rule_and_comparison_table():
    below = below_reference(_scores(), "ppo_policy", "sft_model")
    assert below == ["win_rate win_rate: 0.400 < 0.500", "gsm8k exact_match_strict: 0.150 < 0.200"]
    table = comparison_markdown(_scores())
    assert "| mt_bench | rm_score/overall | -1.000 ± 0.100 | 0.500 ± 0.100 | 1.500 ± 0.200 | 10 |" in table


def test_evaluation_principles_by_name():
    ps = [PrincipleText("Concise", "Be brief.", "Be long."), PrincipleText("Honest", "Be true.", "Lie.")]
    assert evaluation_principles(ps, None) == ("Be brief.", "Be true.")
    assert evaluation_principles(ps, ["Honest"]) == ("Be true.",)
    with pytest.raises(ValueError, match="Kind not in the reward-model principles"):
        evaluation_principles(ps, ["Kind"])


# ---------------------------------------------------------------- FastChat's judge prompts, from a user's file
def _fastchat_file(tmp_path):
    """A file in FastChat's judge_prompts.jsonl format (our own text: FastChat's is not shipped)."""
    rows = [
        {"name": "pair-v2", "type": "pairwise", "system_prompt": "ignored", "prompt_template": "{question}"},
        {"name": "single-v1", "type": "single", "system_prompt": "S1", "prompt_template": "Q: {question}\nA: {answer}"},
        {"name": "single-math-v1", "type": "single", "system_prompt": "S2",
         "prompt_template": "Q: {question}\nREF: {ref_answer_1}\nA: {answer}"},
        {"name": "single-v1-multi-turn", "type": "single", "system_prompt": "S3",
         "prompt_template": "{question_1}|{answer_1}|{question_2}|{answer_2}"},
        {"name": "single-math-v1-multi-turn", "type": "single", "system_prompt": "S4",
         "prompt_template": "{question_1}|{ref_answer_1}|{answer_1}|{question_2}|{ref_answer_2}|{answer_2}"},
    ]
    path = tmp_path / "judge_prompts.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_fastchat_prompts_grade_each_turn_with_their_system_prompt_and_references(tmp_path):
    from salmon_dag.benchmarks.fastchat_prompts import load_judge_prompts

    prompts = load_judge_prompts(_fastchat_file(tmp_path))
    judge = Scripted(lambda r: "Fine. [[6]]")
    items, scores = grade_mt_bench(QUESTIONS, ANSWERS, judge, prompts)
    assert judge.requests == [
        ("S1", "Q: Write a haiku.\nA: Leaves fall softly"),
        ("S3", "Write a haiku.|Leaves fall softly|Now make it sadder.|Grey leaves fall alone"),
        ("S2", "Q: What is 2+3?\nREF: 5\nA: 5"),
        ("S4", "What is 2+3?|5|5|And times 4?|20|twenty"),  # both reference turns on the second
    ]
    assert [i.score for i in items] == [6.0] * 4 and {s.metric: s.value for s in scores}["rating/overall"] == 6.0


def test_a_judge_prompt_file_that_cannot_be_used_is_named_in_one_line(tmp_path):
    from salmon_dag.benchmarks.fastchat_prompts import JudgePromptError, load_judge_prompts

    with pytest.raises(JudgePromptError, match="judge_prompts: .*missing.jsonl not found"):
        load_judge_prompts(tmp_path / "missing.jsonl")
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"name": "single-v1", "system_prompt": "", "prompt_template": ""}) + "\n")
    with pytest.raises(JudgePromptError, match="no single-math-v1, single-v1-multi-turn, single-math-v1-multi-turn"):
        load_judge_prompts(partial)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps({"name": "single-v1"}) + "\n")
    with pytest.raises(JudgePromptError, match="broken.jsonl: line 1: not a judge prompt"):
        load_judge_prompts(broken)


def test_openai_judge_sends_a_system_prompt_as_its_own_message(fake_server, monkeypatch):
    monkeypatch.setenv("SALMON_JUDGE_BASE_URL", f"http://127.0.0.1:{fake_server.server_port}/v1")
    monkeypatch.setenv("SALMON_JUDGE_MODEL", "judge-7b")
    fake_server.reply = lambda text: "[[9]]"
    judge = OpenAIJudge.from_env(BenchmarkJudgeConfig(kind="openai", max_new_tokens=2048))
    assert judge.complete([("You are a judge.", "grade A")]) == ["[[9]]"]
    body = fake_server.seen[0][2]
    assert body["messages"] == [{"role": "system", "content": "You are a judge."}, {"role": "user", "content": "grade A"}]
    assert body["max_tokens"] == 2048
