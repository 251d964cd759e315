"""Record framing shared by every storage tier, and the scanner that tells a torn tail from damage.

A record is a 12-byte header followed by its body. The header is little-endian::

    offset  size  field
    0       2     magic b"AE"
    2       1     format version, 1
    3       1     record type (u8): 0 = chunk header, 1 = page, 2 = seal; other values frame fine
    4       4     body length (u32), at most MAX_RECORD_BODY (1 GiB)
    8       4     CRC32C (Castagnoli) of header bytes 2..7 followed by the body

The checksum covers the version, type and length as well as the body, so a damaged length or type
is caught like damaged data instead of sending the scanner to a wrong offset unnoticed.

Test vector, for checking another implementation against this one::

    encode_record(b"hello", 1).hex() == "41450101050000009ee3040368656c6c6f"

A log file may end in zero bytes after its last record: the local tier zero-fills space ahead of
small appends so that flushing them does not also flush a change of file size. Zeros where the
next record's header would start therefore end the records cleanly (``padding`` counts them).

When a record fails to check at offset ``o`` the scanner has to decide whether the writer died in
the middle of appending it (a *torn tail*, expected after a crash and safe to cut) or whether
something damaged data that had been logged (*corruption*, which must stop recovery because
cutting it would silently drop inputs that were acknowledged as logged). It is a torn tail iff no
intact record follows it anywhere in the file (a writer only ever tears its last append, so an
intact record further on proves damage) and

* fewer than 12 bytes are left at ``o``, or
* the header is all zeros (the header of an append into zero-filled space never landed), or
* the record claims to end at or past the end of the file (``o + 12 + length >= EOF``), or
* the header is well formed and every byte from the record's end to the end of the file is zero
  (an append into zero-filled space that did not land whole).

Anything else raises :class:`~ambrosia_edge.errors.CorruptLogError`. (A torn record whose own
partial body holds a complete framed record, as when an application ships log records as
payloads, is therefore reported as corruption: the safe direction.)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator, Sequence
from enum import IntEnum
from typing import Any, Final, TypeAlias

from .errors import CorruptLogError

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_RECORD_BODY",
    "BytesLike",
    "RecordScan",
    "RecordType",
    "encode_record",
    "encode_record_parts",
    "scan_file",
    "scan_records",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview

MAGIC: Final = b"AE"
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 12
MAX_RECORD_BODY: Final = 1 << 30


def _pick_crc32c() -> Callable[..., int]:
    """The compiled ``crc32c`` where it is installed: PyPI has no wheel of it for 32-bit ARM
    or s390x, so there the dependency is left out and a pure-Python one (numpy-vectorised
    for large inputs when numpy is present) checksums the log instead, with the same results."""
    try:
        from crc32c import crc32c as compiled
    except ImportError:
        from .crc32c_fallback import crc32c as fallback

        return fallback
    try:
        compiled(b"", 0, 0)
    except TypeError:  # Debian's python3-crc32c 2.3 has no gil_release_mode argument

        def two_args(data: Any, value: int = 0, _gil_release_mode: int = -1) -> int:
            result: int = compiled(data, value)
            return result

        return two_args
    return compiled


crc32c: Final = _pick_crc32c()

# magic, version, type, body length, crc
_HEADER: Final = struct.Struct("<2sBBII")
# the checksummed part of the header: version, type, body length
_CHECKED: Final = struct.Struct("<BBI")

# Large enough that a chunk of small pages costs few reads, small enough to stay cheap on a Pi.
_FILE_BLOCK: Final = 1 << 20

_ADVICE: Final = (
    "the files were left untouched; restore this chunk from a copy, "
    "or move it aside to recover from the previous checkpoint"
)


class RecordType(IntEnum):
    CHUNK_HEADER = 0
    PAGE = 1
    SEAL = 2  # the last record of a log handed over to another instance (seal.py)


def encode_record(body: BytesLike, rtype: int) -> bytes:
    """Frame ``body`` as one record of type ``rtype`` (0..255)."""
    return _record_header((body,), rtype) + body


#: Pieces from this size on are checksummed without the GIL.
_RELEASE_GIL_FROM: Final = 1 << 20


def encode_record_parts(body: Sequence[BytesLike], rtype: int) -> list[BytesLike]:
    """Frame the body made of the pieces ``body`` without joining them: the record is the
    header followed by the pieces, for a gathered write."""
    return [_record_header(body, rtype), *body]


def _record_header(body: Sequence[BytesLike], rtype: int) -> bytes:
    length = sum(len(part) for part in body)
    if length > MAX_RECORD_BODY:
        raise ValueError(f"record body of {length} bytes exceeds the {MAX_RECORD_BODY}-byte limit")
    if not 0 <= rtype <= 0xFF:
        raise ValueError(f"record type {rtype} does not fit in one byte")
    crc = crc32c(_CHECKED.pack(FORMAT_VERSION, rtype, length))
    for part in body:
        # The GIL is kept for a piece under a megabyte (~80 µs). Released for each one, the
        # log writer had to win it back from a busy event loop after every message of a page.
        crc = crc32c(part, crc, 0 if len(part) < _RELEASE_GIL_FROM else 1)
    return _HEADER.pack(MAGIC, FORMAT_VERSION, rtype, length, crc)


class _BufferSource:
    """Bytes already in memory: views into them, so headers cost no copies."""

    def __init__(self, data: BytesLike) -> None:
        self._mv = memoryview(data).cast("B")
        self.size = len(self._mv)

    def view(self, offset: int, n: int) -> memoryview:
        return self._mv[offset : offset + n]


class _FileSource:
    """A file read through one sliding block, so a chunk of any size needs bounded memory."""

    def __init__(self, fd: int, size: int, block: int) -> None:
        self._fd = fd
        self.size = size
        self._block = block
        self._base = 0
        self._mv = memoryview(b"")

    def view(self, offset: int, n: int) -> memoryview:
        rel = offset - self._base
        if rel >= 0 and rel + n <= len(self._mv):
            return self._mv[rel : rel + n]
        # Never read past the size the scan started with: a concurrent writer may be appending,
        # and the scan's verdicts are all relative to that one end of file.
        want = min(max(n, self._block), self.size - offset)
        parts: list[bytes] = []
        got = 0
        while got < want:
            part = os.pread(self._fd, want - got, offset + got)
            if not part:
                break  # the file shrank under us; the caller sees a short view
            parts.append(part)
            got += len(part)
        self._base = offset
        self._mv = memoryview(parts[0] if len(parts) == 1 else b"".join(parts))
        return self._mv[:n]


_Source: TypeAlias = _BufferSource | _FileSource


class RecordScan:
    """Iterator over the intact records of one chunk, yielding ``(offset, rtype, body)``.

    After iteration ends normally, ``valid_length`` is where intact data stops (where a writer
    cuts the file and resumes appending), ``torn`` tells whether anything followed it, and
    ``torn_reason`` says what was wrong with it; ``padding`` counts the zero bytes after the last
    record when the data ends cleanly that way. Damage that is not a torn tail raises
    :class:`CorruptLogError` from ``next()`` instead; the scanner never modifies its input.
    """

    def __init__(self, src: _Source, source: str, start: int) -> None:
        self.source = source
        self.size = src.size
        self.valid_length = start
        self.torn = False
        self.torn_reason: str | None = None
        self.padding = 0
        self.finished = False
        self._src = src
        self._records = self._scan(start)

    def __iter__(self) -> RecordScan:
        return self

    def __next__(self) -> tuple[int, int, bytes]:
        return next(self._records)

    def _scan(self, offset: int) -> Iterator[tuple[int, int, bytes]]:
        src = self._src
        size = self.size
        while offset < size:
            head = src.view(offset, HEADER_SIZE)
            if len(head) < HEADER_SIZE:
                if self._zero_from(offset):
                    break  # padding shorter than a header
                self._tear("incomplete record header")
                return
            magic, version, rtype, length, crc = _HEADER.unpack_from(head)
            end = offset + HEADER_SIZE + length
            sane = False
            if magic != MAGIC:
                if magic == b"\0\0" and self._zero_from(offset):
                    break  # zero-filled space after the last record
                problem = f"bad magic bytes {magic!r}"
            elif version != FORMAT_VERSION:
                problem = f"unknown record format version {version}"
            elif length > MAX_RECORD_BODY:
                problem = f"body length {length} exceeds the {MAX_RECORD_BODY}-byte limit"
            elif end > size:
                problem = f"record of {length} body bytes runs past the end of the data"
            else:
                body = src.view(offset + HEADER_SIZE, length)
                if len(body) < length:
                    self._tear("the data shrank while it was being read")
                    return
                if crc32c(body, crc32c(head[2:8])) == crc:
                    yield offset, rtype, body.tobytes()
                    offset = end
                    self.valid_length = offset
                    continue
                problem = "checksum mismatch"
                sane = True
            tail_like = (
                end >= size
                or head.tobytes() == bytes(HEADER_SIZE)
                or (sane and self._zero_from(end))
            )
            if tail_like and not self._intact_after(offset):
                self._tear(problem)
                return
            raise CorruptLogError(
                f"corrupt log record in {self.source} at byte offset {offset}: {problem}; {_ADVICE}"
            )
        self.padding = size - offset
        self.finished = True

    def _tear(self, reason: str) -> None:
        self.torn = True
        self.torn_reason = reason
        self.finished = True

    def _intact_after(self, offset: int) -> bool:
        """Is there an intact record anywhere after the damaged one at ``offset``?

        A writer only ever tears its last append, so an intact record further on proves the
        damage is not a torn tail, even when a damaged length makes the record seem to run past
        the end of the file. Only damaged data pays for this search.
        """
        position = offset + 1
        while position + HEADER_SIZE <= self.size:
            window = self._src.view(position, _FILE_BLOCK).tobytes()
            found = window.find(MAGIC)
            if found < 0:
                position += max(1, len(window) - 1)
                continue
            candidate = position + found
            head = self._src.view(candidate, HEADER_SIZE)
            if len(head) == HEADER_SIZE:
                _, version, _, length, crc = _HEADER.unpack_from(head)
                stop = candidate + HEADER_SIZE + length
                if version == FORMAT_VERSION and length <= MAX_RECORD_BODY and stop <= self.size:
                    checked = bytes(head[2:8])
                    body = self._src.view(candidate + HEADER_SIZE, length)
                    if len(body) == length and crc32c(body, crc32c(checked)) == crc:
                        return True
            position = candidate + 1
        return False

    def _zero_from(self, offset: int) -> bool:
        while offset < self.size:
            block = self._src.view(offset, _FILE_BLOCK)
            if not block:
                return True
            if block.tobytes().count(0) != len(block):
                return False
            offset += len(block)
        return True


def scan_records(data: BytesLike, *, source: str, start: int = 0) -> RecordScan:
    """Scan framed records held in memory; ``source`` names the data in error messages."""
    return RecordScan(_BufferSource(data), source, start)


def scan_file(
    fd: int, *, source: str, start: int = 0, size: int | None = None, block: int = _FILE_BLOCK
) -> RecordScan:
    """Scan framed records straight from an open file, reading ``block`` bytes at a time.

    The end of file is taken once, now (or given as ``size``), so a reader running beside a
    writer sees a consistent prefix and a record still being appended reads as a torn tail.
    """
    if size is None:
        size = os.fstat(fd).st_size
    return RecordScan(_FileSource(fd, size, block), source, start)
