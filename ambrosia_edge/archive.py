"""A portable archive of one immortal's log: offline migration from one device to another.

When the old device is off but its disk or SD card is readable, ``ambrosia-edge export LOG FILE``
packs what recovery needs, the newest checkpoint and every chunk from its number on, into one
file; ``ambrosia-edge import FILE LOG`` unpacks it into an empty log on the new device, where
``ambrosia-edge run`` recovers from it as from the original. Checkpoints and logs are
architecture-neutral, so the devices may differ (a PC and a 32-bit Pi).

The archive is a tar file (readable with ``tar tvf``) holding ``manifest.json`` first, then the
checkpoint and the chunks, each chunk as framed records exactly as a chunk file holds them. The
manifest has the archive's format and version, the immortal's name, and each member's size and
SHA-256. Import checks every member against it, and the version, before it writes anything: a
damaged or truncated copy, or an archive from a newer release, is refused with nothing written.
Nothing in an archive is ever extracted to a path it names.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .checkpoint import decode_checkpoint
from .errors import AmbrosiaError, LogLockedError, StoreError
from .page import decode_chunk_header
from .records import RecordType, encode_record, scan_records
from .store import LogStore, open_store

__all__ = [
    "ARCHIVE_FORMAT",
    "ARCHIVE_VERSION",
    "ArchiveError",
    "export_log",
    "import_log",
    "pack_log",
    "write_archive",
]

ARCHIVE_FORMAT = "ambrosia-edge/archive"
ARCHIVE_VERSION = 1
MANIFEST = "manifest.json"


class ArchiveError(AmbrosiaError):
    """An archive that cannot be written or imported; the message says what to do."""

    code = "archive"


@dataclass(frozen=True)
class Exported:
    """What went into an archive."""

    immortal: str
    checkpoint: int | None
    chunks: list[int]
    bytes: int


# ---------------------------------------------------------------------------------------------
# export


def export_log(url: str, archive: str | os.PathLike[str]) -> Exported:
    """Write the newest checkpoint of the log at ``url`` and the chunks after it to ``archive``.

    Refuses a log that a running immortal writes (stop it first: its log goes on growing) and a
    location without a log. The archive is written beside its final name and renamed into
    place, so an interrupted export leaves no half archive under that name.
    """
    store = open_store(url)
    checkpoints, chunks = store.list_checkpoints(), store.list_chunks()
    if not checkpoints and not chunks:
        raise ArchiveError(f"export: there is no log at {url} (no checkpoint, no chunk)")
    with _reading(store, url):
        manifest, members = pack_log(store, url)
    target = Path(archive)
    partial = target.with_name(target.name + ".partial")
    try:
        with open(partial, "wb") as fh:
            write_archive(manifest, members, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ArchiveError(f"export: cannot write {target}: {exc.strerror or exc}") from None
    total = sum(len(data) for _, data in members)
    return Exported(manifest["immortal"], manifest["checkpoint"], manifest["chunks"], total)


def pack_log(store: LogStore, url: str) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The manifest and members of an archive of the log in ``store``: its newest checkpoint
    and every chunk from that one on. The caller keeps writers away meanwhile (``export``
    holds the writer lock; a live migration holds every input first)."""
    checkpoints, chunks = store.list_checkpoints(), store.list_chunks()
    newest = checkpoints[-1] if checkpoints else None
    members: list[tuple[str, bytes]] = []
    immortal = ""
    if newest is not None:
        data = store.read_checkpoint(newest)
        immortal = decode_checkpoint(data, f"{url} checkpoint {newest}").immortal
        members.append((f"checkpoint-{newest:08d}", data))
    kept = [c for c in chunks if newest is None or c >= newest]
    for chunk in kept:
        framed = bytearray()
        for position, (rtype, body) in enumerate(_typed_records(store, chunk)):
            if position == 0 and rtype == RecordType.CHUNK_HEADER and not immortal:
                where = f"{url} chunk {chunk}"
                immortal = str(decode_chunk_header(body, where).get("immortal", ""))
            framed += encode_record(body, rtype)
        members.append((f"chunk-{chunk:08d}", bytes(framed)))
    manifest = {
        "format": ARCHIVE_FORMAT,
        "version": ARCHIVE_VERSION,
        "immortal": immortal,
        "checkpoint": newest,
        "chunks": kept,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": {
            name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in members
        },
    }
    return manifest, members


def write_archive(
    manifest: dict[str, Any], members: list[tuple[str, bytes]], fileobj: IO[bytes]
) -> None:
    """The archive itself: a tar file, the manifest first."""
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, MANIFEST, json.dumps(manifest, indent=2).encode())
        for name, data in members:
            _add(tar, name, data)


@contextlib.contextmanager
def _reading(store: LogStore, url: str) -> Iterator[None]:
    """Hold the writer lock while reading, so no running immortal changes the log meanwhile;
    a log on read-only media (an SD card mounted read-only) is read without it."""
    try:
        store.open()
    except LogLockedError as exc:
        raise ArchiveError(
            f"export: the log at {url} is in use by a running immortal ({exc}); stop it first, "
            "or move it live with --migrate-from"
        ) from None
    except (StoreError, OSError):
        pass  # read-only: nobody can be writing it here either
    try:
        yield
    finally:
        store.close()


