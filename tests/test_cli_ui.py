"""`salmon ui` as a newcomer runs it (issue 12 groundwork): it starts Dagster from the CLI's own
interpreter (no activated venv, no `dagster` on PATH needed), on an instance without telemetry and
without the community sign-up dialog."""

import os
import subprocess
import sys

from typer.testing import CliRunner

from assets_defs import cli


def test_ui_execs_dagster_from_the_same_interpreter(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(cli.os, "execv", lambda path, argv: calls.append((path, argv)))
    for var in ("DAGSTER_HOME", "SALMON_WAREHOUSE", "SALMON_PROFILE", "SALMON_PRINCIPLES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")  # no dagster (nor venv) on PATH
    result = CliRunner().invoke(cli.app, ["ui", "--warehouse", str(tmp_path / "wh"), "--port", "3111"])
    assert result.exit_code == 0, result.output
    ((path, argv),) = calls
    assert path == sys.executable and argv[1:] == ["-m", "dagster", "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3111"]
    home = tmp_path / "wh" / ".dagster"
    assert os.environ["DAGSTER_HOME"] == str(home)
    text = (home / "dagster.yaml").read_text()
    assert "nux:\n  enabled: false" in text and "telemetry:\n  enabled: false" in text
    # `python -m dagster` is a working entry point of this interpreter
    out = subprocess.run([sys.executable, "-m", "dagster", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "dagster" in out.stdout.lower()


def test_an_existing_instance_gets_the_sign_up_dialog_turned_off(tmp_path, monkeypatch):
    import dagster as dg

    from salmon_dag.settings import Settings

    home = tmp_path / "wh" / ".dagster"
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    for _ in range(2):  # idempotent
        Settings(warehouse_dir=str(tmp_path / "wh")).export()
    assert (home / "dagster.yaml").read_text().count("nux:") == 1
    instance = dg.DagsterInstance.from_config(str(home))  # Dagster accepts the config
    assert instance.get_settings("nux") == {"enabled": False}
    instance.dispose()
