"""Principle files: parsing, validation, hashing and the table form.

Three human-written YAML files drive the method (see ``principles/``):

* ``self_align.yaml``   — principles + in-context exemplars for Self-Align SFT;
* ``reward_model.yaml`` — principles with definition and negative definition for the judge/RM;
* ``rl.yaml``           — weighted RL-time principles grouped by question type.

Every problem raises :class:`PrincipleError` with one line naming file, entry and field. The
content hash is taken over the *parsed* data, so comment or formatting edits change nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from salmon_dag.config import QUESTION_TYPES, QuestionType, stable_hash
from salmon_dag.rules import AnyRule, Rule
from salmon_dag.stage import DataStage, Reads, StageInputs, TableResult

PRINCIPLE_KINDS: tuple[str, ...] = ("self_align", "reward_model", "rl")
# Exemplar internal thoughts cite principles as "[Name]".
CITATION = re.compile(r"\[([^\[\]]+)\]")

Text = Annotated[str, Field(min_length=1, pattern=r"\S")]


class PrincipleError(ValueError):
    """A principle file is missing, unparsable or invalid (message is one line)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Principle(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[^\[\]]*\S[^\[\]]*$")]
    definition: Text
    negative_definition: Text | None = None
    weight: float = Field(default=1.0, gt=0)
    rule: Rule | None = None


class RewardModelPrinciple(Principle):
    negative_definition: Text  # negation needs it, so it is required here


class Exemplar(_Strict):
    prompt: Text
    internal_thoughts: Text
    answer: Text


class SelfAlignFile(_Strict):
    version: Literal[1]
    kind: Literal["self_align"]
    preamble: Text
    principles: list[Principle] = Field(min_length=1)
    exemplars: list[Exemplar] = Field(min_length=1)


class RewardModelFile(_Strict):
    version: Literal[1]
    kind: Literal["reward_model"]
    principles: list[RewardModelPrinciple] = Field(min_length=1)


class RLFile(_Strict):
    version: Literal[1]
    kind: Literal["rl"]
    groups: dict[QuestionType, list[Principle]]
    # shown to the reward model at every RL step, whatever the question type (SALMON's fixed
    # lines against reward hacking); never sampled, so they carry no weight
    always_on: list[Principle] = []


_SCHEMAS: dict[str, type[BaseModel]] = {
    "self_align": SelfAlignFile,
    "reward_model": RewardModelFile,
    "rl": RLFile,
}


@dataclass(frozen=True)
class PrincipleSet:
    """One validated principle file."""

    kind: str
    path: Path
    content_hash: str
    data: SelfAlignFile | RewardModelFile | RLFile

    def principles(self) -> list[tuple[str | None, Principle]]:
        """(question_type or None, principle) in file order (RL: the sampled groups only)."""
        if isinstance(self.data, RLFile):
            return [(qt, p) for qt in QUESTION_TYPES for p in self.data.groups.get(qt, [])]
        return [(None, p) for p in self.data.principles]

    def always_on(self) -> list[Principle]:
        """RL principles shown at every step (empty for other kinds)."""
        return list(self.data.always_on) if isinstance(self.data, RLFile) else []


@dataclass(frozen=True)
class PrincipleText:
    """A reward-model principle as shown to the RM (its positive and negative definition), with
    its verifiable rule, if any (which decides how the rule acts under ``rule_scope: global``)."""

    name: str
    definition: str
    negative_definition: str
    rule: AnyRule | None = None


def principle_texts(pset: PrincipleSet) -> list[PrincipleText]:
    """The principles of a reward-model :class:`PrincipleSet`, as shown to
    the judge and the reward model."""
    return [PrincipleText(p.name, p.definition, p.negative_definition, p.rule) for _, p in pset.principles()]


def principle_path(principles_dir: Path | str, kind: str) -> Path:
    return Path(principles_dir) / f"{kind}.yaml"


def _entry_label(raw: Any, loc: tuple) -> str:
    """Human-readable location: ``principles[3] 'Name': definition``."""
    parts: list[str] = []
    node = raw
    for i, key in enumerate(loc):
        if isinstance(key, int):
            parts[-1] = f"{parts[-1]}[{key}]" if parts else f"[{key}]"
        elif key in ("forbidden_phrase", "language_match", "length") and i and loc[i - 1] == "rule":
            continue  # pydantic's discriminator tag adds noise to the path
        else:
            parts.append(str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
        if isinstance(key, int) and isinstance(node, dict) and isinstance(node.get("name"), str):
            parts[-1] += f" '{node['name']}'"
    return ".".join(parts) or "(top level)"


def parse_principles(text: str, kind: str, path: Path | str = "<string>") -> PrincipleSet:
    """Parse and validate the YAML text of one principle file of ``kind``."""
    if kind not in _SCHEMAS:
        raise PrincipleError(f"{path}: unknown principle kind '{kind}' (expected one of {PRINCIPLE_KINDS})")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PrincipleError(f"{path}:{where}: invalid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise PrincipleError(f"{path}: expected a mapping with 'version' and 'kind'")
    try:
        data = _SCHEMAS[kind].model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        raise PrincipleError(f"{path}: {_entry_label(raw, err['loc'])}: {msg}") from None
    _check_names(data, path)
    if isinstance(data, SelfAlignFile):
        _check_citations(data, path)
    content_hash = stable_hash(data.model_dump(mode="json"))
    return PrincipleSet(kind=kind, path=Path(path), content_hash=content_hash, data=data)


def load_principles(principles_dir: Path | str, kind: str) -> PrincipleSet:
    """Read and validate ``<principles_dir>/<kind>.yaml``."""
    path = principle_path(principles_dir, kind)
    if not path.is_file():
        raise PrincipleError(f"{path}: principle file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrincipleError(f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
                             "save the file as UTF-8") from None
    return parse_principles(text, kind, path)


def table_name(kind: str) -> str:
    """The warehouse table of a validated principle file (``principles/<kind>``)."""
    return f"principles/{kind}"


def principle_table(inputs: StageInputs, kind: str) -> TableResult:
    """The validated principle file of ``kind`` as its table (:func:`to_frame`), with its hash."""
    pset = load_principles(inputs.principles_dir, kind)
    return TableResult(to_frame(pset), {"principle_file": str(pset.path)}, principle_hash=pset.content_hash)


def table_stage(kind: str) -> DataStage:
    """The stage of table ``principles/<kind>``: it reads its file only, no profile config."""
    return DataStage(table_name(kind), Reads(assets=(f"principle_files/{kind}",)), principle_table)


def checked_principles(warehouse: Any, principles_dir: Path | str, kind: str) -> PrincipleSet:
    """The principle file of ``kind``, checked against its table in ``warehouse``: a stage must not
    mix a newer file with data built from the older one."""
    pset = load_principles(principles_dir, kind)
    table = warehouse.read_table(table_name(kind))
    if table.height and table["principle_hash"][0] != pset.content_hash:
        raise RuntimeError(f"{pset.path} changed since {table_name(kind)} was built; rebuild it first (salmon run)")
    return pset


def _check_names(data: BaseModel, path: Path | str) -> None:
    seen: dict[str, str] = {}
    if isinstance(data, RLFile):
        groups = [(f"groups.{g}", ps) for g, ps in data.groups.items()] + [("always_on", data.always_on)]
    else:
        groups = [("principles", data.principles)]
    for field, principles in groups:
        for i, p in enumerate(principles):
            key = p.name.strip().casefold()
            if key in seen:
                raise PrincipleError(
                    f"{path}: {field}[{i}] '{p.name}'.name: duplicate of {seen[key]}"
                )
            seen[key] = f"{field}[{i}]"


def _check_citations(data: SelfAlignFile, path: Path | str) -> None:
    names = {p.name for p in data.principles}
    for i, ex in enumerate(data.exemplars):
        for cited in CITATION.findall(ex.internal_thoughts):
            if cited not in names:
                raise PrincipleError(
                    f"{path}: exemplars[{i}]: internal_thoughts: cites unknown principle '[{cited}]'"
                )


def file_hash(path: Path | str) -> str:
    """Data version of a principle file: hash of the parsed YAML, or of the raw bytes if unparsable.

    Used by observations, which must not fail on a broken file (the materialization reports it).
    """
    raw = Path(path).read_bytes()
    try:
        parsed = yaml.safe_load(raw)
    except yaml.YAMLError:
        return "unparsable-" + stable_hash(raw.hex())
    return stable_hash(parsed)


def to_rows(pset: PrincipleSet) -> list[dict[str, Any]]:
    """Table form: one row per principle, then one per always-on RL principle (``entry_kind``
    ``always_on``) or exemplar (self-align)."""
    rows: list[dict[str, Any]] = []
    for i, (qt, p) in enumerate(pset.principles()):
        rows.append(
            {
                "file_kind": pset.kind,
                "entry_kind": "principle",
                "idx": i,
                "name": p.name,
                "question_type": qt,
                "definition": p.definition,
                "negative_definition": p.negative_definition,
                "weight": p.weight,
                "rule": json.dumps(p.rule.model_dump(exclude_none=True)) if p.rule else None,
                "prompt": None,
                "internal_thoughts": None,
                "answer": None,
            }
        )
    for i, p in enumerate(pset.always_on()):
        rows.append({
            "file_kind": pset.kind, "entry_kind": "always_on", "idx": i, "name": p.name, "question_type": None,
            "definition": p.definition, "negative_definition": p.negative_definition, "weight": None,
            "rule": json.dumps(p.rule.model_dump(exclude_none=True)) if p.rule else None,
            "prompt": None, "internal_thoughts": None, "answer": None,
        })
    if isinstance(pset.data, SelfAlignFile):
        for i, ex in enumerate(pset.data.exemplars):
            rows.append(
                {
                    "file_kind": pset.kind,
                    "entry_kind": "exemplar",
                    "idx": i,
                    "name": f"exemplar-{i + 1}",
                    "question_type": None,
                    "definition": None,
                    "negative_definition": None,
                    "weight": None,
                    "rule": None,
                    "prompt": ex.prompt,
                    "internal_thoughts": ex.internal_thoughts,
                    "answer": ex.answer,
                    }
            )
    return rows


PRINCIPLE_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "file_kind": pl.Utf8,
    "entry_kind": pl.Utf8,
    "idx": pl.Int64,
    "name": pl.Utf8,
    "question_type": pl.Utf8,
    "definition": pl.Utf8,
    "negative_definition": pl.Utf8,
    "weight": pl.Float64,
    "rule": pl.Utf8,
    "prompt": pl.Utf8,
    "internal_thoughts": pl.Utf8,
    "answer": pl.Utf8,
}


def to_frame(pset: PrincipleSet) -> pl.DataFrame:
    return pl.DataFrame(to_rows(pset), schema=PRINCIPLE_TABLE_SCHEMA)