def _typed_records(store: LogStore, chunk: int) -> Iterator[tuple[int, bytes]]:
    typed = getattr(store, "read_typed_records", None)
    if typed is not None:
        for _, rtype, body in typed(chunk):
            yield rtype, body
        return
    # A tier that only offers read_records: a chunk is its header, then pages.
    for position, (_, body) in enumerate(store.read_records(chunk)):
        yield (RecordType.CHUNK_HEADER if position == 0 else RecordType.PAGE), body


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------------------------------------
# import


def import_log(archive: str | os.PathLike[str], url: str, *, sync: bool = True) -> dict[str, Any]:
    """Unpack ``archive`` into the empty log location ``url``; returns the manifest.

    Everything is checked before the first write: the format and version, every member's size
    and checksum, the records in each chunk; and ``url`` must hold no log yet. ``sync=False``
    leaves making the files durable to the caller (who knows which they are; ``os.sync``
    flushes every file system of the machine).
    """
    path = Path(archive)
    members = _verified_members(path)
    manifest: dict[str, Any] = json.loads(members.pop(MANIFEST))
    store = open_store(url)
    existing = store.list_checkpoints() + store.list_chunks()
    if existing:
        raise ArchiveError(
            f"import: {url} already holds a log; import into an empty location (or move that "
            "log aside first); nothing was written"
        )
    chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
    for chunk in manifest["chunks"]:
        name = f"chunk-{chunk:08d}"
        scan = scan_records(members[name], source=f"{path}:{name}")
        records = [(rtype, body) for _, rtype, body in scan]
        if scan.torn:
            raise ArchiveError(f"import: {path}: {name} ends in a torn record; nothing was written")
        chunks.append((chunk, records))

    store = open_store(url, fsync=False)  # one sync at the end, not one per record
    store.open()
    try:
        checkpoint = manifest["checkpoint"]
        if checkpoint is not None:
            store.write_checkpoint(checkpoint, members[f"checkpoint-{checkpoint:08d}"])
        for chunk, records in chunks:
            store.start_chunk(chunk)
            for rtype, body in records:
                store.append(encode_record(body, rtype))
    finally:
        store.close()
    if sync:
        os.sync()
    return manifest


def _verified_members(path: Path) -> dict[str, bytes]:
    """The archive's members by name, every one checked against the manifest."""
    try:
        with tarfile.open(path, "r:") as tar:
            members: dict[str, bytes] = {}
            for info in tar:
                if not info.isfile():
                    raise ArchiveError(f"import: {path}: {info.name!r} is not a regular file")
                handle = tar.extractfile(info)
                assert handle is not None
                members[info.name] = handle.read()
    except FileNotFoundError:
        raise ArchiveError(f"import: {path} does not exist") from None
    except (tarfile.TarError, EOFError) as exc:
        raise ArchiveError(
            f"import: {path} is not an ambrosia-edge archive, or it is truncated ({exc})"
        ) from None
    except OSError as exc:
        raise ArchiveError(f"import: cannot read {path}: {exc.strerror or exc}") from None
    raw = members.get(MANIFEST)
    if raw is None:
        raise ArchiveError(f"import: {path} has no {MANIFEST}; it is not an ambrosia-edge archive")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise ArchiveError(f"import: {path}: {MANIFEST} is not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise ArchiveError(f"import: {path} is not an ambrosia-edge archive")
    version = manifest.get("version")
    if not isinstance(version, int) or version > ARCHIVE_VERSION:
        raise ArchiveError(
            f"import: {path} is archive format version {version}, newer than this release "
            f"reads (version {ARCHIVE_VERSION}); upgrade ambrosia-edge on this device"
        )
    checkpoint, chunks, files = (manifest.get(k) for k in ("checkpoint", "chunks", "files"))
    well_formed = (
        isinstance(chunks, list)
        and all(isinstance(c, int) for c in chunks)
        and (checkpoint is None or isinstance(checkpoint, int))
        and isinstance(files, dict)
        and all(isinstance(want, dict) for want in files.values())
    )
    if not well_formed:
        raise ArchiveError(f"import: {path}: {MANIFEST} is malformed; export the log again")
    assert isinstance(files, dict) and isinstance(chunks, list)
    expected = set(files) | {MANIFEST}
    if set(members) != expected:
        odd = sorted(set(members) ^ expected)
        raise ArchiveError(
            f"import: {path}: the files do not match the manifest ({', '.join(odd)}); "
            "nothing was written"
        )
    for name, want in files.items():
        data = members[name]
        if len(data) != want.get("bytes") or hashlib.sha256(data).hexdigest() != want.get("sha256"):
            raise ArchiveError(
                f"import: {path}: {name} does not match its checksum in the manifest (the "
                "archive is damaged; export it again or copy it anew); nothing was written"
            )
    names = [f"chunk-{c:08d}" for c in chunks]
    if checkpoint is not None:
        names.append(f"checkpoint-{checkpoint:08d}")
    if sorted(names) != sorted(files):
        raise ArchiveError(f"import: {path}: the manifest's chunks do not match its files")
    return members
