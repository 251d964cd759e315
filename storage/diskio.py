"""The system calls the local tier is built on: flushes that reach the disk, whole writes,
and errors put in an operator's words. Shared by the log files and the writer lock."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

from ambrosia_edge.errors import CheckpointError
from ambrosia_edge.records import BytesLike

__all__ = [
    "CLOEXEC",
    "IOV_MAX",
    "describe",
    "flush",
    "flush_data",
    "flush_directory",
    "make_directories",
    "read_exactly",
    "write_all",
    "write_file",
]

CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)
#: Most buffers one gathered write may take (the kernel's IOV_MAX; 1024 on Linux and macOS).
IOV_MAX: Final = 1024

if sys.platform == "darwin":

    def flush(fd: int) -> None:
        # fsync on macOS stops at the drive's volatile cache; only F_FULLFSYNC survives power loss.
        fcntl.fcntl(fd, fcntl.F_FULLFSYNC)

    flush_data = flush
else:
    flush = os.fsync
    # The size change of an append is part of what fdatasync flushes; timestamps are not needed.
    flush_data = os.fdatasync if hasattr(os, "fdatasync") else os.fsync


def describe(exc: OSError) -> tuple[str, str]:
    """What went wrong in a few words, and what the operator should do about it."""
    if exc.errno == errno.ENOSPC:
        return "disk full", "free space and restart"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded", "free space or raise the quota and restart"
    name = errno.errorcode.get(exc.errno or 0, "unknown error")
    text = exc.strerror or str(exc)
    return f"{text} ({name})", "check the disk and restart"


def read_exactly(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) != n:
        raise OSError(errno.EIO, f"read {len(data)} of {n} bytes at offset {offset}")
    return data


def write_all(fd: int, data: BytesLike, offset: int) -> None:
    write_parts(fd, (data,), offset)


def write_parts(fd: int, parts: Sequence[BytesLike], offset: int) -> None:
    """Write the concatenation of ``parts`` at ``offset``, with as few system calls as the
    kernel allows (at most IOV_MAX buffers each), resuming after short writes."""
    views = [memoryview(p).cast("B") for p in parts if len(p)]
    first = 0
    while first < len(views):
        batch = views[first : first + IOV_MAX]
        n = os.pwritev(fd, batch, offset) if len(batch) > 1 else os.pwrite(fd, batch[0], offset)
        if n == 0:
            raise OSError(errno.EIO, "write made no progress")
        offset += n
        while n and n >= len(views[first]):
            n -= len(views[first])
            first += 1
        if n:
            views[first] = views[first][n:]


def write_file(path: str | os.PathLike[str], data: BytesLike, *, fsync: bool) -> None:
    """Create (or truncate) ``path`` and write ``data`` whole, flushed to the disk when
    ``fsync``: the first half of replacing a file atomically, which a rename completes."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | CLOEXEC, 0o644)
    try:
        write_all(fd, data, 0)
        if fsync:
            flush(fd)
    finally:
        os.close(fd)


def store_checkpoint(
    final: Path,
    data: BytesLike,
    *,
    tmp: Path,
    fsync: bool,
    flush_dir: Callable[[], None],
    before_rename: Callable[[], None] | None = None,
) -> None:
    """Write checkpoint ``final`` so that a crash leaves either the old bytes or all the new:
    ``data`` under ``tmp``, then a rename over ``final`` and ``flush_dir()``. ``before_rename``
    may refuse (an OSError) once the bytes are durable. Any OSError removes ``tmp`` and is
    raised as a CheckpointError naming ``final``."""
    try:
        write_file(tmp, data, fsync=fsync)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, final)
        flush_dir()
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        what, hint = describe(exc)
        raise CheckpointError(
            f"{what} writing checkpoint {final}: the checkpoint was not stored; {hint}"
        ) from exc


def flush_directory(path: str | os.PathLike[str], *, lenient: bool = False) -> None:
    """Flush a directory, so that a create, rename or unlink in it survives a power cut.

    ``lenient``: a share that cannot flush a directory (EINVAL, EBADF: some NFS and SMB
    clients) is let be; its server orders directory changes itself.
    """
    fd = os.open(path, os.O_RDONLY | CLOEXEC)
    try:
        flush(fd)
    except OSError as exc:
        if not (lenient and exc.errno in (errno.EINVAL, errno.EBADF)):
            raise
    finally:
        os.close(fd)


def make_directories(path: str | os.PathLike[str], *, fsync: bool, lenient: bool = False) -> None:
    """Create directory ``path`` and any missing parents, each made durable in its parent.

    A directory's entry lives in its parent, so until the parent is flushed a power cut can
    take the new directory away with every file later made durable inside it: a new log
    would lose its first records, acknowledged or not. ``lenient`` as for flush_directory.
    """
    missing: list[str] = []
    at = os.path.abspath(path)
    while not os.path.isdir(at):
        missing.append(at)
        parent = os.path.dirname(at)
        if parent == at:
            break
        at = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue  # made meanwhile by another process, which flushes it itself
        if fsync:
            flush_directory(os.path.dirname(directory), lenient=lenient)
