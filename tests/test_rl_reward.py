"""SALMON's RL reward (salmon_dag.rl.reward): principle draws, length bonus, stop penalty, parts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from salmon_dag.config import RLRewardConfig
from salmon_dag.principles import load_principles, parse_principles
from salmon_dag.rl.reward import SalmonReward, broken_rules, length_bonus, sample_principles, stop_penalty

ROOT = Path(__file__).resolve().parents[1]
RL = """
version: 1
kind: rl
always_on:
  - {name: No Self-Praise, definition: The AI never praises its own answer.}
groups:
  general:
    - {name: Heavy, definition: heavy principle, weight: 6}
    - {name: Light, definition: light principle, weight: 1}
    - {name: Middle, definition: middle principle, weight: 3}
  reasoning:
    - {name: Careful, definition: careful reasoning, weight: 1}
"""


class FakeScorer:
    """Records what the RM is asked; the score is the number of principles listed."""

    def __init__(self):
        self.calls = []

    def score(self, prompts, responses, principle_lists):
        self.calls.append((list(prompts), list(responses), list(principle_lists)))
        return [float(len(p or [])) for p in principle_lists]


def _pset():
    return parse_principles(RL, "rl", "rl.yaml")


def test_draws_follow_weights_without_replacement():
    group = _pset().data.groups["general"]
    rng = np.random.default_rng(0)
    first = Counter(sample_principles(group, 1, rng)[0].name for _ in range(6000))
    assert first["Heavy"] / 6000 == pytest.approx(0.6, abs=0.03)  # 6 / (6 + 1 + 3)
    assert first["Middle"] / 6000 == pytest.approx(0.3, abs=0.03)
    draws = [sample_principles(group, 2, rng) for _ in range(200)]
    assert all(len({p.name for p in d}) == 2 for d in draws)  # without replacement
    assert len(sample_principles(group, 10, rng)) == 3 and sample_principles(group, 0, rng) == []


def test_each_sample_gets_always_on_lines_then_its_own_group_and_draws_are_seeded():
    reward = SalmonReward(FakeScorer(), _pset(), RLRewardConfig(max_principles=2), seed=7)
    lists = reward.draw(step=0, question_types=["general", "reasoning", "red_teaming"])
    assert [p.name for p in lists[0]][0] == "No Self-Praise" and len(lists[0]) == 3
    assert {p.name for p in lists[0][1:]} <= {"Heavy", "Light", "Middle"}
    assert [p.name for p in lists[1]] == ["No Self-Praise", "Careful"]  # group smaller than max
    assert [p.name for p in lists[2]] == ["No Self-Praise"]  # no red_teaming group in this file
    again = SalmonReward(FakeScorer(), _pset(), RLRewardConfig(max_principles=2), seed=7)
    assert again.draw(0, ["general"] * 50) == reward.draw(0, ["general"] * 50)  # same seed, same step
    assert reward.draw(1, ["general"] * 50) != reward.draw(0, ["general"] * 50)  # resampled per rollout


def test_length_bonus_and_stop_penalty_match_their_formulas():
    cfg = RLRewardConfig()  # SALMON: 5.0 * min(tokens / 1024 * m, 0.8); -6 without a stop
    assert length_bonus(512, "general", cfg) == pytest.approx(5.0 * 0.5)
    assert length_bonus(4096, "general", cfg) == pytest.approx(5.0 * 0.8)  # capped
    assert length_bonus(512, "reasoning", cfg) == pytest.approx(5.0 * 0.5 * -0.4)  # a penalty, not clamped
    assert length_bonus(0, "general", cfg) == 0.0
    assert (stop_penalty(True, cfg), stop_penalty(False, cfg)) == (0.0, -6.0)


def test_reward_parts_add_up_and_the_rm_sees_the_sampled_principle_texts():
    scorer = FakeScorer()
    reward = SalmonReward(scorer, _pset(), RLRewardConfig(max_principles=1), seed=0)
    parts = reward(3, ["p1", "p2"], ["r1", "r2"], ["general", "reasoning"], [1024, 256], [True, False])
    prompts, responses, lists = scorer.calls[0]
    assert (prompts, responses) == (["p1", "p2"], ["r1", "r2"])
    assert lists[1] == ["The AI never praises its own answer.", "careful reasoning"]
    assert parts[1].principles == ("No Self-Praise", "Careful")
    assert parts[0].rm_score == 2.0 and parts[0].length_bonus == pytest.approx(4.0) and parts[0].stop_penalty == 0
    assert parts[1].total == pytest.approx(2.0 + 5.0 * 0.25 * -0.4 - 6.0)
    with pytest.raises(ValueError, match="same length"):
        reward(0, ["p"], ["r", "s"], ["general"], [1], [True])


def test_shipped_rl_file_has_always_on_lines_and_a_group_per_question_type():
    pset = load_principles(ROOT / "principles", "rl")
    assert len(pset.always_on()) == 3 and all(p.definition for p in pset.always_on())
    reward = SalmonReward(FakeScorer(), pset, RLRewardConfig(), seed=0)
    for qt, names in zip(("general", "reasoning", "red_teaming"), reward.draw(0, ["general", "reasoning", "red_teaming"])):
        assert len(names) == 3 + 3, qt
    with pytest.raises(ValueError, match="rl principle file"):
        SalmonReward(FakeScorer(), load_principles(ROOT / "principles", "reward_model"), RLRewardConfig(), seed=0)


def test_principle_free_prompt_when_nothing_is_listed():
    rl = parse_principles(RL.replace("always_on:\n  - {name: No Self-Praise, definition: The AI never praises its own answer.}\n", ""),
                          "rl", "rl.yaml")
    scorer = FakeScorer()
    SalmonReward(scorer, rl, RLRewardConfig(), seed=0)(0, ["p"], ["r"], ["red_teaming"], [10], [True])
    assert scorer.calls[0][2] == [None]


def test_always_on_names_must_be_unique_across_the_file():
    dup = RL.replace("name: No Self-Praise", "name: Heavy")
    with pytest.raises(ValueError, match=r"always_on\[0\] 'Heavy'.name: duplicate of groups.general\[0\]"):
        parse_principles(dup, "rl", "rl.yaml")


RULED = """
version: 1
kind: rl
always_on:
  - name: Gives a Real Answer
    definition: The AI answers with real content.
    rule: {type: length, min_words: 3}
