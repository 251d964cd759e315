"""The local tier's writer lease: an ``flock`` on the log directory's ``LOCK`` file.

The lock is held by an open file description for the life of the store: the kernel drops it
when the process dies, so a crashed writer never blocks its restart, and a second process, on
this host or through a shared mount that honours flock, is refused. No stale writer can exist
while the lock is respected, so this lease needs no fencing epoch.

The file also records who holds the lock, as one line of JSON::

    {"pid": 4242, "host": "pi", "since": "2024-05-01T12:00:00Z"}

written after the lock is taken and emptied by a clean release, so a holder that crashed stays
recorded. Readers accept older and hand-written forms too (``123``, ``pid=123``, ``pid: 123``,
the same record as CBOR), because a tool that acts on a pid must never misread one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypedDict

import cbor2

from ambrosia_edge.errors import LogLockedError, StoreError
from ambrosia_edge.lease import LeaseHolder, LeaseInfo

from .diskio import CLOEXEC, describe, flush, make_directories, write_all
from .standbys import StandbyRecords

__all__ = ["LOCK_NAME", "FlockLease", "LockHolder", "read_lock_holder", "read_lock_pid"]

LOCK_NAME: Final = "LOCK"


class LockHolder(TypedDict):
    """Who holds a log's writer lock, as recorded in its LOCK file."""

    pid: int
    host: str
    since: str


def _lock_file(path: str | os.PathLike[str]) -> Path:
    lock = Path(path)
    return lock / LOCK_NAME if lock.is_dir() else lock


def read_lock_holder(path: str | os.PathLike[str]) -> LockHolder | None:
    """The writer recorded in a log's LOCK file (``path`` is the log directory or the file).

    ``None`` when the log has no LOCK, no current writer (a clean ``close`` empties the file) or
    one that has taken the lock but not yet written its record. A writer that crashed leaves its
    record behind, so a caller that acts on the pid should check it is alive on ``host``.
    """
    try:
        raw = _lock_file(path).read_bytes()
        data = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    pid, host, since = data.get("pid"), data.get("host"), data.get("since")
    if not (isinstance(pid, int) and isinstance(host, str) and isinstance(since, str)):
        return None
    return LockHolder(pid=pid, host=host, since=since)


_PID_RE: Final = re.compile(r"\bpid\b\"?\s*[:=]?\s*\"?(\d+)", re.IGNORECASE)


def _decoded(data: bytes) -> list[object]:
    """Every reading of a LOCK file's bytes, most specific first."""
    candidates: list[object] = []
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        with contextlib.suppress(ValueError):
            candidates.append(json.loads(text))
        match = _PID_RE.search(text)
        if match:
            candidates.append(int(match.group(1)))
        first = text.strip().splitlines()[0].strip() if text.strip() else ""
        if first.isascii() and first.isdigit():
            candidates.append(int(first))
    # cbor2 raises several exception types for input that is not CBOR.
    with contextlib.suppress(Exception):
        candidates.append(cbor2.loads(data))
    return candidates


def _pid_in(candidates: list[object]) -> int | None:
    for candidate in candidates:
        pid = candidate.get("pid") if isinstance(candidate, dict) else candidate
        if isinstance(pid, str) and pid.isascii() and pid.isdigit():
            pid = int(pid)
        if isinstance(pid, int) and not isinstance(pid, bool) and pid > 1:
            return pid
    return None


