"""Principle files: the shipped ones validate; each kind of corruption gives one precise line."""

from pathlib import Path

import pytest

from salmon_dag.principles import (
    PRINCIPLE_KINDS,
    PrincipleError,
    file_hash,
    load_principles,
    parse_principles,
    to_frame,
)
from salmon_dag.rules import ForbiddenPhraseRule, LanguageMatchRule, LengthRule

PRINCIPLES = Path(__file__).resolve().parents[1] / "principles"


def test_shipped_files_meet_the_minimums():
    sa = load_principles(PRINCIPLES, "self_align")
    assert len(sa.data.principles) >= 16 and len(sa.data.exemplars) == 6
    rm = load_principles(PRINCIPLES, "reward_model")
    assert len(rm.data.principles) >= 10
    assert all(p.negative_definition and p.negative_definition != p.definition for p in rm.data.principles)
    rules = {type(p.rule) for p in rm.data.principles if p.rule}
    # the public code's two hard-coded rules are expressible as rules
    assert {ForbiddenPhraseRule, LanguageMatchRule, LengthRule} <= rules
    rl = load_principles(PRINCIPLES, "rl")
    assert len(rl.data.groups["general"]) >= 12
    assert rl.data.groups["reasoning"] and rl.data.groups["red_teaming"]
    assert all(p.weight > 0 for _, p in rl.principles())


def test_table_form():
    sa = load_principles(PRINCIPLES, "self_align")
    df = to_frame(sa)
    assert df.filter(df["entry_kind"] == "exemplar").height == 6
    assert df.filter(df["entry_kind"] == "principle").height == len(sa.data.principles)
    assert "principle_hash" not in df.columns  # the lineage columns add it when the table is stored
    rl = to_frame(load_principles(PRINCIPLES, "rl"))
    sampled = rl.filter(rl["entry_kind"] == "principle")
    assert set(sampled["question_type"].to_list()) == {"general", "reasoning", "red_teaming"}
    always = rl.filter(rl["entry_kind"] == "always_on")
    assert always.height == 3 and always["question_type"].null_count() == 3 and always["weight"].null_count() == 3


RM_OK = """
version: 1
kind: reward_model
principles:
  - name: Honest
    definition: The AI tells the truth.
    negative_definition: The AI makes things up.
  - name: Concise
    definition: The AI is brief.
    negative_definition: The AI pads its answer.
    rule: {type: length, max_words: 100}
"""


def test_hash_ignores_comments_and_formatting():
    a = parse_principles(RM_OK, "reward_model")
    b = parse_principles("# a comment\n" + RM_OK.replace("  - name: Honest", "  - name:    Honest"), "reward_model")
    c = parse_principles(RM_OK.replace("tells the truth", "tells the whole truth"), "reward_model")
    assert a.content_hash == b.content_hash != c.content_hash


def test_file_hash_matches_content_hash_semantics(tmp_path):
    f = tmp_path / "reward_model.yaml"
    f.write_text(RM_OK)
    h1 = file_hash(f)
    f.write_text("# edited comment only\n" + RM_OK)
    assert file_hash(f) == h1
    f.write_text("principles: [unclosed\n")
    assert file_hash(f).startswith("unparsable-")  # observing a broken file must not crash


@pytest.mark.parametrize(
    "text, kind, expected",
    [
        ("version: 1\nkind: reward_model\nprinciples: [\n", "reward_model", "line 4: invalid YAML"),
        (RM_OK.replace("    negative_definition: The AI makes things up.\n", ""), "reward_model",
         "principles[0] 'Honest'.negative_definition: field required"),
        (RM_OK.replace("definition: The AI is brief.", "definition: '  '"), "reward_model",
         "principles[1] 'Concise'.definition"),
        (RM_OK.replace("name: Concise", "name: honest"), "reward_model",
         "principles[1] 'honest'.name: duplicate of principles[0]"),
        (RM_OK.replace("max_words: 100", "max_words: -1"), "reward_model",
         "principles[1] 'Concise'.rule.max_words"),
        (RM_OK.replace("    negative_definition: The AI makes things up.\n",
                       "    negative_definition: The AI makes things up.\n    colour: red\n"), "reward_model",
         "principles[0] 'Honest'.colour: unknown field"),
        (RM_OK.replace("kind: reward_model", "kind: rl"), "reward_model", "kind"),
        ("- just\n- a list\n", "reward_model", "expected a mapping"),
    ],
)
def test_corruptions_give_one_precise_line(text, kind, expected, tmp_path):
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text)
    with pytest.raises(PrincipleError) as exc:
        load_principles(tmp_path, kind)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)), msg
    assert expected in msg, msg


SA = """
version: 1
kind: self_align
preamble: A user talks with an assistant.
principles:
  - {name: Helpful, definition: Help the user.}
  - {name: Honest, definition: Say only true things.}
exemplars:
  - prompt: Hi?
    internal_thoughts: The user greets me. [Helpful] applies.
    answer: Hello! How can I help?
"""


def test_exemplar_citations_must_name_principles(tmp_path):
    parse_principles(SA, "self_align")
    with pytest.raises(PrincipleError, match=r"exemplars\[0\]: internal_thoughts: cites unknown principle '\[Kind\]'"):
        parse_principles(SA.replace("[Helpful]", "[Kind]"), "self_align", "self_align.yaml")


def test_rl_groups_and_duplicates_across_groups():
    rl = """
version: 1
kind: rl
groups:
  general: [{name: A, definition: d, weight: 2}]
  reasoning: [{name: B, definition: d}]
  red_teaming: [{name: a, definition: d}]
"""
    with pytest.raises(PrincipleError, match=r"groups.red_teaming\[0\] 'a'.name: duplicate of groups.general\[0\]"):
        parse_principles(rl, "rl")
    with pytest.raises(PrincipleError, match=r"groups.chitchat"):
        parse_principles(rl.replace("red_teaming:", "chitchat:"), "rl")


def test_missing_file(tmp_path):
    with pytest.raises(PrincipleError, match="principle file not found"):
        load_principles(tmp_path, "rl")
    assert set(PRINCIPLE_KINDS) == {"self_align", "reward_model", "rl"}


def test_file_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "reward_model.yaml"
    path.write_bytes("version: 1\nkind: reward_model\nprinciples:\n  - name: Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(PrincipleError) as exc:
        load_principles(tmp_path, "reward_model")
    msg = str(exc.value)
    assert str(path) in msg and "not UTF-8" in msg and "0xe9" in msg and "\n" not in msg
