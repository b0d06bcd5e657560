"""Benchmarks of the base, SFT and RL policies (issue 11): judge-rating parsing, win rates."""
