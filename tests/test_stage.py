"""The stage contract (salmon_dag/stage.py): every asset takes its dependencies and config sections
from its stage's declaration, and a stage is handed only what it declared."""

from __future__ import annotations

import ast
from pathlib import Path

import polars as pl
import pytest

from salmon_dag.config import load_profile
from salmon_dag.stage import Reads, StageInputs
from salmon_dag.warehouse import Warehouse

ROOT = Path(__file__).resolve().parents[1]


def _asset_decl_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted((ROOT / "assets_defs").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "AssetDecl":
                calls.append((path.name, node))
    return calls


def test_no_asset_declares_its_dependencies_or_sections_by_hand():
    calls = _asset_decl_calls()
    assert len(calls) >= 13  # every asset of the graph (the prompt pool's rejects share its pool's)
    for name, call in calls:
        kwargs = {k.arg: k.value for k in call.keywords}
        assert not {"deps", "sections"} & set(kwargs), f"{name}:{call.lineno}"
        reads = kwargs.get("reads")
        # the stage's own declaration (STAGE.reads, table_stage(kind).reads), never a literal
        assert isinstance(reads, ast.Attribute) and reads.attr == "reads", f"{name}:{call.lineno}"


def test_each_asset_depends_on_what_its_stage_reads():
    from assets_defs.definitions import build_definitions
    from salmon_dag.benchmarks.stage import STAGE as BENCH
    from salmon_dag.pairs import STAGE as PAIRS
    from salmon_dag.preferences import STAGE as PREFS
    from salmon_dag.reward_model.bench import STAGE as RM_BENCH
    from salmon_dag.reward_model.stage import EVAL_STAGE
    from salmon_dag.rl.job import STAGE as RL
    from salmon_dag.rm_training_data import STAGE as RM_DATA
    from salmon_dag.self_align import STAGE as SFT_DATA
    from salmon_dag.settings import Settings

    settings = Settings("tiny", "/tmp/salmon-unused-warehouse", str(ROOT / "principles"))
    graph = build_definitions(settings).resolve_asset_graph()
    for asset, stage in (("self_align_sft_data", SFT_DATA), ("response_pairs", PAIRS), ("synthetic_preferences", PREFS),
                         ("rm_training_data", RM_DATA), ("reward_model_eval", EVAL_STAGE), ("rm_benchmarks", RM_BENCH),
                         ("ppo_policy", RL),
                         ("benchmark_scores", BENCH)):
        parents = {k.to_user_string() for k in graph.get(next(k for k in graph.materializable_asset_keys
                                                              if k.to_user_string() == asset)).parent_keys}
        assert parents == set(stage.reads.all_assets(settings.profile)), asset


def test_a_stage_is_handed_only_what_it_declared(tmp_path):
    from salmon_dag.config import PairsConfig

    wh = Warehouse(tmp_path / "wh")
    wh.write_table("response_pairs", pl.DataFrame({"pair_id": ["p1"]}))
    wh.write_table("prompt_pool", pl.DataFrame({"prompt_id": ["q1"]}))
    profile = load_profile("tiny")
    inputs = StageInputs("demo", Reads(("pairs", "engine.device"), ("response_pairs",)), profile, wh, tmp_path)
    assert inputs.table("response_pairs")["pair_id"].to_list() == ["p1"]
    assert isinstance(inputs.section("pairs"), PairsConfig) and inputs.section("engine.device") == profile.engine.device
    assert inputs.seed == profile.seed and inputs.previous() is None
    for read in (lambda: inputs.table("prompt_pool"), lambda: inputs.model("sft_model"),
                 lambda: inputs.principles("rl"), lambda: inputs.section("judge"), lambda: inputs.section("engine")):
        with pytest.raises(KeyError, match="did not declare"):
            read()


@pytest.mark.parametrize("judge, reads", [("sft_model", ("sft_model",)), ("base_model", ("base_model",)),
                                          ("/models/my-judge", ())])
def test_the_judging_stage_reads_the_model_the_profile_names(judge, reads):
    from salmon_dag.preferences import STAGE

    profile = load_profile("tiny", {"judge": {"model": judge}})
    assert STAGE.reads.all_assets(profile) == ("response_pairs", "principles/reward_model", *reads)
