"""An in-process tier for tests: ``memory://NAME``.

Logs live in a module-level table keyed by NAME, so a store closed and built again in the same
process (a simulated restart) finds the chunks and checkpoints the previous one left. Chunks are
kept as framed bytes and read through the same scanner as the disk tier, so torn tails and
corruption behave identically; :meth:`MemoryStore.raw_chunk` exposes those bytes for tests that
need to damage them. Nothing here survives the process, which is the point.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from ambrosia_edge.errors import CheckpointError, ConfigError, LogLockedError, StoreError
from ambrosia_edge.records import BytesLike, scan_records

__all__ = ["MemoryStore", "reset_memory_stores"]


@dataclass(eq=False)
class _MemoryLog:
    chunks: dict[int, bytearray] = field(default_factory=dict)
    checkpoints: dict[int, bytes] = field(default_factory=dict)
    holder: MemoryStore | None = None
    since: str = ""
    # A coordinator writes from a worker thread while tests read from another.
    mutex: threading.Lock = field(default_factory=threading.Lock)


_LOGS: Final[dict[str, _MemoryLog]] = {}
_LOGS_MUTEX: Final = threading.Lock()


def reset_memory_stores() -> None:
    """Forget every memory log; stores that were open lose their writer role with them."""
    with _LOGS_MUTEX:
        _LOGS.clear()


def _log_named(name: str) -> _MemoryLog:
    with _LOGS_MUTEX:
        log = _LOGS.get(name)
        if log is None:
            log = _LOGS[name] = _MemoryLog()
        return log


class MemoryStore:
    """One named in-memory log, with the writer role enforced within this process."""

    def __init__(self, url: str, *, fsync: bool = True) -> None:
        parts = urlsplit(url)
        name = parts.netloc + parts.path
        if parts.scheme != "memory" or not name:
            raise ConfigError(f"log URL {url!r} is not of the form memory://NAME")
        self.url = url
        self.name = name
        self._chunk: int | None = None

    def __repr__(self) -> str:
        return f"MemoryStore({self.url!r})"

    def __enter__(self) -> MemoryStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _source(self, chunk: int) -> str:
        return f"{self.url}/chunk-{chunk:08d}.log"

    # -- the writer role -----------------------------------------------------------------------

    def open(self) -> None:
        """Take the writer role; LogLockedError if another store in this process has it."""
        log = _log_named(self.name)
        with log.mutex:
            if log.holder is self:
                return
            if log.holder is not None:
                raise LogLockedError(
                    f"log {self.url} is in use by pid {os.getpid()} on host "
                    f"{socket.gethostname()} since {log.since}; stop that process or pass "
                    "another --log"
                )
            log.holder = self
            log.since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        self._chunk = None

    def close(self) -> None:
        """Release the writer role if this store has it. Idempotent."""
        self._chunk = None
        with _LOGS_MUTEX:
            log = _LOGS.get(self.name)
        if log is not None:
            with log.mutex:
                if log.holder is self:
                    log.holder = None
                    log.since = ""

    def _writer_log(self, action: str) -> _MemoryLog:
        log = _log_named(self.name)
        if log.holder is not self:
            raise StoreError(f"log {self.url} is not open for writing; call open() before {action}")
        return log

    # -- listing and reading -------------------------------------------------------------------

    def list_chunks(self) -> list[int]:
        log = _log_named(self.name)
        with log.mutex:
            return sorted(log.chunks)

    def list_checkpoints(self) -> list[int]:
        log = _log_named(self.name)
        with log.mutex:
            return sorted(log.checkpoints)

    def raw_chunk(self, chunk: int) -> bytearray:
        """The live bytes of ``chunk``, for tests that tear or damage a log on purpose."""
        log = _log_named(self.name)
        with log.mutex:
            try:
                return log.chunks[chunk]
            except KeyError:
                raise StoreError(f"no chunk {chunk} in log {self.url}") from None

    def read_records(self, chunk: int, *, repair: bool = False) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, body)`` of each intact record; see :meth:`read_typed_records`."""
        return ((offset, body) for offset, _, body in self.read_typed_records(chunk, repair=repair))

    def read_typed_records(
        self, chunk: int, *, repair: bool = False
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(offset, rtype, body)`` of each intact record of ``chunk``.

        Reads a snapshot taken when called, so appends made meanwhile are not seen. With
        ``repair=True`` (writer only) a torn tail is cut once iteration has run to its end.
        """
        log = self._writer_log("repairing a chunk") if repair else _log_named(self.name)
        with log.mutex:
            buf = log.chunks.get(chunk)
            if buf is None:
                raise StoreError(f"no chunk {chunk} in log {self.url}")
            snapshot = bytes(buf)
        return self._typed_records(log, chunk, snapshot, repair)

    def _typed_records(
        self, log: _MemoryLog, chunk: int, snapshot: bytes, repair: bool
    ) -> Iterator[tuple[int, int, bytes]]:
        scan = scan_records(snapshot, source=self._source(chunk))
        yield from scan
        if repair and scan.valid_length != scan.size:
            with log.mutex:
                buf = log.chunks.get(chunk)
                if buf is not None:
                    del buf[scan.valid_length :]

    # -- appending -----------------------------------------------------------------------------

    def start_chunk(self, chunk: int) -> None:
        log = self._writer_log("starting a chunk")
        with log.mutex:
            if chunk in log.chunks:
                raise StoreError(
                    f"chunk {self._source(chunk)} already exists; a new chunk must never "
                    "overwrite logged records"
                )
            log.chunks[chunk] = bytearray()
        self._chunk = chunk

    def resume_chunk(self, chunk: int) -> None:
        """Make existing ``chunk`` the append target, first cutting off any torn tail."""
        for _ in self.read_typed_records(chunk, repair=True):
            pass
        self._chunk = chunk

    def append(self, record: BytesLike) -> None:
        chunk = self._chunk
        log = _log_named(self.name)
        if chunk is None or log.holder is not self:
            raise StoreError(f"log {self.url} has no chunk open for appending")
        with log.mutex:
            buf = log.chunks.get(chunk)
            if buf is None:
                raise StoreError(
                    f"writing {self._source(chunk)}: the record was not logged; the chunk is gone"
                )
            buf += record

    # -- checkpoints ---------------------------------------------------------------------------

    def write_checkpoint(self, n: int, data: BytesLike) -> None:
        log = self._writer_log("writing a checkpoint")
        with log.mutex:
            log.checkpoints[n] = bytes(data)

    def read_checkpoint(self, n: int) -> bytes:
        log = _log_named(self.name)
        with log.mutex:
            try:
                return log.checkpoints[n]
            except KeyError:
                raise CheckpointError(
                    f"checkpoint {n} not found: {self.url}/checkpoint-{n:08d}.cbor does not exist"
                ) from None

    # -- deleting ------------------------------------------------------------------------------

    def delete_chunk(self, chunk: int) -> None:
        log = self._writer_log("deleting a chunk")
        if chunk == self._chunk:
            raise StoreError(
                f"chunk {self._source(chunk)} is being appended to and cannot be deleted"
            )
        with log.mutex:
            log.chunks.pop(chunk, None)

    def delete_checkpoint(self, n: int) -> None:
        log = self._writer_log("deleting a checkpoint")
        with log.mutex:
            log.checkpoints.pop(n, None)
