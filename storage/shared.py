"""The shared-mount tier (``nfs://``): a log on NFS, SMB/CIFS, Azure Files, any mounted share.

What it assumes of the share: close-to-open consistency (a file opened after another client
closed or flushed it shows that client's writes), ``O_EXCL`` creation that fails when the name
exists (NFSv3 and later, SMB), atomic ``rename`` and an ``fsync`` that reaches the server. It
assumes no working ``flock``, fcntl lock or NLM: who may write is decided by the epoch lease
of :mod:`.epochlease`.

Layout of a log directory::

    lease-00000007.json                               the lease record of epoch 7
    chunk-00000003.e00000006.log                      chunk 3 as written in epoch 6
    chunk-00000003.e00000007.after-e00000006-4711.log  ... continued in epoch 7, after byte 4711
    checkpoint-00000003.e00000006.cbor                checkpoint 3, written in epoch 6

A chunk is one file per epoch that wrote it (a *segment*), each created with ``O_EXCL`` under
a name carrying its epoch; a writer never appends to a file of an earlier epoch. A segment that
continues a chunk names in its file name the segment it continues and the length of it that
the new writer replayed: that is the *seal*, made in one step with the file. A writer deposed
while paused may still append to its own segment after the seal, or start a segment of a later
chunk; readers ignore both: a chunk is read from its newest segment back along the seals,
chunks after the one holding the newest segment of all are a deposed writer's, and a
checkpoint counts only if no earlier chunk has a segment of a later epoch than its own.
Every read opens the files afresh (close-to-open), so a reader sees the appends flushed before
it opened them.

Appends are written at a known offset and flushed, then confirmed against the lease (see
:mod:`.epochlease`); a transient error (a soft mount's time-out, an interrupted call) repeats
the same write at the same offset, which is idempotent; a persistent one drops the append
target and says the record was not logged, as the local tier does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from ambrosia_edge.errors import (
    CheckpointError,
    ConfigError,
    CorruptLogError,
    DeposedError,
    StoreError,
)
from ambrosia_edge.records import BytesLike, scan_file

from .diskio import (
    CLOEXEC,
    describe,
    flush,
    flush_data,
    flush_directory,
    store_checkpoint,
    write_parts,
)
from .epochlease import DEFAULT_LEASE_S, EpochLease

__all__ = ["SharedStore"]

_SEGMENT_RE: Final = re.compile(r"chunk-(\d{8,})\.e(\d{8,})(?:\.after-e(\d{8,})-(\d+))?\.log")
_CHECKPOINT_RE: Final = re.compile(r"checkpoint-(\d{8,})\.e(\d{8,})\.cbor")
#: errno values a share returns for a moment (a soft mount's time-out, a server restarting)
_TRANSIENT: Final = frozenset(
    {errno.EINTR, errno.EAGAIN, errno.ETIMEDOUT, errno.EIO, errno.ECONNRESET, errno.ESTALE}
)
#: pauses between attempts of a write that failed transiently (about 3 s in all)
_RETRY_PAUSES: Final = (0.01, 0.05, 0.2, 0.5, 1.0, 1.5)


@dataclass(frozen=True, slots=True)
class _Segment:
    chunk: int
    epoch: int
    #: the segment this one continues, and the length of it that counts; None for a fresh chunk
    after: tuple[int, int] | None
    name: str


def _segment_name(chunk: int, epoch: int, after: tuple[int, int] | None) -> str:
    tail = f".after-e{after[0]:08d}-{after[1]}" if after is not None else ""
    return f"chunk-{chunk:08d}.e{epoch:08d}{tail}.log"


def _path_from_url(url: str) -> tuple[Path, float]:
    parts = urlsplit(url)
    if parts.scheme != "nfs":
        raise ConfigError(f"log URL {url!r} is not an nfs:// URL")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(
            f"log URL {url!r} names host {parts.netloc!r}; the shared-mount tier writes to a "
            "share mounted here: nfs:///mount/point/dir (three slashes)"
        )
    raw = unquote(parts.path)
    if not raw:
        raise ConfigError(f"log URL {url!r} names no directory")
    ttl = DEFAULT_LEASE_S
    query = parse_qs(parts.query)
    if "lease" in query:
        try:
            ttl = float(query["lease"][-1])
        except ValueError:
            ttl = -1.0
        if not 0.05 <= ttl <= 3600:
            raise ConfigError(
                f"log URL {url!r}: lease={query['lease'][-1]!r} is not a lease time in seconds "
                "(0.05 to 3600)"
            )
    return Path(os.path.abspath(raw)), ttl


class SharedStore:
    """A log kept in one directory of a shared mount, fenced by epoch (see the module)."""

    def __init__(self, url: str, *, fsync: bool = True) -> None:
        self.url = url
        self.path, ttl = _path_from_url(url)
        self.fsync = fsync
        self.lease = EpochLease(self.path, ttl=ttl, fsync=fsync)
        self._fd = -1
        self._chunk: int | None = None
        self._segment_path = ""
        self._offset = 0
        self._failure: str | None = None
        # (chunk, newest segment, its valid length) as a completed repair read found them:
        # resume_chunk seals there, at what the caller replayed, not at a later rescan's end,
        # which may hold a record a deposed writer appended in between
        self._verified: tuple[int, Path, int] | None = None

    def __repr__(self) -> str:
        return f"SharedStore({str(self.path)!r}, {self.lease!r})"

    def __enter__(self) -> SharedStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the writer role -----------------------------------------------------------------------

    def open(self) -> None:
        if self.lease.held:
            return
        self.lease.acquire()
        self._failure = None

    def close(self) -> None:
        self._drop_target()
        self.lease.release()

    def _require_writer(self, action: str) -> int:
        epoch = self.lease.epoch
        if epoch is None:
            raise StoreError(
                f"log {self.path} is not open for writing; call open() before {action}"
            )
        deposed = self.lease.deposed
        if deposed is not None:
            raise deposed
        return epoch

    def _drop_target(self) -> None:
        fd, self._fd = self._fd, -1
        self._chunk = None
        if fd >= 0:
            os.close(fd)

    def _sync_dir(self) -> None:
        if self.fsync:
            flush_directory(self.path, lenient=True)  # some shares flush no directory

    # -- listing -------------------------------------------------------------------------------

    def _names(self) -> list[str]:
        try:
            return os.listdir(self.path)
        except FileNotFoundError:
            return []

    def _segments(self, names: list[str] | None = None) -> dict[int, dict[int, _Segment]]:
        """chunk -> epoch -> segment, for every segment file present."""
        found: dict[int, dict[int, _Segment]] = {}
        for name in self._names() if names is None else names:
            m = _SEGMENT_RE.fullmatch(name)
            if m is None or len(m[1]) != len(f"{int(m[1]):08d}"):
                continue
            after = (int(m[3]), int(m[4])) if m[3] is not None else None
            segment = _Segment(int(m[1]), int(m[2]), after, name)
            found.setdefault(segment.chunk, {})[segment.epoch] = segment
        return found

    def _chains(self, names: list[str] | None = None) -> dict[int, list[_Segment]]:
        """The segments that count, per chunk, oldest first (see the module's docstring)."""
        segments = self._segments(names)
        if not segments:
            return {}
        newest = max(max(by_epoch) for by_epoch in segments.values())
        last = max(c for c, by_epoch in segments.items() if newest in by_epoch)
        chains: dict[int, list[_Segment]] = {}
        for chunk, by_epoch in segments.items():
            if chunk > last:
                continue  # started by a writer that had already been deposed
            chain = [by_epoch[max(by_epoch)]]
            while chain[-1].after is not None:
                previous = by_epoch.get(chain[-1].after[0])
                if previous is None:
                    raise StoreError(
                        f"log {self.path}: {chain[-1].name} continues a segment of epoch "
                        f"{chain[-1].after[0]} that is missing; restore it from a copy"
                    )
                chain.append(previous)
            chains[chunk] = chain[::-1]
        return chains

    def list_chunks(self) -> list[int]:
        return sorted(self._chains())

    def _checkpoints(self) -> dict[int, int]:
        """checkpoint number -> the epoch of its file that counts."""
        names = self._names()
        chains = self._chains(names)
        found: dict[int, int] = {}
        for name in names:
            m = _CHECKPOINT_RE.fullmatch(name)
            if m is None or len(m[1]) != len(f"{int(m[1]):08d}"):
                continue
            n, epoch = int(m[1]), int(m[2])
            earlier = [c for c in chains if c < n]
            floor = max((max(s.epoch for s in chains[c]) for c in earlier), default=0)
            if epoch >= floor and epoch > found.get(n, 0):
                found[n] = epoch
        return found

    def list_checkpoints(self) -> list[int]:
        return sorted(self._checkpoints())

    # -- reading -------------------------------------------------------------------------------

    def segment_paths(self, chunk: int) -> list[tuple[Path, int | None]]:
        """The files of ``chunk`` that count, oldest first, each with the length of it that
        counts (None for the newest: all of it)."""
        chain = self._chains().get(chunk)
        if chain is None:
            raise StoreError(f"no chunk {chunk} in log {self.path}: it has no segment file")
        out: list[tuple[Path, int | None]] = []
        for i, segment in enumerate(chain):
            follower = chain[i + 1] if i + 1 < len(chain) else None
            limit = follower.after[1] if follower is not None and follower.after else None
            out.append((self.path / segment.name, limit))
        return out

    def read_records(self, chunk: int, *, repair: bool = False) -> Iterator[tuple[int, bytes]]:
        return ((offset, body) for offset, _, body in self.read_typed_records(chunk, repair=repair))

    def read_typed_records(
        self, chunk: int, *, repair: bool = False
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(offset, rtype, body)``; offsets count from the chunk's start across its
        segments. ``repair`` cuts the torn tail of the newest segment."""
        if repair:
            self._require_writer("repairing a chunk")
        return self._typed_records(chunk, self.segment_paths(chunk), repair)

    def read_records_from(self, chunk: int, start: int) -> Iterator[tuple[int, bytes]]:
        """:meth:`read_records` from byte ``start`` of the chunk, where a record read before
        begins: how a standby reads on as the log grows, without scanning from the start."""
        segments = self.segment_paths(chunk)
        return ((o, body) for o, _, body in self._typed_records(chunk, segments, False, start))

    def _typed_records(
        self,
        chunk: int,
        segments: list[tuple[Path, int | None]],
        repair: bool,
        start: int = 0,
    ) -> Iterator[tuple[int, int, bytes]]:
        base = 0
        for path, limit in segments:
            if limit is not None and base + limit <= start:
                base += limit  # wholly before ``start``
                continue
            try:
                mode = os.O_RDWR if repair and limit is None else os.O_RDONLY
                fd = os.open(path, mode | CLOEXEC)
            except OSError as exc:
                what, _ = describe(exc)
                raise StoreError(f"{what} opening {path} to read it") from exc
            try:
                size = os.fstat(fd).st_size
                scan = scan_file(
                    fd,
                    source=str(path),
                    size=size if limit is None else limit,
                    start=max(0, start - base),
                )
                for offset, rtype, body in scan:
                    yield base + offset, rtype, body
                if limit is not None:
                    if scan.valid_length != limit or size < limit:
                        raise CorruptLogError(
                            f"corrupt log record in {path} at byte offset {scan.valid_length}: "
                            f"the segment was sealed at {limit} bytes; restore this chunk from "
                            "a copy, or move it aside to recover from the previous checkpoint"
                        )
                    base += limit
                    continue
                if repair:
                    self._verified = (chunk, path, scan.valid_length)
                if repair and scan.valid_length != size:
                    try:
                        os.ftruncate(fd, scan.valid_length)
                        if self.fsync:
                            flush(fd)
                    except OSError as exc:
                        what, hint = describe(exc)
                        raise StoreError(
                            f"{what} cutting the torn tail of {path} at {scan.valid_length}; {hint}"
                        ) from exc
            finally:
                os.close(fd)

    # -- appending -----------------------------------------------------------------------------

    def start_chunk(self, chunk: int) -> None:
        epoch = self._require_writer("starting a chunk")
        if chunk in self._chains():
            raise StoreError(
                f"chunk {chunk} of log {self.path} already exists; a new chunk must never "
                "overwrite logged records"
            )
        self._create_segment(chunk, epoch, None)

    def resume_chunk(self, chunk: int) -> None:
        """Continue ``chunk``: this epoch's own segment, or a new one sealing the newest."""
        epoch = self._require_writer("resuming a chunk")
        segments = self.segment_paths(chunk)
        newest, _ = segments[-1]
        verified, self._verified = self._verified, None
        if verified is not None and verified[:2] == (chunk, newest):
            scan_end = verified[2]
        else:
            scan_end = self._valid_end(newest)
        m = _SEGMENT_RE.fullmatch(newest.name)
        assert m is not None
        if int(m[2]) == epoch:
            fd = self._open_existing(newest)
            with contextlib.suppress(OSError):
                if os.fstat(fd).st_size != scan_end:
                    os.ftruncate(fd, scan_end)
            self._set_target(chunk, newest, fd, scan_end)
            return
        self._create_segment(chunk, epoch, (int(m[2]), scan_end))

    def _valid_end(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | CLOEXEC)
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} opening {path} to resume it; {hint}") from exc
        try:
            scan = scan_file(fd, source=str(path))
            for _ in scan:
                pass
            return scan.valid_length
        finally:
            os.close(fd)

    def _open_existing(self, path: Path) -> int:
        try:
            return os.open(path, os.O_RDWR | CLOEXEC)
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} opening {path} for appending; {hint}") from exc

    def _create_segment(self, chunk: int, epoch: int, after: tuple[int, int] | None) -> None:
        path = self.path / _segment_name(chunk, epoch, after)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | CLOEXEC, 0o644)
        except FileExistsError:
            raise StoreError(
                f"{path} already exists; another writer holds epoch {epoch} of log {self.path}"
            ) from None
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} creating {path}; {hint}") from exc
        try:
            if self.fsync:
                flush(fd)
            self._sync_dir()
            self.lease.confirm()
        except OSError as exc:
            os.close(fd)
            what, hint = describe(exc)
            raise StoreError(f"{what} making new segment {path} durable; {hint}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._set_target(chunk, path, fd, 0)

    def _set_target(self, chunk: int, path: Path, fd: int, offset: int) -> None:
        self._drop_target()
        self._fd = fd
        self._chunk = chunk
        self._segment_path = str(path)
        self._offset = offset
        self._failure = None

    def append(self, record: BytesLike) -> None:
        self.append_parts((record,))

    def append_parts(self, parts: Sequence[BytesLike]) -> None:
        """Append the concatenation of ``parts``; logged once this returns (flushed, and the
        lease confirmed since), else StoreError, or DeposedError if another writer took over."""
        fd = self._fd
        if fd < 0:
            raise self._no_target()
        offset = self._offset
        size = sum(len(p) for p in parts)
        for attempt, pause in enumerate((*_RETRY_PAUSES, None)):
            try:
                write_parts(fd, parts, offset)
                if self.fsync:
                    flush_data(fd)
                break
            except OSError as exc:
                if pause is None or exc.errno not in _TRANSIENT:
                    raise self._append_failed(exc, offset, attempt + 1) from exc
                time.sleep(pause)
        self._confirm()
        self._offset = offset + size

    def _confirm(self) -> None:
        """Confirm the lease after a write, retrying a renewal that failed transiently; a
        deposed writer or a share that stays unreachable drops the append target."""
        for pause in (*_RETRY_PAUSES, None):
            try:
                self.lease.confirm()
                return
            except DeposedError:
                self._drop_target()
                raise
            except StoreError as exc:
                if pause is None:
                    self._drop_target()
                    self._failure = f"{exc}: the record was not logged"
                    raise StoreError(self._failure) from exc
                time.sleep(pause)
            except BaseException:
                self._drop_target()
                raise

    def _no_target(self) -> StoreError:
        deposed = self.lease.deposed
        if deposed is not None:
            return deposed
        if self._failure is not None:
            return StoreError(f"log {self.path} stopped accepting records: {self._failure}")
        if not self.lease.held:
            return StoreError(
                f"log {self.path} is not open for writing; call open() before appending"
            )
        return StoreError(
            f"log {self.path} has no chunk to append to; call start_chunk() or resume_chunk()"
        )

    def _append_failed(self, exc: OSError, offset: int, attempts: int) -> StoreError:
        path = self._segment_path
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, offset)
        self._drop_target()
        what, hint = describe(exc)
        tries = f" (after {attempts} attempts)" if attempts > 1 else ""
        self._failure = f"{what} writing {path}{tries}: the record was not logged; {hint}"
        return StoreError(self._failure)

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_path(self, n: int, epoch: int) -> Path:
        return self.path / f"checkpoint-{n:08d}.e{epoch:08d}.cbor"

    def write_checkpoint(self, n: int, data: BytesLike) -> None:
        epoch = self._require_writer("writing a checkpoint")
        final = self.checkpoint_path(n, epoch)
        tmp = final.with_name(final.name + ".tmp")
        store_checkpoint(
            final,
            data,
            tmp=tmp,
            fsync=self.fsync,
            flush_dir=self._sync_dir,
            before_rename=partial(self.lease.confirm, force=True),
        )
        for other in self._epochs_of_checkpoint(n):
            if other < epoch:
                with contextlib.suppress(OSError):
                    os.unlink(self.checkpoint_path(n, other))

    def write_standby_checkpoint(self, n: int, data: BytesLike) -> bool:
        """Store checkpoint ``n`` from a standby, which does not hold the lease; False (and
        nothing stored) when the log is changing hands.

        Called after the standby has read the pages the checkpoint covers. If the newest
        lease record is still of the epoch that wrote the newest segment, no successor had
        begun when the pages were read; a successor reads the log only after beginning its
        epoch, so those pages are in what it seals, never a deposed writer's late appends. The
        checkpoint is then named with that epoch. The file goes beside its final name under
        one of its own (the primary or another standby may write the same checkpoint) and is
        renamed over it.
        """
        epochs = self.lease.epochs()
        chains = self._chains()
        if not epochs or not chains:
            return False
        epoch = epochs[-1]
        if max(chains) < n or chains[max(chains)][-1].epoch != epoch:
            return False
        final = self.checkpoint_path(n, epoch)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        store_checkpoint(final, data, tmp=tmp, fsync=self.fsync, flush_dir=self._sync_dir)
        return True

    def _epochs_of_checkpoint(self, n: int) -> list[int]:
        epochs = []
        for name in self._names():
            m = _CHECKPOINT_RE.fullmatch(name)
            if m is not None and int(m[1]) == n:
                epochs.append(int(m[2]))
        return epochs

    def read_checkpoint(self, n: int) -> bytes:
        epoch = self._checkpoints().get(n)
        if epoch is None:
            raise CheckpointError(
                f"checkpoint {n} not found: {self.path}/checkpoint-{n:08d}.e*.cbor does not exist"
            )
        path = self.checkpoint_path(n, epoch)
        try:
            return path.read_bytes()
        except OSError as exc:
            what, _ = describe(exc)
            raise CheckpointError(f"{what} reading checkpoint {path}") from exc

    # -- deleting ------------------------------------------------------------------------------

    def delete_chunk(self, chunk: int) -> None:
        self._require_writer("deleting a chunk")
        if chunk == self._chunk:
            raise StoreError(
                f"chunk {chunk} of log {self.path} is being appended to and cannot be deleted"
            )
        for segment in self._segments().get(chunk, {}).values():
            self._unlink(self.path / segment.name)

    def delete_checkpoint(self, n: int) -> None:
        self._require_writer("deleting a checkpoint")
        for epoch in self._epochs_of_checkpoint(n):
            path = self.checkpoint_path(n, epoch)
            self._unlink(path)
            self._unlink(path.with_name(path.name + ".tmp"))

    def _unlink(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            what, hint = describe(exc)
            raise StoreError(f"{what} deleting {path}; {hint}") from exc
        self._sync_dir()
