"""Reserving file space without writing it: Linux ``fallocate``, where the system has it.

Reserved blocks read as zeros, which readers of a chunk take as the end of its records. The
call is reached through ctypes because Python's ``os.posix_fallocate`` falls back to writing
zeros where the file system cannot reserve (glibc's emulation): on a network share that would
write every reserved byte. Here such a file system simply gets no reservation.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable
from typing import Final

__all__ = ["reserve", "zero"]

_ZERO_RANGE: Final = 0x10  # FALLOC_FL_ZERO_RANGE

#: errno values meaning "this file system (or kernel) does not reserve": not an error.
_UNSUPPORTED: Final = frozenset({errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENODEV})


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # fallocate64 takes 64-bit offsets on 32-bit systems too (a Raspberry Pi's 32-bit OS)
        function = getattr(libc, "fallocate64", None) or libc.fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _load()


def reserve(fd: int, offset: int, length: int) -> bool:
    """Allocate ``length`` bytes of ``fd`` from ``offset``, growing the file to cover them.

    False where nothing was reserved because the system or the file system does not do it;
    other failures (ENOSPC above all) raise OSError. The call releases the GIL.
    """
    return _call(fd, 0, offset, length)


def zero(fd: int, offset: int, length: int) -> bool:
    """Make ``length`` bytes from ``offset`` read as zeros, keeping their blocks allocated.

    Extents are marked unwritten rather than freed, so nothing is discarded on the device (on
    a file system mounted with ``discard``, freeing 64 MiB stalled other writes for ~11 ms
    here) and the next writes into them need no allocation. False where not supported.
    """
    return _call(fd, _ZERO_RANGE, offset, length)


def _call(fd: int, mode: int, offset: int, length: int) -> bool:
    if _fallocate is None:
        return False
    if _fallocate(fd, mode, offset, length) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code))
