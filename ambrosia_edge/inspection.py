"""``ambrosia-edge inspect LOG``: what a log holds, read without disturbing whoever writes it.

The inspector never calls ``open()`` on the store: that takes the writer lock, which would stop
the immortal from starting (or fail because it is running), and would let a torn tail be cut.
Chunks are scanned read-only with the same record scanner recovery uses, so a verdict printed
here (torn tail or corruption) is the verdict the next recovery will reach. A running writer may
be appending while this reads: the scanner fixes each chunk's end of file when it starts, so a
record still being written shows up as a torn tail of the last chunk, not as damage.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from .checkpoint import decode_checkpoint
from .errors import CheckpointError, StoreError
from .lease import Lease, lease_of, process_alive
from .page import decode_chunk_header, decode_page
from .records import RecordScan, RecordType, scan_file, scan_records
from .seal import decode_seal, is_seal
from .store import LogStore, open_store

__all__ = ["LogReport", "inspect_log", "read_log"]


@dataclass(slots=True)
class LockInfo:
    """The writer lease of a log (the LOCK file on local disk); ``state`` says whether its
    holder is still there."""

    state: str
    pid: int | None = None
    host: str | None = None
    since: str | None = None


@dataclass(slots=True)
class OutputInfo:
    next_replayable: int
    messages: int
    bytes: int


@dataclass(slots=True)
class CheckpointInfo:
    number: int
    bytes: int
    immortal: str
    class_path: str
    class_version: int
    chunk: int
    epoch: int
    next_page: int
    next_call_id: int
    state_bytes: int
    inputs: dict[str, list[int]]
    outputs: dict[str, OutputInfo]
    incarnation: str | None = None
    #: the peers' log ids it remembers
    peers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class TornTail:
    offset: int
    bytes: int
    reason: str


@dataclass(slots=True)
class ChunkInfo:
    number: int
    #: None when the tier does not expose the chunk's raw bytes
    bytes: int | None
    immortal: str | None = None
    first_page: int | None = None
    #: the header's class version (where it changes, a live upgrade happened) and log id
    class_version: int | None = None
    incarnation: str | None = None
    pages: int = 0
    page_range: list[int] | None = None
    messages: int = 0
    impulses: int = 0
    epochs: list[int] = field(default_factory=list)
    #: False when the tier hides its raw bytes, so a torn tail could not be looked for
    torn_known: bool = True
    torn: TornTail | None = None
    #: zero bytes after the last record: space the writer filled ahead of its next appends
    zero_fill: int = 0


@dataclass(slots=True)
class Watermark:
    """The latest input watermark of one source, and the record it came from."""

    total: int
    replayable: int
    page: int | None = None
    checkpoint: int | None = None


@dataclass(slots=True)
class Trim:
    """The latest acknowledgement from one destination, and the page that logged it."""

    replayable: int
    page: int


@dataclass(slots=True)
class LogReport:
    """Everything ``inspect`` shows; ``--json`` prints exactly ``asdict`` of it."""

    log: str
    directory: str | None
    lock: LockInfo | None
    immortal: str | None = None
    #: the log's id (incarnation.py); None for a log from before incarnations, or empty
    incarnation: str | None = None
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    chunks: list[ChunkInfo] = field(default_factory=list)
    inputs: dict[str, Watermark] = field(default_factory=dict)
    trims: dict[str, Trim] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def inspect_log(url: str, as_json: bool) -> int:
    """Print what the log at ``url`` holds; AmbrosiaError (the CLI's exit 1) if unreadable."""
    report = read_log(url)
    if as_json:
        json.dump(asdict(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        write_text(report, sys.stdout)
    return 0


def read_log(url: str) -> LogReport:
    store = open_store(url)
    directory = _local_directory(store)
    if directory is not None:
        _require_log_directory(directory, url)
    lease = lease_of(store)
    lock = _lock_info(lease) if lease is not None else None
    report = LogReport(log=store.url, directory=str(directory) if directory else None, lock=lock)
    for n in store.list_checkpoints():
        info = _checkpoint_info(store, n, report)
        if info is not None:
            report.checkpoints.append(info)
    page_inputs: dict[str, Watermark] = {}
    expected_page: int | None = None
    for n in store.list_chunks():
        expected_page = _read_chunk(store, n, report, page_inputs, expected_page)
    report.inputs = _merge_inputs(page_inputs, report.checkpoints)
    names = [c.immortal for c in report.chunks] + [c.immortal for c in report.checkpoints]
    found = sorted({name for name in names if name is not None})
    report.immortal = found[0] if found else None
    if len(found) > 1:
        report.notes.append(f"records name more than one immortal: {', '.join(found)}")
    ids = [c.incarnation for c in report.checkpoints] + [c.incarnation for c in report.chunks]
    incarnations = sorted({i for i in ids if i is not None})
    report.incarnation = incarnations[0] if incarnations else None
    if len(incarnations) > 1:
        report.notes.append(
            f"records belong to more than one incarnation: {', '.join(incarnations)} (files of "
            "different logs are mixed)"
        )
    return report


# --- where the log is -----------------------------------------------------------------------


def _local_directory(store: LogStore) -> Path | None:
    path = getattr(store, "path", None)
    return path if isinstance(path, Path) else None


def _require_log_directory(directory: Path, url: str) -> None:
    """Fail early on a wrong path: an empty report would suggest a log that lost everything."""
    if not directory.exists():
        raise StoreError(
            f"no log at {directory}: the directory does not exist (for {url!r}; give the "
            "immortal's --name or the --log directory it runs with)"
        )
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a directory, so it is not an ambrosia-edge log")
    try:
        names = os.listdir(directory)
    except OSError as exc:
        raise StoreError(f"cannot list log directory {directory}: {exc.strerror}") from exc
    if not any(name == "LOCK" or name.startswith(("chunk-", "checkpoint-")) for name in names):
        raise StoreError(
            f"{directory} holds no ambrosia-edge log (no chunk-*.log, checkpoint-*.cbor or "
            "LOCK file)"
        )


def _lock_info(lease: Lease) -> LockInfo:
    info = lease.info()
    holder = info.holder
    if info.state != "held" or holder is None or holder.pid is None:
        return LockInfo(f"{info.state} ({info.detail})" if info.detail else info.state)
    lock = LockInfo("held", holder.pid, holder.host, holder.since)
    if holder.host is not None and holder.host != socket.gethostname():
        lock.state = "recorded (on another host, so not checked here)"
    elif not process_alive(holder.pid):
        lock.state = "stale (that process is gone: it was killed or crashed)"
    return lock


# --- checkpoints ----------------------------------------------------------------------------


def _checkpoint_info(store: LogStore, n: int, report: LogReport) -> CheckpointInfo | None:
    try:
        data = store.read_checkpoint(n)
    except CheckpointError:
        if n in store.list_checkpoints():
            raise
        # The writer retired it between our listing and our read: that is not damage.
        report.notes.append(f"checkpoint {n} was deleted by the writer while this ran")
        return None
    cp = decode_checkpoint(data, f"checkpoint {n} of {store.url}")
    return CheckpointInfo(
        number=n,
        bytes=len(data),
        immortal=cp.immortal,
        class_path=cp.class_path,
        class_version=cp.class_version,
        chunk=cp.chunk,
        epoch=cp.epoch,
        next_page=cp.next_page,
        next_call_id=cp.next_call_id,
        state_bytes=len(cp.state),
        inputs={source: list(mark) for source, mark in cp.inputs.items()},
        outputs={
            destination: OutputInfo(nxt, len(entries), sum(len(m) for _, m in entries))
            for destination, (nxt, entries) in cp.outputs.items()
        },
        incarnation=cp.incarnation,
        peers=dict(cp.peers),
    )


# --- chunks ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Scan:
    size: int | None
    records: Iterator[tuple[int, int | None, bytes]]
    #: set once ``records`` is exhausted, for tiers whose raw bytes the scanner can see
    torn: TornTail | None = None
    torn_known: bool = False
    zero_fill: int = 0


@contextlib.contextmanager
def _scan_chunk(store: LogStore, n: int) -> Iterator[_Scan | None]:
    """Scan one chunk read-only; None if it disappeared (the writer retired it meanwhile)."""
    chunk_path = getattr(store, "chunk_path", None)
    raw_chunk = getattr(store, "raw_chunk", None)
    if callable(chunk_path):
        path = str(chunk_path(n))
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            raise StoreError(f"cannot open {path} to read it: {exc.strerror}") from exc
        try:
            scan = scan_file(fd, source=path)
            result = _Scan(scan.size, iter(()), torn_known=True)
            result.records = _typed(scan, result)
            yield result
        finally:
            os.close(fd)
    elif callable(raw_chunk):
        try:
            data = bytes(raw_chunk(n))
        except StoreError:
            yield None
            return
        scan = scan_records(data, source=f"{store.url} chunk {n}")
        result = _Scan(len(data), iter(()), torn_known=True)
        result.records = _typed(scan, result)
        yield result
    else:
        # A tier that only offers read_records: records, but no sizes and no torn-tail verdict.
        yield _Scan(None, ((offset, None, body) for offset, body in store.read_records(n)))


def _typed(scan: RecordScan, result: _Scan) -> Iterator[tuple[int, int | None, bytes]]:
    yield from scan
    result.zero_fill = scan.padding
    if scan.torn:
        reason = scan.torn_reason or "incomplete record"
        result.torn = TornTail(scan.valid_length, scan.size - scan.valid_length, reason)


def _read_chunk(
    store: LogStore,
    n: int,
    report: LogReport,
    page_inputs: dict[str, Watermark],
    expected_page: int | None,
) -> int | None:
    """Summarise chunk ``n`` into ``report``; returns the page number that should come next."""
    with _scan_chunk(store, n) as scan:
        if scan is None:
            report.notes.append(f"chunk {n} was deleted by the writer while this ran")
            return None
        info = ChunkInfo(number=n, bytes=scan.size)
        epochs: set[int] = set()
        header_seen = False
        for offset, rtype, body in scan.records:
            where = f"{store.url} chunk {n} offset {offset}"
            if not header_seen:
                header = decode_chunk_header(body, where)
                header_seen = True
                info.immortal = str(header.get("immortal"))
                info.first_page = int(header.get("first_page", 0))
                version, ident = header.get("class_version"), header.get("incarnation")
                info.class_version = version if isinstance(version, int) else None
                info.incarnation = ident if isinstance(ident, str) else None
                if expected_page is not None and info.first_page != expected_page:
                    report.notes.append(
                        f"chunk {n} starts at page {info.first_page} but page {expected_page} "
                        "was expected: pages are missing between chunks"
                    )
                expected_page = info.first_page
                continue
            if rtype == RecordType.SEAL or (rtype is None and is_seal(body)):
                seal = decode_seal(body, where)
                report.notes.append(
                    f"{where}: the log is sealed after page {seal.last_page}: the immortal "
                    f"moved to {seal.moved_to} (epoch {seal.epoch}) on {seal.sealed_at}"
                )
                continue
            if rtype is not None and rtype != RecordType.PAGE:
                report.notes.append(f"{where}: record of unknown type {rtype} skipped")
                continue
            page = decode_page(body, where)
            if expected_page is not None and page.number != expected_page:
                report.notes.append(
                    f"{where}: page {page.number} where page {expected_page} was expected"
                )
            expected_page = page.number + 1
            info.pages += 1
            if info.page_range is None:
                info.page_range = [page.number, page.number]
            info.page_range[1] = page.number
            for entry in page.entries:
                info.messages += entry.count
                info.impulses += entry.count - entry.replayable
            epochs.add(page.epoch)
            for source, (total, replayable) in page.inputs.items():
                page_inputs[source] = Watermark(total, replayable, page=page.number)
            for destination, replayable in page.trims.items():
                report.trims[destination] = Trim(replayable, page.number)
        info.epochs = sorted(epochs)
        info.torn_known = scan.torn_known
        info.torn = scan.torn
        info.zero_fill = scan.zero_fill
    report.chunks.append(info)
    return expected_page


def _merge_inputs(
    page_inputs: dict[str, Watermark], checkpoints: list[CheckpointInfo]
) -> dict[str, Watermark]:
    """Latest watermark per source: a page after the newest checkpoint beats the checkpoint.

    The checkpoint fills in sources whose pages were deleted along with old chunks.
    """
    merged = dict(page_inputs)
    if checkpoints:
        newest = checkpoints[-1]
        for source, (total, replayable) in newest.inputs.items():
            seen = merged.get(source)
            if seen is None or (seen.page is not None and seen.page < newest.next_page):
                merged[source] = Watermark(total, replayable, checkpoint=newest.number)
    return dict(sorted(merged.items()))


# --- text output ----------------------------------------------------------------------------


def write_text(report: LogReport, out: TextIO) -> None:
    """Human-readable, in the order an operator asks: who writes, what is saved, what is logged."""
    p = out.write
    p(f"log: {report.directory or report.log}\n")
    p(f"immortal: {report.immortal or 'unknown (nothing logged yet)'}\n")
    if report.lock is not None:
        lock = report.lock
        if lock.pid is None:
            p(f"lock: {lock.state}\n")
        else:
            host = f" on host {lock.host}" if lock.host is not None else ""
            since = f" since {lock.since}" if lock.since is not None else ""
            p(f"lock: {lock.state}: pid {lock.pid}{host}{since}\n")

    if report.incarnation is not None:
        p(f"incarnation: {report.incarnation} (the log's id; a peer refuses a new one)\n")
    p(f"\ncheckpoints: {len(report.checkpoints)}\n")
    for cp in report.checkpoints:
        p(
            f"  checkpoint {cp.number}: {cp.bytes} bytes, immortal {cp.immortal}, "
            f"class {cp.class_path} version {cp.class_version}\n"
            f"    epoch {cp.epoch}, next page {cp.next_page}, next call id {cp.next_call_id}, "
            f"state {cp.state_bytes} bytes\n"
        )
        inputs = ", ".join(f"{s} {t}/{r}" for s, (t, r) in sorted(cp.inputs.items()))
        p(f"    inputs (total/replayable): {inputs or 'none'}\n")
        outputs = ", ".join(
            f"{d} {o.messages} messages {o.bytes} bytes (next replayable {o.next_replayable})"
            for d, o in sorted(cp.outputs.items())
        )
        p(f"    output buffers: {outputs or 'none'}\n")

    writing = report.lock is not None and report.lock.state == "held"
    p(f"\nchunks: {len(report.chunks)}\n")
    version: int | None = None  # of the chunk before
    for chunk in report.chunks:
        size = f"{chunk.bytes} bytes" if chunk.bytes is not None else "size unknown"
        if chunk.zero_fill:
            size += f" ({chunk.zero_fill} of them zeros after the last record, room to append)"
        if chunk.first_page is None:
            p(f"  chunk {chunk.number}: {size}, no chunk header yet\n")
        else:
            pages = f"{chunk.pages} pages"
            if chunk.page_range is not None:
                pages += f" ({chunk.page_range[0]}-{chunk.page_range[1]})"
            epochs = ", ".join(str(e) for e in chunk.epochs) or "none"
            p(
                f"  chunk {chunk.number}: {size}, first page {chunk.first_page}, {pages}, "
                f"{chunk.messages} messages ({chunk.impulses} impulses), epochs {epochs}\n"
            )
            if chunk.class_version is not None and version not in (None, chunk.class_version):
                p(
                    f"    class version {version} -> {chunk.class_version} from here: a live "
                    "upgrade converted the state\n"
                )
            version = chunk.class_version
        if chunk.torn is not None:
            t = chunk.torn
            p(
                f"    torn tail at offset {t.offset}: {t.bytes} bytes ({t.reason}); left as is, "
                "the next start of the immortal cuts it off\n"
            )
            if writing and chunk is report.chunks[-1]:
                p("    (its writer is running, so this may be a page it is appending right now)\n")
        elif not chunk.torn_known:
            p("    (this storage tier does not show whether the tail is torn)\n")

    p("\ninput watermarks (total/replayable received from each source):\n")
    if not report.inputs:
        p("  none\n")
    for source, mark in report.inputs.items():
        origin = f"page {mark.page}" if mark.page is not None else f"checkpoint {mark.checkpoint}"
        p(f"  {source}: {mark.total}/{mark.replayable} (from {origin})\n")

    p("\ntrim watermarks (replayable messages each destination has logged):\n")
    if not report.trims:
        p("  none\n")
    for destination, trim in sorted(report.trims.items()):
        p(f"  {destination}: {trim.replayable} (from page {trim.page})\n")

    if report.notes:
        p("\nnotes:\n")
        for note in report.notes:
            p(f"  {note}\n")
