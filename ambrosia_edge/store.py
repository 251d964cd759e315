"""The storage contract every tier implements, and the registry that picks a tier by URL.

A log is a numbered sequence of *chunks*; checkpoint ``n`` pairs with chunk ``n``: it holds the
state as of the first page of that chunk, so recovery loads the newest checkpoint and replays its
chunk and every later one. A chunk holds framed records (:mod:`ambrosia_edge.records`); a tier
stores bytes and never interprets a record's body.

The API is synchronous on purpose: the coordinator calls it from threads of its own (the log
writer's, for pages) so that fsync never blocks the event loop, and a tier is easier to write
and to reason about without a loop.
A tier whose small appends are quick (a local disk: one ``fdatasync``, ~100 µs) may declare
``inline_append_limit``: appends up to that many bytes then run on the event loop itself. Handing
a record to another thread and being woken again costs ~50 µs here, which on a lone awaited call,
whose round trip waits for two appends, is a third of what durability adds; under load the pages
grow past the limit and go to the log writer again, where their flush overlaps dispatch. A
small append that takes over half a millisecond (the disk busy with another process's large
flush) sends the following ones to the log writer too, until one is quick again, so that a
slow disk never stalls the event loop for long.

Checkpoints are written, and old chunks and checkpoints deleted, in one worker thread while
appends go on in another: a tier must allow ``write_checkpoint``, ``list_*`` and ``delete_*``
concurrently with ``append``.

A tier may also offer ``append_parts(parts)``: ``append`` of the record that is the
concatenation of ``parts``. Pages of large messages are mostly the batches as they came off the
wire, and a tier that writes the pieces as they are (the local disk: one gathered write) saves
copying every byte of them once more; without it the coordinator joins the pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from .registry import load


@runtime_checkable
class LogStore(Protocol):
    """One immortal's log chunks and checkpoints, with one writer at a time."""

    url: str

    def open(self) -> None:
        """Take the exclusive writer role; raise LogLockedError naming the holder if taken."""

    def close(self) -> None:
        """Release the writer role and any open files. Idempotent."""

    def list_chunks(self) -> list[int]:
        """Chunk numbers present, ascending."""

    def list_checkpoints(self) -> list[int]:
        """Checkpoint numbers present (complete ones only), ascending."""

    def read_records(self, chunk: int, *, repair: bool = False) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, record_body)`` for each intact record of ``chunk``.

        A torn tail (an incomplete or checksum-failing *last* record) ends iteration; with
        ``repair=True`` (writer only) it is also cut from the file. A damaged record that is
        followed by more data raises CorruptLogError naming the file and offset.
        """

    def start_chunk(self, chunk: int) -> None:
        """Create chunk ``chunk`` (which must not exist) and make it the append target."""

    def resume_chunk(self, chunk: int) -> None:
        """Make existing chunk ``chunk`` the append target, cutting a torn tail first."""

    def append(self, record: bytes) -> None:
        """Append one framed record to the current chunk and make it durable (fsync)."""

    def write_checkpoint(self, n: int, data: bytes) -> None:
        """Store checkpoint ``n`` atomically and durably: readers see all of it or nothing."""

    def read_checkpoint(self, n: int) -> bytes:
        """The bytes of checkpoint ``n``; CheckpointError if missing or unreadable."""

    def delete_chunk(self, chunk: int) -> None: ...

    def delete_checkpoint(self, n: int) -> None: ...


#: URL scheme -> "module:Class". Third parties add tiers through the
#: ``ambrosia_edge.storage`` entry-point group.
REGISTRY: dict[str, str] = {
    "file": "ambrosia_edge.storage.local:LocalStore",
    "memory": "ambrosia_edge.storage.memory:MemoryStore",
    "nfs": "ambrosia_edge.storage.shared:SharedStore",
    "s3": "ambrosia_edge.storage.objectstore:ObjectStore",
    "gs": "ambrosia_edge.storage.objectstore:ObjectStore",
    "az": "ambrosia_edge.storage.objectstore:ObjectStore",
}

#: Optional extras needed by a scheme, for the install hint when an import fails.
EXTRAS: dict[str, str] = {
    "s3": "cloud",
    "gs": "cloud",
    "az": "cloud",
}


def open_store(url: str, *, fsync: bool = True) -> LogStore:
    """Build (but do not open) the tier that serves ``url``; a bare path means local disk.

    ``fsync=False`` (``--no-fsync``) keeps writes in the page cache: a crash of the process
    loses nothing, a crash of the machine may. Every tier's constructor takes the keyword.
    """
    scheme = urlsplit(url).scheme if "://" in url else "file"
    cls = load(
        scheme,
        builtin=REGISTRY,
        group="ambrosia_edge.storage",
        extras=EXTRAS,
        what=f"storage tier for {scheme}://",
        unknown=lambda known: (
            f"no storage tier for {scheme}:// in log URL {url!r} (known: {known})"
        ),
    )
    store: LogStore = cls(url, fsync=fsync)
    return store
