"""RL against the instructable reward model (SALMON §2): the reward (``reward``). Plain Python:
no dagster."""
