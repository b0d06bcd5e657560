"""The instructable reward model (SALMON §1.4): reviewer-prompt encoding (``encode``), training
pairs (``data``, ``hh_rlhf``), TRL training (``train``), checkpoints (``checkpoint``), scoring
(``scoring``), evaluation (``evaluate``) and the whole stage (``stage``). Plain Python: no dagster.
"""
