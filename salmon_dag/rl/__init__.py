"""RL against the instructable reward model (SALMON §2): the reward (``reward``) and PPO's
arithmetic (``losses``). Plain Python: no dagster."""
