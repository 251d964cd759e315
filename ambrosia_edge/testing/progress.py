"""A child immortal's progress for the test that started it: a few state fields in a file.

A test that runs an immortal as a real process (``ambrosia-edge run``, SIGKILLed and started
again) cannot look into it. The immortal's ``becoming_primary`` spawns :func:`report_progress`,
which writes the fields it names, and the process id, to ``$AMBROSIA_TEST_STATUS/NAME.json``
every 20 ms; the test waits on that file with a deadline. It only reads the state, so replay
and the log are the same with it or without it, and without the variable it writes nothing: the
same class runs unchanged outside a test.

::

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("count", "done"))
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio

from ..immortal import Immortal

__all__ = ["STATUS_ENV", "report_progress"]

#: the directory the files go to
STATUS_ENV = "AMBROSIA_TEST_STATUS"


async def report_progress(obj: Immortal, fields: Iterable[str], *, every: float = 0.02) -> None:
    """Write ``fields`` of ``obj`` to its status file every ``every`` seconds, replacing it
    whole each time (a reader never sees half a file)."""
    directory = os.environ.get(STATUS_ENV)
    if not directory:
        return
    names = tuple(fields)
    path = Path(directory) / f"{obj.name}.json"
    tmp = path.with_suffix(".tmp")
    while True:
        data: dict[str, Any] = {f: getattr(obj, f) for f in names}
        data["pid"] = os.getpid()
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        await anyio.sleep(every)
