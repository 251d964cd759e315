"""The shared-mount tier's writer lease: fencing by epoch, with no ``flock`` and no NLM.

Locks are absent or merely advisory on many shares (NFS without lockd, SMB, Azure Files), and a
lock that the server drops when a client looks dead does not stop that client, paused but alive,
from writing after it wakes. So the right to write is an *epoch*: a number that grows with every
holder. Each holder's record is its own file, created exclusively::

    lease-00000007.json   {"epoch": 7, "pid": 4242, "host": "pi", "since": "...",
                           "renewed": 1733353200.25, "ttl_s": 1.5, "address": "10.0.0.5:7001"}

* Taking the lease: read the newest record. If it is held and alive, refuse (LogLockedError
  naming the holder). It has lapsed when its holder released it, when the holder ran on this
  host and its pid is gone or its renewal is older than the lease time (one clock, so the times
  compare), or, for a holder elsewhere, when the record has not changed for a whole lease time
  as watched here (no clocks compared across machines). Then create the record of the next
  epoch with ``O_EXCL``: of two processes racing for it, one wins and the other is refused.
* Renewing: a thread rewrites the holder's own record (beside it, then renamed over it) every
  quarter of the lease time and then looks for a record with a larger epoch. A holder only ever
  writes its own record, so a deposed one cannot spoil its successor's.
* Fencing a write: a write counts once it is flushed *and* the holder has since confirmed that
  no larger epoch exists. A successor reads the log only after creating its record, so a write
  confirmed that way is in what the successor reads, and anything later is cut off by the
  successor's seal (see :mod:`.shared`). Checking costs a directory listing; a holder whose last
  renewal began less than three quarters of the lease time ago skips it, since no one can have
  taken over yet (clock rates, not clocks, are assumed to agree).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from ambrosia_edge.errors import DeposedError, LogLockedError, StoreError
from ambrosia_edge.lease import LeaseHolder, LeaseInfo, process_alive

from .diskio import (
    CLOEXEC,
    describe,
    flush,
    flush_directory,
    make_directories,
    write_all,
    write_file,
)
from .standbys import StandbyRecords

__all__ = ["DEFAULT_LEASE_S", "EpochLease", "lease_name"]

#: How long a holder that stopped renewing keeps the lease; a standby takes over after this.
DEFAULT_LEASE_S: Final = 1.5
_LEASE_RE: Final = re.compile(r"lease-(\d{8,})\.json")
#: Records kept behind the current one (status and post-mortems read the previous holder).
_KEEP: Final = 2


def lease_name(epoch: int) -> str:
    return f"lease-{epoch:08d}.json"


class EpochLease:
    """The epoch lease of one log directory on a shared mount (see the module's docstring)."""

    def __init__(self, directory: Path, *, ttl: float = DEFAULT_LEASE_S, fsync: bool = True):
        self.directory = directory
        self._standbys = StandbyRecords(directory)
        self.resource = "nfs://" + directory.as_posix()
        self.ttl = ttl
        self.fsync = fsync
        #: the listen address recorded for ``status``; set before or while holding
        self.address: str | None = None
        #: called (from the renewal thread) when a larger epoch is found
        self.on_deposed: Callable[[DeposedError], None] | None = None
        self._epoch: int | None = None
        self._since = ""
        self._deposed: DeposedError | None = None
        self._valid_until = 0.0
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        state = f"epoch {self._epoch}" if self._epoch is not None else "not held"
        return f"EpochLease({str(self.directory)!r}, {state})"

    @property
    def held(self) -> bool:
        return self._epoch is not None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def deposed(self) -> DeposedError | None:
        return self._deposed

    # -- records ---------------------------------------------------------------------------------

    def epochs(self) -> list[int]:
        """Epochs that have a record, ascending."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            m = _LEASE_RE.fullmatch(name)
            if m is not None and len(m[1]) == len(f"{int(m[1]):08d}"):
                found.append(int(m[1]))
        return sorted(found)

    def _read(self, epoch: int) -> tuple[bytes, dict[str, Any] | None]:
        # a fresh open each time: close-to-open consistency shows the newest renewal
        try:
            raw = (self.directory / lease_name(epoch)).read_bytes()
        except FileNotFoundError:
            return b"", None
        try:
            data = json.loads(raw)
        except ValueError:
            return raw, None
        return raw, data if isinstance(data, dict) else None

    def _record(self, *, released: bool = False) -> bytes:
        record = {
            "epoch": self._epoch,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": self._since,
            "renewed": time.time(),
            "ttl_s": self.ttl,
            "address": self.address,
            "released": released,
        }
        return json.dumps(record).encode() + b"\n"

    # -- taking and giving up ----------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the next epoch, or raise LogLockedError naming the live holder."""
        if self._epoch is not None:
            return
        directory = self.directory
        try:
            make_directories(directory, fsync=self.fsync, lenient=True)
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} opening log directory {directory}; {hint}") from exc
        epochs = self.epochs()
        newest = epochs[-1] if epochs else 0
        if newest:
            self._wait_for_lapse(newest)
        epoch = newest + 1
        path = directory / lease_name(epoch)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | CLOEXEC, 0o644)
        except FileExistsError:
            raise LogLockedError(
                f"log {directory} is in use: another process took epoch {epoch} of its lease "
                "at the same moment; stop that process or pass another --log"
            ) from None
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} creating {path}; {hint}") from exc
        self._epoch = epoch
        self._since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self._deposed = None
        try:
            start = time.monotonic()
            write_all(fd, self._record(), 0)
            if self.fsync:
                flush(fd)
                self._sync_dir()
        except OSError as exc:
            self._epoch = None
            what, hint = describe(exc)
            raise StoreError(f"{what} writing {path}; {hint}") from exc
        finally:
            os.close(fd)
        self._valid_until = start + self.ttl * 0.75
        for old in epochs[:-_KEEP]:
            with contextlib.suppress(OSError):
                os.unlink(directory / lease_name(old))
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._renew_loop, name=f"lease {directory.name}", daemon=True
        )
        self._thread.start()

    def _wait_for_lapse(self, epoch: int) -> None:
        """Return once the holder of ``epoch`` has released or lost the lease; else refuse."""
        raw, record = self._read(epoch)
        # the holder's own lease time counts, should it have been started with a longer one
        theirs = record.get("ttl_s") if record is not None else None
        ttl = max(self.ttl, theirs if isinstance(theirs, (int, float)) else 0.0)
        deadline = time.monotonic() + ttl
        while record is not None and not record.get("released"):
            if record.get("host") == socket.gethostname():
                pid, renewed = record.get("pid"), record.get("renewed")
                dead = isinstance(pid, int) and not process_alive(pid)
                stale = isinstance(renewed, (int, float)) and time.time() - renewed > ttl
                if dead or stale:
                    return
                raise LogLockedError(self._locked_message(record))
            if time.monotonic() >= deadline:
                return  # unchanged for a whole lease time: the holder is gone
            time.sleep(min(0.05, ttl / 10))
            again, record = self._read(epoch)
            if again != raw:
                if record is not None and not record.get("released"):
                    raise LogLockedError(self._locked_message(record))
                return
            if self.epochs()[-1:] != [epoch]:
                raise LogLockedError(
                    f"log {self.directory} is in use: another process took its lease meanwhile; "
                    "stop that process or pass another --log"
                )

    def _locked_message(self, record: dict[str, Any]) -> str:
        age = ""
        if isinstance(record.get("renewed"), (int, float)):
            age = f", renewed {max(0.0, time.time() - record['renewed']):.1f} s ago"
        return (
            f"log {self.directory} is in use by pid {record.get('pid')} on host "
            f"{record.get('host')} since {record.get('since')} (epoch {record.get('epoch')}"
            f"{age}); stop that process or pass another --log"
        )

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
        """Stop renewing and mark the record released, so the next writer need not wait."""
        epoch = self._epoch
        if epoch is None:
            return
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        if self._deposed is None:
            with contextlib.suppress(OSError, StoreError):
                self._write_own(self._record(released=True))
        self._epoch = None

    def announce(self, address: str) -> None:
        """Record the holder's listen address (for ``status`` and standbys); best effort."""
        self.address = address
        if self._epoch is not None and self._deposed is None:
            with self._mutex, contextlib.suppress(StoreError):
                self._write_own(self._record())

    # -- renewing and fencing ----------------------------------------------------------------------

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.confirm()
            except DeposedError as exc:
                callback = self.on_deposed
                if callback is not None:
                    callback(exc)
                return
            except StoreError:
                continue  # a transient failure; the next round, or the next write, tries again

    def confirm(self, *, force: bool = False) -> None:
        """Raise DeposedError if a larger epoch exists; else renew. Skipped while the last
        renewal is fresh enough that nobody can have taken over (unless ``force``)."""
        if self._deposed is not None:
            raise self._deposed
        epoch = self._epoch
        if epoch is None:
            raise StoreError(f"log {self.directory} is not open for writing")
        if not force and time.monotonic() < self._valid_until:
            return
        with self._mutex:
            start = time.monotonic()
            self._write_own(self._record())
            newer = [e for e in self.epochs() if e > epoch]
            if newer:
                _, record = self._read(newer[-1])
                who = ""
                if record is not None:
                    who = f" by pid {record.get('pid')} on host {record.get('host')}"
                self._deposed = DeposedError(
                    f"log {self.directory}: deposed: epoch {newer[-1]} of the lease was taken"
                    f"{who} while this writer held epoch {epoch}; this writer stops, and "
                    "nothing it writes from now on is part of the log"
                )
                raise self._deposed
            self._valid_until = start + self.ttl * 0.75

    def expire(self) -> None:
        """Behave as a holder paused past its lease would (for tests): stop renewing, date the
        record back and forget the last confirmation."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        self._valid_until = 0.0
        _, record = self._read(self._epoch or 0)
        if record is not None:
            record["renewed"] = time.time() - 2 * self.ttl
            self._write_own(json.dumps(record).encode() + b"\n")

    def _write_own(self, data: bytes) -> None:
        epoch = self._epoch
        assert epoch is not None
        final = self.directory / lease_name(epoch)
        tmp = self.directory / f".{lease_name(epoch)}.{os.getpid()}.tmp"
        try:
            write_file(tmp, data, fsync=self.fsync)
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            what, hint = describe(exc)
            raise StoreError(f"{what} renewing the lease {final}; {hint}") from exc

    def _sync_dir(self) -> None:
        flush_directory(self.directory, lenient=True)

    # -- reading -----------------------------------------------------------------------------------

    def info(self) -> LeaseInfo:
        epochs = self.epochs()
        if not epochs:
            return LeaseInfo("none", "no lease record: no writer has opened this log")
        _, record = self._read(epochs[-1])
        if record is None:
            return LeaseInfo("unknown", f"the record {lease_name(epochs[-1])} cannot be read")
        renewed = record.get("renewed")
        holder = LeaseHolder(
            pid=record.get("pid") if isinstance(record.get("pid"), int) else None,
            host=record.get("host") if isinstance(record.get("host"), str) else None,
            since=record.get("since") if isinstance(record.get("since"), str) else None,
            epoch=epochs[-1],
            address=record.get("address") if isinstance(record.get("address"), str) else None,
            renewed=float(renewed) if isinstance(renewed, (int, float)) else None,
        )
        if record.get("released"):
            return LeaseInfo("free", f"the writer of epoch {epochs[-1]} stopped cleanly", holder)
        where = self.directory / lease_name(epochs[-1])
        return LeaseInfo("held", f"recorded in {where}", holder)
