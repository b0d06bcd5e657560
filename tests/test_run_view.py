"""`salmon run` as people watch it: progress lines become bars (the whole view of a rebuild, one
line per step and the report, is checked end to end in tests/test_rebuilds.py)."""

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


def test_a_check_reason_is_its_metadata_on_one_line():
    import dagster as dg

    from assets_defs.project import check_reason

    meta = {"passing": dg.MetadataValue.text("['Concise']"), "needed": 2, "threshold": 0.8, "note": "a\nb"}
    assert check_reason(meta) == "passing=['Concise']; needed=2; threshold=0.8; note=a b"
    assert len(check_reason({"long": "x" * 1000})) == 300
