"""Standbys recorded next to a log's lease, for tiers that keep a log in a directory.

A standby (:mod:`ambrosia_edge.standby`) writes a small record of itself into the log
directory and rewrites it every second or so while it follows the log::

    standby-pi-4242.json     {"pid": 4242, "host": "pi", "address": "10.0.0.6:7001",
                              "renewed": 1733353200.25}

It lets the primary know that a standby writes the checkpoints (so it need not pause for one),
and ``status`` name the standbys. A record counts while its process runs (judged by pid on the
same host) or, from another host, while it was rewritten within :data:`STANDBY_LIFETIME`
seconds; a stale record is ignored and removed by the next standby of the same name. Nothing
depends on these records for correctness: a standby that is believed present but writes no
checkpoint only makes the primary checkpoint itself again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Final

from ambrosia_edge.lease import process_alive

__all__ = ["STANDBY_LIFETIME", "StandbyRecords"]

#: Seconds a standby's record counts after its last rewrite, when read on another host.
STANDBY_LIFETIME: Final = 10.0
_NAME_RE: Final = re.compile(r"standby-.+-(\d+)\.json")


class StandbyRecords:
    """The standby records of one log directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._mine: Path | None = None

    def record(self, address: str | None) -> None:
        """Write (or rewrite) this process's record; best effort."""
        host = socket.gethostname()
        path = self.directory / f"standby-{host}-{os.getpid()}.json"
        data = {"pid": os.getpid(), "host": host, "address": address, "renewed": time.time()}
        tmp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data) + "\n")
            os.replace(tmp, path)
            self._mine = path

    def remove(self) -> None:
        """Remove this process's record (it stops, or it is the primary now)."""
        mine, self._mine = self._mine, None
        if mine is not None:
            with contextlib.suppress(OSError):
                mine.unlink()

    def live(self) -> list[dict[str, Any]]:
        """The records of standbys that still run, by host and pid."""
        here = socket.gethostname()
        found: list[dict[str, Any]] = []
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        for name in names:
            if _NAME_RE.fullmatch(name) is None:
                continue
            try:
                record = json.loads((self.directory / name).read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict):
                continue
            pid, renewed = record.get("pid"), record.get("renewed")
            if record.get("host") == here and isinstance(pid, int):
                alive = process_alive(pid)
            else:
                alive = isinstance(renewed, int | float) and time.time() - renewed < (
                    STANDBY_LIFETIME
                )
            if alive:
                found.append(record)
        return sorted(found, key=lambda r: (str(r.get("host")), str(r.get("pid"))))