def read_lock_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in a LOCK file, or None when there is no usable one.

    Accepts ``123``, ``pid 123``, ``pid=123``, ``pid: 123`` (on any line), JSON ``{"pid": 123}``
    and the same as CBOR. Pids 0 and 1 and negative numbers are refused: ``kill`` treats them as
    process groups or init, and a corrupt file must never turn a request into that.
    """
    try:
        data = _lock_file(path).read_bytes()
    except OSError:
        return None
    return _pid_in(_decoded(data))


def _holder_in(data: bytes) -> LeaseHolder | None:
    candidates = _decoded(data)
    pid = _pid_in(candidates)
    if pid is None:
        return None
    host = since = address = None
    for candidate in candidates:
        if isinstance(candidate, dict):
            if isinstance(candidate.get("host"), str):
                host = str(candidate["host"])
            if isinstance(candidate.get("since"), str):
                since = str(candidate["since"])
            if isinstance(candidate.get("address"), str):
                address = str(candidate["address"])
            break
    return LeaseHolder(pid=pid, host=host, since=since, address=address)


def _locked_message(directory: Path, holder: LockHolder | None) -> str:
    if holder is None:
        who = "another process (it has not recorded its pid yet)"
    else:
        who = f"pid {holder['pid']} on host {holder['host']} since {holder['since']}"
    return f"log {directory} is in use by {who}; stop that process or pass another --log"


class FlockLease:
    """The writer lease of one log directory (see the module's docstring)."""

    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self._standbys = StandbyRecords(directory)
        self.resource = directory.as_uri()
        self.fsync = fsync
        self._fd = -1
        self._holder: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"FlockLease({str(self.directory)!r}, {'held' if self.held else 'not held'})"

    @property
    def held(self) -> bool:
        return self._fd >= 0

    @property
    def epoch(self) -> int | None:
        return None

    @property
    def path(self) -> Path:
        return self.directory / LOCK_NAME

    def acquire(self) -> None:
        """Take the lock (creating the directory if needed) and record this process in it."""
        if self._fd >= 0:
            return
        directory = self.directory
        try:
            make_directories(directory, fsync=self.fsync)
            fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT | CLOEXEC, 0o644)
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} opening log directory {directory}; {hint}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LogLockedError(_locked_message(directory, read_lock_holder(directory))) from None
        except OSError as exc:
            os.close(fd)
            what, _ = describe(exc)
            raise StoreError(
                f"{what} locking log {directory}; cannot take the writer role"
            ) from exc
        # held from here on, so that release() empties the record whatever interrupts us (a
        # signal handler that raises may run as soon as the record's flush returns)
        self._fd = fd
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        holder: dict[str, object] = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": since,
        }
        self._holder = holder
        try:
            os.ftruncate(fd, 0)
            write_all(fd, json.dumps(holder).encode() + b"\n", 0)
            if self.fsync:
                flush(fd)
        except OSError as exc:
            self._fd = -1
            os.close(fd)
            what, hint = describe(exc)
            raise StoreError(f"{what} writing {directory / LOCK_NAME}; {hint}") from exc

    def announce(self, address: str) -> None:
        """Add the holder's listen address to its record (for ``status``); best effort."""
        if self._fd < 0:
            return
        self._holder["address"] = address
        with contextlib.suppress(OSError):
            data = json.dumps(self._holder).encode() + b"\n"
            os.ftruncate(self._fd, 0)
            write_all(self._fd, data, 0)

    # -- standbys (ambrosia_edge.standby), recorded beside the lease -----------------------------

    def record_standby(self, address: str | None) -> None:
        """Record (again) this process as a standby of the log, listening on ``address``."""
        self._standbys.record(address)

    def drop_standby(self) -> None:
        self._standbys.remove()

    def standbys(self) -> list[dict[str, Any]]:
        """The standbys following the log now: pid, host, address."""
        return self._standbys.live()

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            # Empty the record first so readers stop naming a writer that has gone.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def info(self) -> LeaseInfo:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return LeaseInfo("none", "no LOCK file: no writer has opened this log here")
        except OSError as exc:
            return LeaseInfo("unknown", f"the LOCK file cannot be read: {exc.strerror}")
        if not data.strip():
            return LeaseInfo("free", "the last writer stopped cleanly")
        holder = _holder_in(data)
        if holder is None:
            return LeaseInfo("unknown", "the LOCK file names no writer")
        return LeaseInfo("held", f"recorded in {self.path}", holder)
