"""`salmon run` as people watch it: progress lines become bars, steps become one line each, and
the run ends with a report read from the warehouse."""

import re
from pathlib import Path

import pytest
from projects import copy_project, salmon

from salmon_dag.progress import Progress, parse_progress, progress_line

# what the long steps log today, verbatim (pre-training, self-align, SFT/RM trainer, pairs, RL, judging)
PROGRESS_LINES = {
    "pretrain: step 30/300 loss 6.4676 lr 2.99e-03 (17s)": ("pretrain", 30, 300),
    "self-align: 32/32 prompts (19s)": ("self-align", 32, 32),
    "sft: step 6/60 (10%) loss 4.3449 lr 9.17e-04 [1s]": ("sft", 6, 60),
    "reward_model: step 24/240 (10%) loss 0.7256 accuracy 0.3750 lr 9.52e-04 [6s]": ("reward_model", 24, 240),
    "response pairs: 64/352 prompts (9s)": ("response pairs", 64, 352),
    "ppo: step 1/30  reward -2.331  rm -1.255  kl 0.000  len 17.8  1.4s": ("ppo", 1, 30),
    progress_line("judging", 128, 334, "pairs x 18 principles"): ("judging", 128, 334),
}
NOT_PROGRESS = [
    "reward_model: eval at step 60/240: eval_accuracy 0.6726",
    "self_align_sft_data: kept 22/32; filtered {'truncated': 3}",
    "humaneval: checked 3/8 programs, 0 passed",
    "judged 334 pairs x 18 principles",
    "ppo: step 1/0",
]


def test_progress_lines_are_recognised_and_nothing_else():
    for line, want in PROGRESS_LINES.items():
        assert parse_progress(line) == Progress(*want), line
    for line in NOT_PROGRESS:
        assert parse_progress(line) is None, line


@pytest.mark.slow
def test_a_rebuild_shows_steps_and_ends_with_the_report(project, tmp_path):
    copy = copy_project(project, tmp_path / "p")
    rl = copy[0] / "principles" / "rl.yaml"
    rl.write_text(rl.read_text().replace("definition: ", "definition: Above all, ", 1))
    out = salmon(copy, "run").stdout
    steps = re.findall(r"^✓ \[(\d)/(\d)\] (\w+) ", out, flags=re.M)
    assert steps == [("1", "3", "principles"), ("2", "3", "ppo_policy"), ("3", "3", "benchmark_scores")], out
    assert re.search(r"ppo_steps \d+ rows", out) and "ppo_policy (model)" in out
    # no raw log lines, no third-party progress bars on the screen
    assert " - dagster - " not in out and "Loading weights" not in out and "ppo: step" not in out
    for title in ("Tables", "Reward model: held-out accuracy", "RL: first vs last quarter",
                  "Policies' answers", "Benchmarks", "Next:"):
        assert title in out, title
    assert re.search(r"objective/rm_score\s*│\s*-?\d", out)
    log = Path(re.search(r"^full log: (.+)$", out, flags=re.M)[1])
    text = log.read_text()
    assert "ppo: step 3/3" in text and "dagster - INFO" in text  # everything went to the log file

    # -v: Dagster's own log instead of the view, and the same report
    proc = salmon(copy, "run", "-v", "--select", "principles/rl")
    assert "dagster - INFO" in proc.stderr and "✓" not in proc.stdout and "Tables" in proc.stdout
