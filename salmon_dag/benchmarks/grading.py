"""Grading open-ended answers with a judge: MT-Bench single-answer ratings and pairwise win rates.

A text judge (LLM) gets MT-Bench's prompts (reference-guided for math, reasoning and coding) and
its output is parsed (``[[n]]``, ``[[A]]``/``[[B]]``/``[[C]]``); the reward-model proxy scores each
answer under the evaluation principles instead, so its MT-Bench metric is a mean RM score
(``rm_score/...``, not a 1-10 rating) and its win rate compares the two answers' scores.
"""

from __future__ import annotations

from collections.abc import Sequence

from salmon_dag.benchmarks.fastchat_prompts import JudgePrompt, judge_request
from salmon_dag.benchmarks.judges import RewardModelJudge, TextJudge
from salmon_dag.benchmarks.mt_bench import REFERENCE_CATEGORIES, Question
from salmon_dag.benchmarks.ratings import parse_rating, summarize
from salmon_dag.benchmarks.results import ItemResult, Score
from salmon_dag.benchmarks.win_rate import Verdict, item_scores, length_adjusted_win_rate, parse_verdict, win_rate
from salmon_dag.templates import format_dialogue, pairwise_request, rating_request

MT_BENCH = "mt_bench"
WIN_RATE = "win_rate"


def _conversation(q: Question, answers: Sequence[str], turn: int) -> list[tuple[str, str]]:
    conv: list[tuple[str, str]] = []
    for k in range(turn + 1):
        conv += [("user", q.turns[k]), ("assistant", answers[k])]
    return conv


def _context(q: Question, answers: Sequence[str], turn: int) -> str:
    """What the reward model sees as the request of turn ``turn``: earlier turns, then the new one."""
    if turn == 0:
        return q.turns[0]
    return format_dialogue(_conversation(q, answers, turn - 1) + [("user", q.turns[turn])])


def grade_mt_bench(questions: Sequence[Question], answers: Sequence[Sequence[str]],
                   judge: TextJudge | RewardModelJudge,
                   prompts: dict[str, JudgePrompt] | None = None) -> tuple[list[ItemResult], list[Score]]:
    """Per-turn items and the per-turn and overall means (plus the unparseable count of a text judge).
    ``prompts``: FastChat's judge prompts (a text judge then gets their system prompt and template)."""
    slots = [(qi, t) for qi, q in enumerate(questions) for t in range(len(q.turns))]
    refs = [questions[qi].reference[t] if questions[qi].category in REFERENCE_CATEGORIES and questions[qi].reference
            and t < len(questions[qi].reference) else None for qi, t in slots]
    if isinstance(judge, RewardModelJudge):
        values = judge.score([_context(questions[qi], answers[qi], t) for qi, t in slots],
                             [answers[qi][t] for qi, t in slots])
        outputs = [f"reward model score {v:.4f}" for v in values]
        scores: list[float | None] = list(values)
        prefix = "rm_score"
    else:
        if prompts is not None:
            requests = [judge_request(prompts, questions[qi], answers[qi], t,
                                      questions[qi].reference if ref is not None else None)
                        for (qi, t), ref in zip(slots, refs)]
        else:
            requests = [rating_request(_conversation(questions[qi], answers[qi], t), ref)
                        for (qi, t), ref in zip(slots, refs)]
        outputs = judge.complete(requests)
        scores = [parse_rating(o) for o in outputs]
        prefix = "rating"
    items = [ItemResult(MT_BENCH, questions[qi].question_id, questions[qi].turns[t], answers[qi][t], s, o, ref,
                        turn=t + 1, sample=questions[qi].sample, category=questions[qi].category)
             for (qi, t), ref, o, s in zip(slots, refs, outputs, scores)]
    summary = []
    for turn in sorted({t for _, t in slots}):
        s = summarize([sc for (_, t), sc in zip(slots, scores) if t == turn])
        summary.append(Score(MT_BENCH, f"{prefix}/turn_{turn + 1}", s.mean, s.n, s.stderr))
    overall = summarize(scores)
    summary.append(Score(MT_BENCH, f"{prefix}/overall", overall.mean, overall.n, overall.stderr))
    if prefix == "rating":
        summary.append(Score(MT_BENCH, "unparseable", float(overall.unparseable), len(scores)))
    return items, summary


def _rm_verdict(diff: float, margin: float) -> Verdict:
    return "tie" if abs(diff) <= margin else ("policy" if diff > 0 else "reference")


def judge_win_rate(instructions: Sequence[str], policy: Sequence[str], reference: Sequence[str],
                   judge: TextJudge | RewardModelJudge, item_ids: Sequence[str],
                   tie_margin: float = 0.0) -> tuple[list[ItemResult], list[Score]]:
    """Each instruction's two answers judged in both orders (a text judge) or scored by the reward
    model (order-free); win rate with its standard error, the length-adjusted win rate, and the
    number of items without a readable verdict."""
    n = len(instructions)
    if isinstance(judge, RewardModelJudge):
        values = judge.score(list(instructions) * 2, list(policy) + list(reference))
        verdicts: list[list[Verdict]] = [[_rm_verdict(values[i] - values[n + i], tie_margin)] for i in range(n)]
        outputs = [f"reward model: policy {values[i]:.4f}, reference {values[n + i]:.4f}" for i in range(n)]
    else:
        first = judge.complete([pairwise_request(q, p, r) for q, p, r in zip(instructions, policy, reference)])
        second = judge.complete([pairwise_request(q, r, p) for q, p, r in zip(instructions, policy, reference)])
        verdicts = [[parse_verdict(a, True), parse_verdict(b, False)] for a, b in zip(first, second)]
        outputs = [f"[policy shown as A]\n{a}\n\n[policy shown as B]\n{b}" for a, b in zip(first, second)]
    per_item = item_scores(verdicts)
    items = [ItemResult(WIN_RATE, iid, q, p, s, o, r)
             for iid, q, p, r, o, s in zip(item_ids, instructions, policy, reference, outputs, per_item)]
    wr = win_rate(verdicts)
    lc = length_adjusted_win_rate(verdicts, [len(p) for p in policy], [len(r) for r in reference])
    # mean answer length (characters) over the reference's: what a length-biased judge rewards
    length_ratio = sum(map(len, policy)) / max(sum(map(len, reference)), 1)
    return items, [
        Score(WIN_RATE, "win_rate", wr.win_rate, wr.n, wr.stderr),
        Score(WIN_RATE, "length_adjusted_win_rate", lc, wr.n),
        Score(WIN_RATE, "excluded", float(wr.excluded), n),
        Score(WIN_RATE, "length_ratio", length_ratio, n),
    ]
