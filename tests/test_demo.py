"""`ambrosia-edge demo` runs end to end, kills its processes, and reports what it checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_demo_exits_zero_and_shows_the_exactly_once_result(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "demo",
            "--dir",
            str(tmp_path / "logs"),
            "--calls",
            "120",
            "--kills",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert sum("kill -9" in line for line in lines) == 4
    assert (
        "client saw 1, 2, 3, ..., 120: every call executed exactly once, in order, despite 4 kills"
        in result.stdout
    )
    assert "server's count, rebuilt from its log alone: 120" in result.stdout
