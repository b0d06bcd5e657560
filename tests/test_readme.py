"""The README's two set-up commands stay true: CI runs the test command verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", block, flags=re.S)


def test_exactly_two_setup_commands_and_ci_runs_the_test_one():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    run_cmd, test_cmd = commands
    assert run_cmd.strip() == "make run" and test_cmd.strip() == "make test"
    makefile = (ROOT / "Makefile").read_text()
    assert "$(VENV)/bin/salmon run" in makefile and "-m pytest" in makefile
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_cmd.strip() in ci_lines