groups:
  general:
    - name: No Boilerplate
      definition: No AI boilerplate.
      weight: 1
      rule: {type: forbidden_phrase, phrases: ["As an AI language model"]}
    - name: Shorter
      definition: Shorter is better.
      weight: 1
      rule: {type: length, prefer: shorter}
"""


def test_every_shown_principle_whose_rule_the_response_breaks_costs_rule_penalty():
    pset = parse_principles(RULED, "rl", "rl.yaml")
    reward = SalmonReward(FakeScorer(), pset, RLRewardConfig(max_principles=2, rule_penalty=-2.5), seed=0)
    responses = ["Boil it for seven minutes.", "As an AI language model, no.", "Ok.", ""]
    parts = reward(0, ["How do I boil an egg?"] * 4, responses, ["general"] * 4, [6] * 4, [True] * 4)
    # both group principles are drawn (max 2 of 2); the comparative rule needs two responses: skipped
    assert [p.rule_penalty for p in parts] == [0.0, -2.5, -2.5, -2.5]
    assert parts[1].total == pytest.approx(parts[1].rm_score + parts[1].length_bonus - 2.5)
    off = SalmonReward(FakeScorer(), pset, RLRewardConfig(max_principles=2, rule_penalty=0.0), seed=0)
    assert [p.rule_penalty for p in off(0, ["q"] * 4, responses, ["general"] * 4, [6] * 4, [True] * 4)] == [0.0] * 4
    # the boilerplate one breaks only the group rule; the empty one only the always-on rule
    assert broken_rules(reward.draw(0, ["general"])[0], "q", responses[1]) == ["No Boilerplate"]
    assert broken_rules(reward.draw(0, ["general"])[0], "q", "") == ["Gives a Real Answer"]


def test_hidden_always_on_lines_leave_the_rm_prompt_but_keep_their_rules():
    pset = parse_principles(RULED, "rl", "rl.yaml")
    scorer = FakeScorer()
    reward = SalmonReward(scorer, pset, RLRewardConfig(max_principles=1, rule_penalty=-3.0, show_always_on=False),
                          seed=0)
    parts = reward(0, ["q", "q"], ["", "Boil it for seven minutes."], ["general"] * 2, [1, 6], [True, True])
    shown = scorer.calls[0][2]
    assert [len(texts) for texts in shown] == [1, 1] and "The AI answers with real content." not in shown[0] + shown[1]
    assert parts[0].principles[0] == "Gives a Real Answer"  # still in force: the empty answer pays for it
    assert parts[0].rule_penalty == -3.0 and parts[1].rule_penalty == 0.0
    visible = SalmonReward(FakeScorer(), pset, RLRewardConfig(max_principles=1), seed=0)
    assert [p.rm_score for p in visible(0, ["q"], [""], ["general"], [1], [True])] == [2.0]  # listed: 2 texts


def test_the_documented_intervention_adds_one_ruled_always_on_line_to_the_shipped_file(tmp_path):
    import shutil

    from salmon_dag.rl.intervention import INTERVENTION_NAME, apply_intervention, near_empty_share

    shutil.copytree(ROOT / "principles", tmp_path / "principles")
    before = load_principles(tmp_path / "principles", "rl")
    apply_intervention(tmp_path / "principles")
    after = load_principles(tmp_path / "principles", "rl")
    added = after.always_on()[-1]
    assert [p.name for p in after.always_on()] == [p.name for p in before.always_on()] + [INTERVENTION_NAME]
    assert after.principles() == before.principles() and added.rule is not None
    assert broken_rules([added], "q", "Blue.") == [INTERVENTION_NAME] and broken_rules([added], "q", "It is blue.") == []
    assert near_empty_share(["", "Yes.", "It is blue."]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="already has"):
        apply_intervention(tmp_path / "principles")


def test_the_readme_shows_the_intervention_exactly_as_the_study_and_tests_apply_it():
    import re

    from salmon_dag.rl.intervention import INTERVENTION_YAML

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    step = text[text.index("**7. Remove a reward hack"):]
    assert re.findall(r"```yaml\n(.*?)```", step, re.S)[0] == INTERVENTION_YAML
