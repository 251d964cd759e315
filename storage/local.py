"""The local-disk tier: one directory per log, one file per chunk, fsync before anything counts.

Layout of a log directory::

    chunk-00000001.log          framed records (ambrosia_edge.records), appended in order
    checkpoint-00000001.cbor    state as of the first page of chunk 1, replaced atomically
    spare-00000001.log          a deleted chunk's file, zeroed, kept to become a later chunk
    LOCK                        flock'ed by the single writer; holds its pid, host and start time

Durability rules this module keeps:

* a record counts as logged only once ``append`` returns, after the data and the new file size
  have reached the disk; a failed write is cut back off so the file never keeps half a record;
* a new file counts only once the directory entry is on disk as well, hence the directory fsyncs;
* small appends land in space zero-filled ahead of them (``ZERO_FILL`` bytes at a time), so that
  their ``fdatasync`` flushes data only, not a new file size with it (a journal commit, which
  costs about half as much again on ext4); readers take zeros after the last record as its end,
  and a chunk is cut to its last record when the writer moves on or closes;
* large appends (pages of big messages) bypass the page cache with ``O_DIRECT``: a log is read
  back only on recovery, so caching what it writes only pushes out memory that is used (on a
  Pi, most of it), and copying into the cache costs more CPU than the write itself. Direct I/O
  writes whole blocks, so the block the record starts in is written again with the bytes it
  already holds, and the one it ends in is padded with zeros, which read as the end of the
  records like the zero fill above;
* a checkpoint is written beside its final name and renamed over it, so a crash leaves the old
  checkpoint or the new one, never a mix, and stray ``.tmp`` files are simply not listed;
* a deleted chunk is renamed away (durably, like an unlink), zeroed with ``fallocate`` where
  the file system can, which marks its blocks unwritten instead of freeing them, and only then
  named a spare; a new chunk takes a spare's file under its own name. Its content reads as
  zeros, so a crash right after leaves an empty chunk, as a crash after creating one does.
  Freeing a chunk's blocks stalled other writes for ~11 ms per 64 MiB on a file system mounted
  with ``discard``, and 4 MiB direct writes into a spare took ~1.5 ms against ~2.5 ms for
  writes that extend a new file (this virtual disk allocates a block on first write).

The writer lock is the ``flock`` lease of :mod:`.locking`, exposed as ``LocalStore.lease``.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final
from urllib.parse import unquote, urlsplit

from ambrosia_edge.errors import CheckpointError, ConfigError, StoreError
from ambrosia_edge.records import BytesLike, scan_file

from . import fallocate
from .diskio import CLOEXEC as _CLOEXEC
from .diskio import IOV_MAX as _IOV_MAX  # noqa: F401  (tests size their writes by it)
from .diskio import describe as _describe
from .diskio import flush as _flush
from .diskio import flush_data as _flush_data
from .diskio import flush_directory, store_checkpoint
from .diskio import read_exactly as _read_exactly
from .diskio import write_all as _write_all
from .diskio import write_parts as _write_parts
from .locking import LOCK_NAME, FlockLease, LockHolder, read_lock_holder

__all__ = [
    "LOCK_NAME",
    "FlockLease",
    "LocalStore",
    "LockHolder",
    "checkpoint_name",
    "chunk_name",
    "read_lock_holder",
]

_CHUNK_RE: Final = re.compile(r"chunk-(\d{8,})\.log")
_CHECKPOINT_RE: Final = re.compile(r"checkpoint-(\d{8,})\.cbor")
_SPARE_RE: Final = re.compile(r"spare-(\d{8,})\.log")
_SPARE_TMP_RE: Final = re.compile(r"spare-\d{8,}\.tmp")
#: Most spare chunk files kept; a steady log deletes one chunk per chunk it starts.
MAX_SPARES: Final = 2
#: How far ahead of small appends the current chunk is zero-filled.
ZERO_FILL: Final = 1 << 20
#: Appends up to this size go into zero-filled space; larger ones are few per second at most, and
#: their own size change is cheap next to the data they flush.
ZERO_FILL_MAX_RECORD: Final = 64 << 10
_ZEROS: Final = memoryview(bytes(ZERO_FILL))
#: Appends from this size on bypass the page cache (O_DIRECT), where the system has it.
DIRECT_MIN_RECORD: Final = 256 << 10
_O_DIRECT: Final = getattr(os, "O_DIRECT", 0)
#: Direct I/O moves whole blocks: offsets, lengths and buffer addresses are multiples of this.
_BLOCK: Final = 4096
#: The buffer direct appends are assembled in is kept for the next one up to this size.
_KEEP_BUFFER: Final = 16 << 20


def chunk_name(n: int) -> str:
    return f"chunk-{n:08d}.log"


def checkpoint_name(n: int) -> str:
    return f"checkpoint-{n:08d}.cbor"


def _path_from_url(url: str) -> Path:
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme != "file":
            raise ConfigError(f"log URL {url!r} is not a file:// URL")
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                f"log URL {url!r} names host {parts.netloc!r}; a local log is "
                "file:///absolute/path or just a path"
            )
        raw = unquote(parts.path)
    else:
        raw = url
    if not raw:
        raise ConfigError(f"log URL {url!r} names no directory")
    # Absolute from the start so every message names the same directory whatever the cwd becomes.
    return Path(os.path.abspath(raw))


class LocalStore:
    """A log kept in one directory of the local file system.

    ``fsync=False`` skips every flush to disk. It exists so benchmarks can measure what
    durability costs; a log written that way may lose acknowledged records in a power cut.
    """

    #: Appends up to this size run on the caller's event loop (see ambrosia_edge.store).
    inline_append_limit: int = ZERO_FILL_MAX_RECORD

    def __init__(self, url: str, *, fsync: bool = True) -> None:
        self.url = url
        self.path = _path_from_url(url)
        self.fsync = fsync
        #: the writer role: LocalStore.open acquires it, close releases it
        self.lease = FlockLease(self.path, fsync=fsync)
        # The append target: its descriptor, number, path and the offset of its end. The offset is
        # tracked here rather than asked of the file so the hot path is one write and one flush.
        self._fd = -1
        self._chunk: int | None = None
        self._chunk_path = ""
        self._offset = 0
        # From _offset to here the file holds zeros written ahead of small appends.
        self._filled = 0
        # The file's size: past _filled it may hold the zeroed rest of a spare (start_chunk).
        self._size = 0
        # False once the file system says it cannot zero a file in place: deleted chunks are
        # then unlinked rather than kept as spares.
        self._recycle_ok = True
        # Direct I/O: a second descriptor of the target opened with O_DIRECT (-1 until a large
        # append needs it), whether the file system allows it, the aligned buffer large appends
        # are assembled in, and the partial block at the end of the last direct append.
        self._direct_fd = -1
        self._direct_ok = bool(_O_DIRECT) and fsync
        self._buffer: mmap.mmap | None = None
        self._tail: tuple[int, bytes] | None = None
        # Set when an append failed: the file state is then unknown, so the target is dropped and
        # stays dropped until a restart repairs the chunk.
        self._failure: str | None = None
        # (chunk, length) that a completed repair scan found intact, so resume_chunk right after
        # read_records(repair=True) need not read the whole chunk a second time.
        self._verified: tuple[int, int] | None = None

    def __repr__(self) -> str:
        state = "open" if self.lease.held else "closed"
        return f"LocalStore({str(self.path)!r}, {state})"

    def __enter__(self) -> LocalStore:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- paths ---------------------------------------------------------------------------------

    def chunk_path(self, chunk: int) -> Path:
        return self.path / chunk_name(chunk)

    def checkpoint_path(self, n: int) -> Path:
        return self.path / checkpoint_name(n)

    # -- the writer role -----------------------------------------------------------------------

    def open(self) -> None:
        """Take the writer lock (creating the directory if needed); a no-op if already held."""
        if self.lease.held:
            return
        self.lease.acquire()
        self._failure = None
        self._drop_unfinished_spares()

    def close(self) -> None:
        """Drop the append target and the writer lock. Idempotent."""
        self._drop_target()
        self._buffer = None  # the direct-I/O buffer: up to 16 MiB
        self.lease.release()
        self._verified = None

    def _require_writer(self, action: str) -> None:
        if not self.lease.held:
            raise StoreError(
                f"log {self.path} is not open for writing; call open() before {action}"
            )

    def _drop_target(self) -> None:
        fd, self._fd = self._fd, -1
        self._chunk = None
        self._tail = None
        direct, self._direct_fd = self._direct_fd, -1
        if direct >= 0:
            with contextlib.suppress(OSError):
                os.close(direct)
        if fd >= 0:
            if max(self._filled, self._size) > self._offset:
                # Tidy, not needed: a reader takes the zeros after the last record as its end.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._offset)
            os.close(fd)

    def _sync_dir(self) -> None:
        if self.fsync:
            flush_directory(self.path)

    # -- listing -------------------------------------------------------------------------------

    def _numbers(self, pattern: re.Pattern[str]) -> list[int]:
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} listing log directory {self.path}; {hint}") from exc
        found: list[int] = []
        for name in names:
            m = pattern.fullmatch(name)
            # Only the canonical spelling counts, so a number maps to exactly one file name.
            if m is not None and len(m[1]) == len(f"{int(m[1]):08d}"):
                found.append(int(m[1]))
        return sorted(found)

    def list_chunks(self) -> list[int]:
        return self._numbers(_CHUNK_RE)

    def list_checkpoints(self) -> list[int]:
        return self._numbers(_CHECKPOINT_RE)

    # -- reading -------------------------------------------------------------------------------

    def read_records(self, chunk: int, *, repair: bool = False) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, body)`` of each intact record; see :meth:`read_typed_records`."""
        return ((offset, body) for offset, _, body in self.read_typed_records(chunk, repair=repair))

    def read_typed_records(
        self, chunk: int, *, repair: bool = False
    ) -> Iterator[tuple[int, int, bytes]]:
        """Yield ``(offset, rtype, body)`` of each intact record of ``chunk``.

        Needs no lock without ``repair``, so it may run beside a writer: the end of file is taken
        when iteration starts, and a record still being appended then reads as a torn tail. With
        ``repair=True`` (writer only) a torn tail is cut off and the cut made durable once the
        iteration has run to its end; stopping early repairs nothing. Damage that is not a torn
        tail raises CorruptLogError and leaves the file exactly as it was.
        """
        if repair:
            self._require_writer("repairing a chunk")
        path = self.chunk_path(chunk)
        if not path.exists():
            raise StoreError(f"no chunk {chunk} in log {self.path}: {path} does not exist")
        # The file is opened by the generator itself, so an iterator that is never started holds
        # no descriptor.
        return self._typed_records(chunk, str(path), repair)

    def read_records_from(self, chunk: int, start: int) -> Iterator[tuple[int, bytes]]:
        """:meth:`read_records` from byte ``start``, where a record read before begins: how a
        standby reads on as the log grows, without scanning the chunk from its start again."""
        path = self.chunk_path(chunk)
        if not path.exists():
            raise StoreError(f"no chunk {chunk} in log {self.path}: {path} does not exist")
        return self._records_from(str(path), start)

    def _records_from(self, path: str, start: int) -> Iterator[tuple[int, bytes]]:
        try:
            fd = os.open(path, os.O_RDONLY | _CLOEXEC)
        except OSError as exc:
            what, _ = _describe(exc)
            raise StoreError(f"{what} opening {path} to read it") from exc
        try:
            for offset, _, body in scan_file(fd, source=path, start=start):
                yield offset, body
        finally:
            os.close(fd)

    def _typed_records(
        self, chunk: int, path: str, repair: bool
    ) -> Iterator[tuple[int, int, bytes]]:
        try:
            fd = os.open(path, (os.O_RDWR if repair else os.O_RDONLY) | _CLOEXEC)
        except OSError as exc:
            what, _ = _describe(exc)
            raise StoreError(f"{what} opening {path} to read it") from exc
        try:
            scan = scan_file(fd, source=path)
            yield from scan
            if repair:
                if scan.valid_length != scan.size:  # a torn tail, or zeros written ahead
                    self._cut(fd, path, scan.valid_length)
                    if chunk == self._chunk:
                        self._offset = self._filled = self._size = scan.valid_length
                self._verified = (chunk, scan.valid_length)
        finally:
            os.close(fd)

    def _cut(self, fd: int, path: str, length: int) -> None:
        try:
            os.ftruncate(fd, length)
            if self.fsync:
                _flush(fd)
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} cutting the torn tail of {path} at {length}; {hint}") from exc

    # -- appending -----------------------------------------------------------------------------

    def start_chunk(self, chunk: int) -> None:
        """Create ``chunk`` (it must not exist), make it durable and make it the append target."""
        self._require_writer("starting a chunk")
        path = self.chunk_path(chunk)
        try:
            os.lstat(path)
        except FileNotFoundError:
            pass
        except OSError as exc:  # (Path.exists lets a failing disk's EIO through untranslated)
            what, hint = _describe(exc)
            raise StoreError(f"{what} looking for {path} before creating it; {hint}") from exc
        else:
            raise StoreError(
                f"chunk {path} already exists; a new chunk must never overwrite logged records"
            )
        spares = self._numbers(_SPARE_RE)
        try:
            if spares:
                # (no other writer can create the path meanwhile: we hold the lock)
                os.rename(self.path / f"spare-{spares[0]:08d}.log", path)
                fd = os.open(path, os.O_RDWR | _CLOEXEC)
            else:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _CLOEXEC, 0o644)
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} creating {path}; {hint}") from exc
        try:
            size = os.fstat(fd).st_size
            if self.fsync:
                _flush(fd)
            self._sync_dir()
        except OSError as exc:
            os.close(fd)
            what, hint = _describe(exc)
            raise StoreError(f"{what} making new chunk {path} durable; {hint}") from exc
        self._set_target(chunk, path, fd, 0, 0)
        self._size = size  # a spare's zeroed blocks

    def resume_chunk(self, chunk: int) -> None:
        """Make existing ``chunk`` the append target, first cutting off any torn tail.

        This is how a restarted writer continues its last chunk. It is safe on its own (it scans
        the chunk, so it raises CorruptLogError on real damage and touches nothing then) and right
        after ``read_records(chunk, repair=True)`` ran to its end, when it skips the second scan.
        """
        self._require_writer("resuming a chunk")
        path = self.chunk_path(chunk)
        try:
            fd = os.open(path, os.O_RDWR | _CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"cannot resume chunk {chunk}: {path} does not exist") from None
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} opening {path} for appending; {hint}") from exc
        try:
            size = os.fstat(fd).st_size
            if self._verified == (chunk, size):
                end = size
            else:
                scan = scan_file(fd, source=str(path), size=size)
                for _ in scan:
                    pass
                end = scan.valid_length
                if end != size:
                    self._cut(fd, str(path), end)
        except OSError as exc:
            os.close(fd)
            what, hint = _describe(exc)
            raise StoreError(f"{what} reading {path} to resume it; {hint}") from exc
        except BaseException:
            os.close(fd)
            raise
        self._set_target(chunk, path, fd, end, end)

    def _set_target(self, chunk: int, path: Path, fd: int, offset: int, size: int) -> None:
        self._drop_target()
        self._fd = fd
        self._chunk = chunk
        self._chunk_path = str(path)
        self._offset = offset
        self._filled = self._size = size
        self._failure = None
        self._verified = None

    def append(self, record: BytesLike) -> None:
        """Append one framed record to the current chunk; it is logged once this returns.

        On failure the chunk is cut back to its previous end (best effort), the append target is
        dropped and StoreError says the record was not logged; restarting repairs the chunk.
        """
        self.append_parts((record,))

    def append_parts(self, parts: Sequence[BytesLike]) -> None:
        """``append`` of the record that is the concatenation of ``parts``, written as it is:
        a page of large messages goes to the kernel without being copied into one buffer."""
        fd = self._fd
        if fd < 0:
            raise self._no_target()
        parts = [p if type(p) is bytes else memoryview(p).cast("B") for p in parts]
        offset = self._offset
        size = sum(len(p) for p in parts)
        end = offset + size
        try:
            if size >= DIRECT_MIN_RECORD and self._direct_ok and self._append_direct(parts, size):
                pass
            elif end <= self._filled or not self.fsync or size > ZERO_FILL_MAX_RECORD:
                self._tail = None
                _write_parts(fd, parts, offset)
            else:
                self._tail = None
                record = parts[0] if len(parts) == 1 else b"".join(parts)
                written = self._append_with_fill(fd, record, offset, end)
                if written != size:
                    _write_all(fd, memoryview(record)[written:], offset + written)
            if self.fsync:
                _flush_data(fd)
        except OSError as exc:
            raise self._append_failed(exc, offset) from exc
        self._offset = end
        self._filled = max(self._filled, end)

    def _append_direct(self, parts: Sequence[BytesLike], size: int) -> bool:
        """Write a large record with O_DIRECT, from the start of the block it begins in to the
        end of the block it ends in; False if the file system does not do direct I/O."""
        direct = self._direct_fd
        if direct < 0:
            try:
                direct = os.open(self._chunk_path, os.O_WRONLY | _O_DIRECT | _CLOEXEC)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # tmpfs, some network file systems
                return False
            self._direct_fd = direct
        offset = self._offset
        start = offset & -_BLOCK
        lead = offset - start
        end = lead + size
        length = (end + _BLOCK - 1) & -_BLOCK
        buffer = self._buffer
        if buffer is None or len(buffer) < length:
            buffer = mmap.mmap(-1, length)  # page-aligned, as direct I/O needs
            if length <= _KEEP_BUFFER:
                self._buffer = buffer
        with memoryview(buffer) as view:
            if lead:
                tail = self._tail
                if tail is not None and tail[0] == start and len(tail[1]) == lead:
                    view[:lead] = tail[1]
                else:
                    view[:lead] = _read_exactly(self._fd, lead, start)
            at = lead
            for part in parts:
                view[at : at + len(part)] = part
                at += len(part)
            view[end:length] = _ZEROS[: length - end]
            try:
                written = os.pwrite(direct, view[:length], start)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct_ok = False  # a block size direct I/O does not accept here
                return False
            if written < end:  # rare; finish through the page cache
                _write_all(self._fd, view[written:end], start + written)
            last = (offset + size) & -_BLOCK
            self._tail = (last, bytes(view[last - start : end]))
        self._filled = max(self._filled, start + max(written, end))
        return True

    def _append_with_fill(self, fd: int, record: BytesLike, offset: int, end: int) -> int:
        """Write ``record`` and zeros after it, in one call; returns the record bytes written."""
        target = (end + ZERO_FILL) & ~4095
        try:
            written = os.pwritev(fd, [record, _ZEROS[: target - end]], offset)
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            return os.pwrite(fd, record, offset)  # no room for the zeros: perhaps for the record
        if written > len(record):
            self._filled = offset + written
        return min(written, len(record))

    def _no_target(self) -> StoreError:
        if self._failure is not None:
            return StoreError(f"log {self.path} stopped accepting records: {self._failure}")
        if not self.lease.held:
            return StoreError(
                f"log {self.path} is not open for writing; call open() before appending"
            )
        return StoreError(
            f"log {self.path} has no chunk to append to; call start_chunk() or resume_chunk()"
        )

    def _append_failed(self, exc: OSError, offset: int) -> StoreError:
        path = self._chunk_path
        try:
            os.ftruncate(self._fd, offset)
            if self.fsync:
                _flush(self._fd)
        except OSError:
            pass  # the restart's torn-tail repair removes whatever is left of the record
        self._drop_target()
        what, hint = _describe(exc)
        self._failure = f"{what} writing {path}: the record was not logged; {hint}"
        return StoreError(self._failure)

    # -- checkpoints ---------------------------------------------------------------------------

    def write_checkpoint(self, n: int, data: BytesLike) -> None:
        """Store checkpoint ``n`` so that a crash leaves either the old bytes or all the new."""
        self._require_writer("writing a checkpoint")
        final = self.checkpoint_path(n)
        tmp = final.with_name(final.name + ".tmp")
        store_checkpoint(final, data, tmp=tmp, fsync=self.fsync, flush_dir=self._sync_dir)

    def write_standby_checkpoint(self, n: int, data: BytesLike) -> bool:
        """Store checkpoint ``n`` from a standby, which does not hold the lease (True).

        The flock lease leaves no deposed writer whose pages a standby could have replayed,
        so its checkpoint is always of logged pages; it goes beside the final name under one
        of its own (another standby may write the same checkpoint) and is renamed over it.
        """
        final = self.checkpoint_path(n)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        store_checkpoint(final, data, tmp=tmp, fsync=self.fsync, flush_dir=self._sync_dir)
        return True

    def read_checkpoint(self, n: int) -> bytes:
        path = self.checkpoint_path(n)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {n} not found: {path} does not exist") from None
        except OSError as exc:
            what, _ = _describe(exc)
            raise CheckpointError(f"{what} reading checkpoint {path}") from exc

    # -- deleting ------------------------------------------------------------------------------

    def delete_chunk(self, chunk: int) -> None:
        self._require_writer("deleting a chunk")
        if chunk == self._chunk:
            raise StoreError(
                f"chunk {self.chunk_path(chunk)} is being appended to and cannot be deleted"
            )
        if self._verified is not None and self._verified[0] == chunk:
            self._verified = None
        path = self.chunk_path(chunk)
        if self._recycle_ok and len(self._numbers(_SPARE_RE)) < MAX_SPARES:
            self._recycle(chunk, path)
        else:
            self._unlink(path)

    def _recycle(self, chunk: int, path: Path) -> None:
        """Delete ``chunk`` by keeping its file as a spare (see the module's docstring)."""
        unfinished = self.path / f"spare-{chunk:08d}.tmp"
        try:
            if path.stat().st_size == 0:
                self._unlink(path)  # nothing worth keeping (and nothing to zero)
                return
            os.rename(path, unfinished)
        except FileNotFoundError:
            return
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} deleting {path}; {hint}") from exc
        zeroed = False
        try:
            self._sync_dir()  # the chunk is gone for good, as after an unlink
            fd = os.open(unfinished, os.O_RDWR | _CLOEXEC)
            try:
                zeroed = fallocate.zero(fd, 0, os.fstat(fd).st_size)
                if zeroed and self.fsync:
                    _flush_data(fd)
            finally:
                os.close(fd)
            if zeroed:
                os.rename(unfinished, self.path / f"spare-{chunk:08d}.log")
                return
            self._recycle_ok = False  # this file system cannot zero a file in place
        except OSError:
            # (a full disk, say, where extents had to be split): deleting frees the space
            pass
        self._unlink(unfinished)

    def _drop_unfinished_spares(self) -> None:
        """Delete spares whose zeroing a crash interrupted: they may still hold old records.

        Best effort: nothing reads them (they are neither chunks nor spares), and the next
        open tries again.
        """
        with contextlib.suppress(OSError, StoreError):
            for name in os.listdir(self.path):
                if _SPARE_TMP_RE.fullmatch(name):
                    self._unlink(self.path / name)

    def delete_checkpoint(self, n: int) -> None:
        self._require_writer("deleting a checkpoint")
        path = self.checkpoint_path(n)
        self._unlink(path)
        self._unlink(path.with_name(path.name + ".tmp"))

    def _unlink(self, path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} deleting {path}; {hint}") from exc
        try:
            self._sync_dir()
        except OSError as exc:
            what, hint = _describe(exc)
            raise StoreError(f"{what} making the deletion of {path} durable; {hint}") from exc
