"""RL-time intervention: a reward hack, measured as a rate, and the ``rl.yaml`` edit that removes it.

SALMON's claim is that the principles shown to the reward model at RL time steer the policy, so
a hack seen after RL is answered by editing the RL principles, not by collecting new labels or
retraining the reward model. On the tiny profile the shipped RL set asks for short, clean answers
(``Concise`` among them), and the policy learns that the shortest answer of all, an (almost) empty
one, is what the reward model likes best. The intervention adds one always-on principle to
``principles/rl.yaml`` that carries a verifiable rule (at least a few words), so every RL step's
reward counts an empty answer against it (``rl.reward.rule_penalty``); the reward model itself is
untouched.
"""

from __future__ import annotations

from pathlib import Path

from salmon_dag.rules import word_count

# an answer under this many words is "near-empty": the hack's measure
NEAR_EMPTY_WORDS = 3
INTERVENTION_NAME = "Gives a Real Answer"
# The documented edit: this entry, appended to rl.yaml's always_on list (README walks through it).
INTERVENTION_YAML = f"""\
  - name: {INTERVENTION_NAME}
    definition: >-
      The AI answers the request with real content; an empty reply or a reply
      of a word or two is never an acceptable answer.
    rule:
      type: length
      min_words: {NEAR_EMPTY_WORDS}
"""


def near_empty(text: str) -> bool:
    """True for an answer of fewer than :data:`NEAR_EMPTY_WORDS` words."""
    return word_count(text or "") < NEAR_EMPTY_WORDS


def near_empty_share(texts: list[str]) -> float:
    """Share of near-empty answers (NaN for no answers)."""
    return sum(near_empty(t) for t in texts) / len(texts) if texts else float("nan")


def apply_intervention(principles_dir: Path | str) -> Path:
    """Append :data:`INTERVENTION_YAML` to the ``always_on`` list of ``principles_dir/rl.yaml``
    (text edit: comments and layout stay). Refuses a file that already has it or whose
    ``always_on`` list is not followed by ``groups:``."""
    path = Path(principles_dir) / "rl.yaml"
    text = path.read_text(encoding="utf-8")
    if f"name: {INTERVENTION_NAME}" in text:
        raise ValueError(f"{path}: already has the {INTERVENTION_NAME!r} principle")
    head, sep, tail = text.partition("\ngroups:")
    if not sep or "\nalways_on:" not in head:
        raise ValueError(f"{path}: expected an always_on list followed by groups:")
    path.write_text(head.rstrip("\n") + "\n" + INTERVENTION_YAML.rstrip("\n") + sep + tail, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- measured, per seed
RL_SIDE = ("ppo_policy", "ppo_steps", "ppo_samples", "benchmark_outputs", "benchmark_scores")


def hack_rates(warehouse) -> dict[str, float]:
    """Near-empty shares of the RL policy: its last quarter of rollouts (``ppo_samples``) and its
    answers on the benchmark prompts (``benchmark_outputs``, MT-Bench-style and win rate)."""
    import polars as pl

    samples = warehouse.read_table("ppo_samples")
    last = samples.filter(pl.col("step") >= samples["step"].max() * 3 / 4)
    outputs = warehouse.read_table("benchmark_outputs").filter(
        (pl.col("policy") == "ppo_policy") & pl.col("benchmark").is_in(["mt_bench", "win_rate"]))
    return {"rollouts_last_quarter": near_empty_share(last["response"].to_list()),
            "benchmark_answers": near_empty_share(outputs["answer"].to_list())}


def _run_ids(warehouse) -> dict[str, str | None]:
    """Which run built each table and model of ``warehouse`` (its lineage)."""
    import json

    out = {t: warehouse.read_lineage(t).get("run_id") for t in warehouse.tables()}
    for manifest in sorted((warehouse.root / "models").glob("*.json")):
        out[manifest.stem] = json.loads(manifest.read_text()).get("lineage", {}).get("run_id")
    return out


def _checkpoint_hash(folder: Path) -> str:
    """The full content hash of every file of a checkpoint folder (the project's files_hash)."""
    from salmon_dag.lineage import files_hash

    return files_hash([p for p in folder.rglob("*") if p.is_file()], length=64)


def run_intervention_claims(seed_dir: Path, run_salmon) -> list[dict]:
    """The intervention on one seed's materialized project (``salmon bench seeds``): measure the
    hack, apply the documented ``rl.yaml`` edit, rebuild with ``run_salmon(["run", "-q"])``, and
    measure again. Claims: the rate at least halves (rollouts and benchmark answers), the reward
    model's checkpoint is byte-identical, nothing outside the RL side was rebuilt."""
    from salmon_dag.claims import claim
    from salmon_dag.warehouse import Warehouse

    seed_dir = Path(seed_dir)
    wh = Warehouse(seed_dir / "warehouse")
    rm_dir = wh.model_dir("reward_model")
    before, rm_before, runs_before = hack_rates(wh), _checkpoint_hash(rm_dir), _run_ids(wh)
    apply_intervention(seed_dir / "principles")
    run_salmon(["run", "-q"])
    after, runs_after = hack_rates(wh), _run_ids(wh)
    rebuilt = sorted(k for k, v in runs_after.items() if runs_before.get(k) != v)
    outside = [k for k in rebuilt if k not in RL_SIDE and not k.startswith("principles")]
    rows = []
    for where in before:
        b, a = before[where], after[where]
        rows += [claim(f"intervention/{where}/near_empty_before", b), claim(f"intervention/{where}/near_empty_after", a)]
        # halved: after - before / 2 <= 0 (a rate already 0 must stay 0)
        rows.append(claim(f"intervention/{where}/halved", a - b / 2, 0.0, "<=",
                          f"{b:.3f} -> {a:.3f}"))
    rows.append(claim("intervention/rm_checkpoint_identical", float(_checkpoint_hash(rm_dir) == rm_before), 1.0, ">="))
    rows.append(claim("intervention/rebuilt_outside_rl_side", float(len(outside)), 0.0, "<=",
                      f"rebuilt: {', '.join(rebuilt)}"))
    return rows
