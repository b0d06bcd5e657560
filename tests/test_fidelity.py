"""docs/fidelity.md pins SALMON's constants in the real profiles: each row of its "Pinned" table
must be what the profile loads (after ``extends:``), so neither can drift from the other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from salmon_dag.config import load_profile

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
PROFILES = ("llama2-7b-qlora", "llama2-70b-qlora")


def pinned_rows() -> list[tuple[str, dict[str, object]]]:
    """(setting, {profile: value}) of every row of the doc's "Pinned" table."""
    text = DOC.read_text(encoding="utf-8").split("## Pinned", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in text.splitlines() if line.startswith("| `")]
    header = [c.strip() for c in text.split("| setting |", 1)[1].splitlines()[0].strip(" |").split("|")]
    rows = []
    for line in lines:
        cells = [c.strip() for c in line.strip(" |").split("|")]
        values = dict(zip(header, (yaml.safe_load(c) for c in cells[1:])))
        rows.append((cells[0].strip("`"), {p: values[p] for p in PROFILES}))
    return rows


def effective(profile, setting: str):
    """A dotted profile path, or one of the derived batch sizes the doc names."""
    section, _, rest = setting.partition(".")
    cfg = getattr(profile, section)
    if rest == "rollouts_per_step":
        return cfg.rollout_batch_size * cfg.num_processes
    if rest in ("sequences_per_optimizer_step", "pairs_per_step"):
        return cfg.per_device_batch_size * cfg.gradient_accumulation_steps * cfg.num_processes
    value = cfg
    for part in rest.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part] if isinstance(value, dict) \
            else getattr(value, part)
    return value


ROWS = pinned_rows()


def test_the_doc_pins_salmons_batch_sizes_and_reward_constants():
    settings = {s for s, _ in ROWS}
    assert len(ROWS) >= 50 and {"ppo.rollouts_per_step", "ppo.sequences_per_optimizer_step", "ppo.kl_estimator",
                                "ppo.reward_scale", "rl.reward.no_stop_penalty"} <= settings


@pytest.mark.parametrize("name", PROFILES)
def test_each_real_profile_has_the_pinned_values(name):
    profile = load_profile(name)
    drifted = [f"{setting}: profile {effective(profile, setting)!r}, docs/fidelity.md {want[name]!r}"
               for setting, want in ROWS if effective(profile, setting) != want[name]]
    assert not drifted, f"{name} drifted from docs/fidelity.md:\n" + "\n".join(drifted)
