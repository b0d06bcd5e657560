"""The Dagster layer: graph shape, code versions, and the principle-file sensor."""

import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets_defs.automation import record_observations
from assets_defs.definitions import build_definitions
from assets_defs.principles import observe_versions
from salmon_dag.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings(tmp_path) -> Settings:
    shutil.copytree(ROOT / "principles", tmp_path / "principles")
    return Settings("tiny", str(tmp_path / "warehouse"), str(tmp_path / "principles"))


def test_graph_shape_and_code_versions(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"principles/self_align", "principles/reward_model", "principles/rl", "prompt_pool",
            "prompt_pool_rejects", "base_model"} <= keys
    for kind in ("self_align", "reward_model", "rl"):
        # each principle table depends on its own file only: an rl edit cannot reach self-align
        assert graph.get(dg.AssetKey(["principles", kind])).parent_keys == {dg.AssetKey(["principle_files", kind])}
        assert graph.get(dg.AssetKey(["principle_files", kind])).is_observable
    for key in graph.materializable_asset_keys:
        # without a code version every materialization would look new to dependents
        assert graph.get(key).code_version, key


def test_code_version_follows_the_profile(settings, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("extends: tiny\nprompt_pool:\n  eval_fraction: 0.2\n")
    a = build_definitions(settings).resolve_asset_graph()
    b = build_definitions(Settings(str(other), settings.warehouse_dir, settings.principles_dir)).resolve_asset_graph()
    pool, base = dg.AssetKey("prompt_pool"), dg.AssetKey("base_model")
    assert a.get(pool).code_version != b.get(pool).code_version
    assert a.get(base).code_version == b.get(base).code_version


def test_sensor_observes_only_changed_files(settings):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("principle_file_sensor")

    def tick(instance):
        result = sensor(dg.build_sensor_context(instance=instance))
        for event in getattr(result, "asset_events", []):  # what the daemon does with them
            instance.report_runless_asset_event(event)
        return result

    with dg.instance_for_test() as instance:
        assert len(tick(instance).asset_events) == 3
        assert isinstance(tick(instance), dg.SkipReason)
        rl = settings.principles_path / "rl.yaml"
        rl.write_text("# comment only\n" + rl.read_text())
        assert isinstance(tick(instance), dg.SkipReason)
        rl.write_text(rl.read_text().replace("definition: ", "definition: Truly, ", 1))
        assert [e.asset_key.to_user_string() for e in tick(instance).asset_events] == ["principle_files/rl"]
        # an edit `salmon run` / `salmon status` observed first is not observed again by the sensor
        rl.write_text(rl.read_text().replace("definition: ", "definition: Really, ", 1))
        assert [k.to_user_string() for k in record_observations(instance, observe_versions(settings))] == ["principle_files/rl"]
        assert isinstance(tick(instance), dg.SkipReason)


def test_principle_coverage_check_reads_the_materialized_principles(settings):
    """The check compares rm_training_data with the principle set it was built from (the
    materialized table), not with the file, which may have been edited since."""
    import json

    import polars as pl

    from assets_defs.preferences import build_preference_assets
    from assets_defs.resources import SalmonResource
    from salmon_dag.principles import load_principles, to_frame
    from salmon_dag.warehouse import Warehouse

    pset = load_principles(settings.principles_dir, "reward_model")
    names = [p.name for _, p in pset.principles()]
    wh = Warehouse(settings.warehouse_dir)
    wh.write_table("principles/reward_model", to_frame(pset))
    used = [json.dumps([{"name": n, "negated": False, "text": "t"}]) for n in names[1:]]  # names[0] never used
    wh.write_table("rm_training_data", pl.DataFrame({"principles": used}))
    # a principle added to the file after the build is not expected in the data
    path = Path(settings.principles_dir) / "reward_model.yaml"
    path.write_text(path.read_text() + "  - name: Brand New\n    definition: New.\n    negative_definition: Old.\n")

    def run(profile: str) -> dg.AssetCheckResult:
        check = next(d for d in build_preference_assets(settings)
                     if isinstance(d, dg.AssetChecksDefinition) and d.check_key.name == "covers_every_principle")
        return check(salmon=SalmonResource(profile=profile, warehouse_dir=settings.warehouse_dir,
                                           principles_dir=settings.principles_dir))

    every = Path(settings.warehouse_dir).parent / "every.yaml"  # tiny samples only its five verifiable ones
    every.write_text("extends: tiny\naggregation:\n  include_principles: null\n")
    result = run(str(every))
    assert not result.passed and result.metadata["missing"].value == str([names[0]])
    excluded = Path(settings.warehouse_dir).parent / "excluding.yaml"
    excluded.write_text(f"extends: every.yaml\naggregation:\n  exclude_principles: [{json.dumps(names[0])}]\n")
    assert run(str(excluded)).passed
    assert run("tiny").passed  # its include_principles are all in the data


def test_a_new_judge_template_makes_judgements_stale(settings, monkeypatch):
    import assets_defs.preferences as prefs

    key = dg.AssetKey("synthetic_preferences")
    before = build_definitions(settings).resolve_asset_graph().get(key).code_version
    monkeypatch.setattr(prefs, "JUDGE_TEMPLATE_VERSION", "999")
    after = build_definitions(settings).resolve_asset_graph().get(key).code_version
    assert before != after


def test_a_broken_reward_model_file_still_loads_the_definitions(settings):
    # tiny picks pairs by reward_model.yaml's rules (rule_contrast), so the pairs' code version reads
    # that file: a broken file must leave the principles asset to fail it in one line, not crash here
    key = dg.AssetKey("response_pairs")
    before = build_definitions(settings).resolve_asset_graph().get(key).code_version
    rm = Path(settings.principles_dir) / "reward_model.yaml"
    rm.write_text(rm.read_text() + "\n  - name: Half\n    definition: only half of it\n")
    after = build_definitions(settings).resolve_asset_graph().get(key).code_version
    assert after != before


def _declarations() -> list:
    import importlib

    from assets_defs.decl import AssetDecl

    found = []
    for name in ("principles", "prompt_pool", "base_model", "self_align", "preferences", "reward_model", "rl", "benchmarks"):
        for value in vars(importlib.import_module(f"assets_defs.{name}")).values():
            found += [v for v in (value.values() if isinstance(value, dict) else [value]) if isinstance(v, AssetDecl)]
    return found


def test_every_asset_is_declared_once_and_its_code_version_comes_from_the_declaration(settings):
    graph = build_definitions(settings).resolve_asset_graph()
    decls = {d.key: d for d in _declarations()}
    assert set(decls) == set(graph.materializable_asset_keys)
    profile = settings.profile
    for key, decl in decls.items():
        node = graph.get(key)
        assert node.code_version == decl.code_version(settings), key
        assert decl.config_hash(profile) in node.code_version  # what lineage records as config_hash
        assert node.parent_keys == set(decl.dependencies(settings)), key


@pytest.mark.parametrize("judge, model_dep", [("sft_model", "sft_model"), ("base_model", "base_model"),
                                              ("/models/my-judge", None)])
def test_synthetic_preferences_depends_on_the_judge_it_loads(settings, tmp_path, judge, model_dep):
    profile = tmp_path / "judge.yaml"
    profile.write_text(f"extends: tiny\njudge:\n  model: {judge}\n")
    graph = build_definitions(Settings(str(profile), settings.warehouse_dir, settings.principles_dir)).resolve_asset_graph()
    parents = {k.to_user_string() for k in graph.get(dg.AssetKey("synthetic_preferences")).parent_keys}
    models = parents & {"sft_model", "base_model"}
    assert models == ({model_dep} if model_dep else set())
    assert {"response_pairs", "principles/reward_model"} <= parents


def test_sft_model_is_stale_when_the_training_device_changes(settings, tmp_path):
    def versions(overrides: str) -> dict[str, str]:
        path = tmp_path / f"profile{len(list(tmp_path.glob('*.yaml')))}.yaml"
        path.write_text("extends: tiny\n" + overrides)
        graph = build_definitions(Settings(str(path), settings.warehouse_dir, settings.principles_dir)).resolve_asset_graph()
        return {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}

    base, device, batch = versions(""), versions("engine: {device: cuda}\n"), versions("engine: {max_batch_size: 3}\n")
    assert base["sft_model"] != device["sft_model"]  # it trains on engine.device
    assert base["sft_model"] == batch["sft_model"]  # but reads no other engine field
    assert base["response_pairs"] != batch["response_pairs"]  # generation does


def test_editing_a_benchmark_question_file_makes_only_the_benchmarks_stale(settings, tmp_path):
    questions = tmp_path / "questions.jsonl"
    questions.write_text('{"instruction": "Say hi."}\n')
    profile = tmp_path / "bench.yaml"
    profile.write_text(f"extends: tiny\nbenchmarks:\n  mt_bench: {{questions: {{source: {questions}}}}}\n")

    def versions() -> dict[str, str]:
        graph = build_definitions(Settings(str(profile), settings.warehouse_dir, settings.principles_dir)).resolve_asset_graph()
        return {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}

    before = versions()
    questions.write_text('{"instruction": "Say hello."}\n')
    after = versions()
    assert {k for k in before if before[k] != after[k]} == {"benchmark_scores", "benchmark_outputs"}


def test_a_study_from_a_multi_asset_output_rebuilds_what_reads_its_siblings(settings):
    from assets_defs.cli import _built_with
    from assets_defs.project import resolve_selection
    from salmon_dag.study import StudyPlan

    # ppo_steps is one output of the RL multi-asset: its run rebuilds the policy, so the benchmarks
    # that read the policy are part of the tail (key:ppo_steps+ alone left them stale)
    siblings = _built_with(settings, "ppo_steps")
    assert set(siblings) == {"ppo_policy", "ppo_samples"}
    plan = StudyPlan(profile="tiny", warehouse=Path("w"), principles=Path("p"), out=Path("o"), seeds=[1],
                     precision=None, from_asset="ppo_steps", steer=False, intervention=False, from_siblings=siblings)
    selection = plan.run_args()[-1]
    tail = {k.to_user_string() for k in resolve_selection(build_definitions(settings), selection)}
    assert {"ppo_steps", "ppo_policy", "ppo_samples", "benchmark_outputs", "benchmark_scores"} <= tail
    assert "reward_model" not in tail and _built_with(settings, "reward_model") == ()
