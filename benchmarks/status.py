"""How the processes of a measurement report to the harness: JSON files in ``$BENCH_STATUS``.

Each file is written beside its name and renamed over it, so the harness, which polls them,
never reads half of one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def status_dir() -> Path:
    return Path(os.environ["BENCH_STATUS"])


def publish(name: str, data: dict[str, Any]) -> None:
    path = status_dir() / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def wait_for_go(poll: float = 0.002) -> dict[str, Any]:
    """Block until the harness writes ``go.json``; return the workload it names.

    (The immortals' observer waits the same way, but asynchronously, in benchmarks.apps.)
    """
    go = status_dir() / "go.json"
    while not go.exists():
        time.sleep(poll)
    params: dict[str, Any] = json.loads(go.read_text())
    return params
