"""The one shape of a progress line: ``"<task>: [step ]<done>/<total> <anything>"``.

Long steps (pre-training, generation, judging, training, RL) report progress as plain log lines
in this shape, so they read well in the Dagster UI and in ``salmon run -v``, and the compact view
of ``salmon run`` turns them into a progress bar with an ETA without a callback API.
"""

from __future__ import annotations

import re
from typing import NamedTuple

PROGRESS_LINE = re.compile(r"^(?P<task>[A-Za-z][\w .-]{0,39}): (?:step )?(?P<done>\d+)/(?P<total>\d+)(?!\d)")


class Progress(NamedTuple):
    task: str
    done: int
    total: int


def progress_line(task: str, done: int, total: int, detail: str = "") -> str:
    return f"{task}: {done}/{total}" + (f" {detail}" if detail else "")


def parse_progress(message: str) -> Progress | None:
    """The progress a log line reports, or None for any other line."""
    m = PROGRESS_LINE.match(message)
    if m is None or int(m["total"]) <= 0:
        return None
    return Progress(m["task"], int(m["done"]), int(m["total"]))
