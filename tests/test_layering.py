"""salmon_dag is the method as plain Python: no module of it imports Dagster or the Dagster layer."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "salmon_dag"
FORBIDDEN = ("dagster", "assets_defs")  # dagster also covers dagster_* packages


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in FORBIDDEN or top.startswith("dagster_")


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
            "import_module", "__import__"
        ) and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return found


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_no_salmon_dag_source_imports_dagster_or_the_dagster_layer():
    offences = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, module in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if _forbidden(module)
    ]
    assert not offences, "salmon_dag must stay Dagster-free:\n" + "\n".join(offences)


def test_importing_every_salmon_dag_module_loads_no_dagster():
    modules = _modules()
    assert "salmon_dag.training.harness" in modules and "salmon_dag.config" in modules
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('dagster', 'assets_defs')"
        " or m.startswith('dagster_'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing salmon_dag loaded {loaded[:10]}"


def test_the_launcher_names_no_stage_and_no_dagster_module():
    """launch/ runs any registered stage: it imports no stage module and holds no stage's name or
    module path, not even as a string (the worker module is its caller's to name)."""
    from salmon_dag import stage as contract
    from salmon_dag.reward_model.job import STAGE as RM
    from salmon_dag.rl.job import STAGE as RL
    from salmon_dag.training.sft_job import STAGE as SFT

    stage_modules = {s.module for s in (SFT, RM, RL)}
    names = {s.name for s in (SFT, RM, RL)} | stage_modules | {"assets_defs.train_worker"}
    assert set(contract._REGISTRY) >= {"sft", "reward_model", "ppo"}
    offences = []
    for path in sorted((PACKAGE / "launch").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        offences += [f"{path.name}:{line}: imports {module}" for line, module in _imports(tree)
                     if any(module == m or module.startswith(m + ".") for m in stage_modules)]
        offences += [f"{path.name}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]
    assert not offences, "salmon_dag/launch must stay generic:\n" + "\n".join(offences)


def test_the_dagster_definitions_import_no_model_libraries():
    # every `salmon` command, Dagster code server and run worker imports them: torch, datasets and
    # datasketch took 3 of their 4.3 s; a stage imports its libraries when it runs
    code = ("import sys, tempfile\n"
            "from assets_defs.definitions import build_definitions\n"
            "from salmon_dag.settings import Settings\n"
            "build_definitions(Settings('tiny', tempfile.mkdtemp(), 'principles')).resolve_asset_graph()\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'datasketch', 'trl', 'peft') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
