"""Log pages: the group-commit unit, and the chunk header that opens every log chunk.

A page body is the CBOR array ``[page, epoch, entries, inputs, trims]``, or
``[page, epoch, entries, inputs, trims, peers]``:

- ``entries``: ``[[source, first_total, first_replayable, count, replayable, batch], ...]`` in
  arrival order, where ``batch`` is the byte string of ``count`` length-prefixed messages exactly
  as they came off the wire (the coordinator never decodes them).
- ``inputs``: ``{source: [total, replayable]}``, each source's received watermark after this page.
- ``trims``: ``{destination: replayable}``, acknowledgements received since the previous page:
  during replay, regenerated output at or below these has been durably consumed and is dropped.
- ``peers``: ``{name: incarnation}``, the log ids of peers met for the first time since the
  previous page (incarnation.py); absent when there are none.

The chunk header body is a CBOR map ``{"format": "ambrosia-edge/log", "version": 1,
"immortal": name, "chunk": n, "first_page": p}``, with two optional keys: ``"class_version"``,
the ``version`` of the immortal's class that runs the chunk's pages (where it changes, a live
upgrade converted the state), and ``"incarnation"``, the log's id (see :mod:`.incarnation`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from . import plaincbor
from .errors import CorruptLogError
from .fields import as_bytes, as_int, as_list, as_map, as_pair, as_str

LOG_FORMAT = "ambrosia-edge/log"
LOG_VERSION = 1
#: Batches from this size on stay separate pieces of an encoded page (Page.encode_parts).
BY_REFERENCE = 16 * 1024


@dataclass(slots=True)
class Entry:
    source: str
    first_total: int
    first_replayable: int
    count: int
    replayable: int
    batch: bytes


@dataclass(slots=True)
class Page:
    number: int
    epoch: int
    entries: list[Entry] = field(default_factory=list)
    inputs: dict[str, tuple[int, int]] = field(default_factory=dict)
    trims: dict[str, int] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        return b"".join(self.encode_parts())

    def encode_parts(self) -> list[bytes]:
        """The page's encoding in pieces that hold large batches by reference.

        A page of large messages is mostly the batches as they came off the wire; written with
        one gathered write they are never copied into a page-sized buffer first. Small batches
        are copied into the pieces around them, so a page of small ones is a single piece.
        """
        parts: list[bytes] = []
        # [page, epoch, entries, inputs, trims] or [page, epoch, entries, inputs, trims, peers]
        piece = bytearray(b"\x86" if self.peers else b"\x85")
        piece += cbor2.dumps(self.number) + cbor2.dumps(self.epoch)
        piece += plaincbor.head(0x80, len(self.entries))
        for e in self.entries:
            piece += b"\x86"  # [source, first_total, first_replayable, count, replayable, batch]
            piece += cbor2.dumps(e.source)
            for n in (e.first_total, e.first_replayable, e.count, e.replayable):
                piece += cbor2.dumps(n)
            piece += plaincbor.head(0x40, len(e.batch))
            if len(e.batch) < BY_REFERENCE:
                piece += e.batch
            else:
                parts += (bytes(piece), e.batch)
                piece.clear()
        piece += cbor2.dumps({source: list(mark) for source, mark in self.inputs.items()})
        piece += cbor2.dumps(self.trims)
        if self.peers:
            piece += cbor2.dumps(self.peers)
        parts.append(bytes(piece))
        return parts

    @property
    def size(self) -> int:
        return sum(len(e.batch) for e in self.entries)


def decode_page(body: bytes, where: str) -> Page:
    """Decode a page body; ``where`` (file and offset) names the record in errors."""
    try:
        items = as_list(cbor2.loads(body))
        number, epoch, raw_entries, inputs, trims = items[:5]
        peers = items[5] if len(items) == 6 else {}
        if len(items) not in (5, 6):
            raise ValueError(f"{len(items)} items")
        entries = [
            Entry(as_str(s), as_int(t), as_int(r), as_int(c), as_int(n), as_bytes(b))
            for s, t, r, c, n, b in as_list(raw_entries)
        ]
        return Page(
            as_int(number),
            as_int(epoch),
            entries,
            {as_str(k): as_pair(v) for k, v in as_map(inputs).items()},
            {as_str(k): as_int(v) for k, v in as_map(trims).items()},
            {as_str(k): as_str(v) for k, v in as_map(peers).items()},
        )
    except Exception as exc:
        raise CorruptLogError(
            f"{where}: the record's checksum is intact but it is not a valid page ({exc}); "
            "it was written by an incompatible version or a buggy writer"
        ) from None


def chunk_header(
    immortal: str,
    chunk: int,
    first_page: int,
    *,
    class_version: int | None = None,
    incarnation: str | None = None,
) -> bytes:
    header: dict[str, Any] = {
        "format": LOG_FORMAT,
        "version": LOG_VERSION,
        "immortal": immortal,
        "chunk": chunk,
        "first_page": first_page,
    }
    if class_version is not None:
        header["class_version"] = class_version
    if incarnation is not None:
        header["incarnation"] = incarnation
    return cbor2.dumps(header)


def decode_chunk_header(body: bytes, where: str) -> dict[str, Any]:
    try:
        header = cbor2.loads(body)
    except Exception as exc:
        raise CorruptLogError(f"{where}: unreadable chunk header ({exc})") from None
    if not isinstance(header, dict) or header.get("format") != LOG_FORMAT:
        raise CorruptLogError(f"{where}: not an ambrosia-edge log chunk")
    if header.get("version") != LOG_VERSION:
        raise CorruptLogError(
            f"{where}: log format version {header.get('version')} is not supported by this "
            f"release (it reads version {LOG_VERSION}); upgrade ambrosia-edge"
        )
    return dict(header)
