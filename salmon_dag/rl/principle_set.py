"""The principle set the RL reward draws from: ``rl.yaml`` as it is, or a steering set built from
reward-model principles chosen by name (``rl.reward_model_principles``, ``salmon bench steer``).

A steering set is an ``rl`` principle file whose groups hold reward-model principles with their
definitions verbatim: a reward model follows the principle texts it was trained on, so the RL
reward then asks for exactly what the principle says.
"""

from __future__ import annotations

from collections.abc import Sequence

import yaml

from salmon_dag.principles import QUESTION_TYPES, PrincipleSet, parse_principles


def rl_principle_set(rl_principles: PrincipleSet, rm_principles: PrincipleSet, rl_cfg) -> PrincipleSet:
    """The principle set the RL reward draws from under ``profile.rl``: ``rl.yaml`` as it is, or
    (``rl.reward_model_principles``) a steering set; without always-on lines when ``rl.always_on``
    is off."""
    if rl_cfg.reward_model_principles:
        try:
            return steering_set(rm_principles, rl_cfg.reward_model_principles, rl_cfg.always_on, rl_principles)
        except ValueError as exc:
            raise ValueError(f"rl.reward_model_principles: {str(exc).removeprefix('steer: ')}") from None
    if rl_cfg.always_on or not rl_principles.always_on():
        return rl_principles
    data = rl_principles.data.model_dump(mode="json", exclude_none=True) | {"always_on": []}
    return parse_principles(yaml.safe_dump(data, sort_keys=False), "rl", rl_principles.path)


def unused_groups(rl_principles: PrincipleSet, rl_cfg) -> str | None:
    """The warning for an ``rl.yaml`` whose groups the run does not draw from (``rl.reward_model_principles``
    is set), so that editing them changes nothing the policy sees; None when they are used."""
    names = [p.name for _, p in rl_principles.principles()]
    if not rl_cfg.reward_model_principles or not names:
        return None
    kept = "its always_on lines still apply" if rl_cfg.always_on else "its always_on lines are off too (rl.always_on)"
    return (f"{rl_principles.path}: its {len(names)} group principles are not drawn, because "
            f"rl.reward_model_principles ({', '.join(rl_cfg.reward_model_principles)}) replaces them; {kept}. "
            "An edit of the groups makes RL stale but changes nothing it draws")


def steering_set(rm_principles: PrincipleSet, names: Sequence[str], always_on: bool = False,
                 rl_principles: PrincipleSet | None = None) -> PrincipleSet:
    """An ``rl`` principle set whose every question-type group holds the named reward-model
    principles (weight 1); ``always_on`` keeps the RL file's always-on lines."""
    by_name = {p.name: p for _, p in rm_principles.principles()}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"steer: {', '.join(unknown)} not in {rm_principles.path} (known: {', '.join(by_name)})")
    # names are unique across a file's groups: the copies for other question types say which
    groups = {qt: [{"name": n if qt == "general" else f"{n} ({qt})", "definition": by_name[n].definition,
                    "weight": 1.0} for n in names] for qt in QUESTION_TYPES}
    data = {"version": 1, "kind": "rl", "groups": groups}
    if always_on and rl_principles is not None:
        data["always_on"] = [p.model_dump(mode="json", exclude_none=True) for p in rl_principles.always_on()]
    label = "+".join(names)
    return parse_principles(yaml.safe_dump(data, sort_keys=False), "rl", f"<steer:{label}>")
