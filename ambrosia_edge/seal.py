"""The seal: the record that ends a log handed over to another instance by a live migration.

When ``ambrosia-edge run ... --migrate-from`` takes an immortal over, the old instance appends
one last record to its log (record type 2, :attr:`RecordType.SEAL`) saying where the immortal
went and in which epoch it runs there, and never writes again. Whoever opens that log to write
it afterwards is refused with :class:`~ambrosia_edge.errors.LogSealedError`, naming the new
home; read-only replays (``replay``, ``retrotest``, ``inspect``) stop at the seal.

Its body is the CBOR map ``{"format": "ambrosia-edge/seal", "version": 1, "immortal": name,
"moved_to": "HOST:PORT", "epoch": e, "last_page": n, "sealed_at": "…Z"}``. A page body is
always a CBOR array and a seal body a map, so a reader that sees only bodies (a tier without
record types) tells them apart by the first byte. A release-1 reader, which takes every
record after a chunk's header for a page, stops at it with "the record's checksum is intact
but it is not a valid page … written by an incompatible version": it refuses the log rather
than carrying on past the handover.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import cbor2

from .errors import CorruptLogError, LogSealedError
from .records import RecordType, encode_record
from .store import LogStore

__all__ = [
    "SEAL_FORMAT",
    "SEAL_VERSION",
    "Seal",
    "decode_seal",
    "find_seal",
    "is_seal",
    "sealed_error",
]

SEAL_FORMAT = "ambrosia-edge/seal"
SEAL_VERSION = 1


@dataclass(frozen=True, slots=True)
class Seal:
    """Where an immortal went: its new home's address and the epoch it runs there in."""

    immortal: str
    moved_to: str
    epoch: int
    last_page: int
    sealed_at: str = ""

    def encode(self) -> bytes:
        return cbor2.dumps(
            {
                "format": SEAL_FORMAT,
                "version": SEAL_VERSION,
                "immortal": self.immortal,
                "moved_to": self.moved_to,
                "epoch": self.epoch,
                "last_page": self.last_page,
                "sealed_at": self.sealed_at or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
        )

    def record(self) -> bytes:
        return encode_record(self.encode(), RecordType.SEAL)


def is_seal(body: bytes) -> bool:
    """A seal's body is a CBOR map (major type 5), a page's an array."""
    return bool(body) and 0xA0 <= body[0] <= 0xBF


def decode_seal(body: bytes, where: str) -> Seal:
    try:
        fields: Any = cbor2.loads(body)
    except Exception as exc:
        raise CorruptLogError(f"{where}: unreadable seal record ({exc})") from None
    if not isinstance(fields, dict) or fields.get("format") != SEAL_FORMAT:
        raise CorruptLogError(f"{where}: a map where a page was expected, and not a seal")
    if fields.get("version") != SEAL_VERSION:
        raise CorruptLogError(
            f"{where}: seal format version {fields.get('version')} is not supported by this "
            f"release (it reads version {SEAL_VERSION}); upgrade ambrosia-edge"
        )
    try:
        return Seal(
            str(fields["immortal"]),
            str(fields["moved_to"]),
            int(fields["epoch"]),
            int(fields["last_page"]),
            str(fields.get("sealed_at", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptLogError(f"{where}: malformed seal record ({exc})") from None


def find_seal(store: LogStore, chunks: list[int] | None = None) -> Seal | None:
    """The seal that ends the log in ``store``, if it ends in one (only its last chunk is
    read: a seal is always the last record written)."""
    chunks = store.list_chunks() if chunks is None else chunks
    if not chunks:
        return None
    last: tuple[int, bytes] | None = None
    for position, (offset, body) in enumerate(store.read_records(chunks[-1])):
        if position:
            last = (offset, body)
    if last is None or not is_seal(last[1]):
        return None
    return decode_seal(last[1], f"{store.url} chunk {chunks[-1]} offset {last[0]}")


def sealed_error(seal: Seal, url: str) -> LogSealedError:
    return LogSealedError(
        f"the log at {url} is sealed: immortal {seal.immortal!r} moved to {seal.moved_to} "
        f"(epoch {seal.epoch}) on {seal.sealed_at or 'an unknown date'}, after page "
        f"{seal.last_page}; it runs there now. Start it there, or move it back here with "
        f"ambrosia-edge run ... --log {url} --migrate-from {seal.moved_to}"
    )
