"""Crash injection, so tests can kill a real process at an exact instruction.

``AMBROSIA_EDGE_FAILPOINTS="page-write:7"`` makes the process SIGKILL itself the 7th time it
reaches the point named ``page-write`` (in the middle of writing a log page, after half the
record reached the file). Unset, every check is one falsy global test. The points:
``page-write``; ``chunk-started`` (a new chunk's header is durable, its checkpoint is not yet);
``checkpoint-stored`` (just after a checkpoint is durable); ``upgraded`` (a live upgrade
converted the state in memory, nothing of it written yet).
"""

from __future__ import annotations

import os
import signal

_armed: dict[str, int] = {}
for _spec in filter(None, os.environ.get("AMBROSIA_EDGE_FAILPOINTS", "").split(",")):
    _name, _, _count = _spec.partition(":")
    _armed[_name.strip()] = int(_count or "1")

armed = bool(_armed)


def reached(name: str) -> bool:
    """Count a pass through ``name``; True when this pass is the one that must crash."""
    left = _armed.get(name)
    if left is None:
        return False
    _armed[name] = left - 1
    return left == 1


def crash() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
