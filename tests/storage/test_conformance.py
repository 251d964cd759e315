"""One behaviour for every storage tier: each test runs against the local disk and memory tiers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeAlias

import pytest
from ambrosia_edge.storage.local import LocalStore, read_lock_holder
from ambrosia_edge.storage.memory import MemoryStore, reset_memory_stores

from ambrosia_edge.errors import (
    CheckpointError,
    ConfigError,
    CorruptLogError,
    LogLockedError,
    StoreError,
)
from ambrosia_edge.records import RecordType, encode_record
from ambrosia_edge.store import LogStore, open_store

Store: TypeAlias = LocalStore | MemoryStore

ADVICE = (
    "the files were left untouched; restore this chunk from a copy, "
    "or move it aside to recover from the previous checkpoint"
)


@pytest.fixture(params=["local", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "local":
        yield str(tmp_path / "log")
    else:
        yield f"memory://log-{uuid.uuid4().hex}"
        reset_memory_stores()


def make(url: str) -> Store:
    store = open_store(url)
    assert isinstance(store, LocalStore | MemoryStore)
    assert isinstance(store, LogStore)
    return store


def writer(url: str) -> Store:
    store = make(url)
    store.open()
    return store


def raw_read(store: Store, chunk: int) -> bytes:
    if isinstance(store, LocalStore):
        return store.chunk_path(chunk).read_bytes()
    return bytes(store.raw_chunk(chunk))


def raw_write(store: Store, chunk: int, data: bytes) -> None:
    if isinstance(store, LocalStore):
        store.chunk_path(chunk).write_bytes(data)
    else:
        store.raw_chunk(chunk)[:] = data


def chunk_source(store: Store, chunk: int) -> str:
    if isinstance(store, LocalStore):
        return str(store.chunk_path(chunk))
    return f"{store.url}/chunk-{chunk:08d}.log"


def page(body: bytes) -> bytes:
    return encode_record(body, RecordType.PAGE)


def offsets_of(frames: list[bytes]) -> list[int]:
    offsets, end = [], 0
    for frame in frames:
        offsets.append(end)
        end += len(frame)
    return offsets


def write_chunk(url: str, chunk: int, frames: list[bytes]) -> None:
    store = writer(url)
    try:
        store.start_chunk(chunk)
        for frame in frames:
            store.append(frame)
    finally:
        store.close()


# -- appending and reading -----------------------------------------------------------------------


def test_append_and_read_back_in_order_across_reopen(store_url: str) -> None:
    frames = [
        encode_record(b"chunk header", RecordType.CHUNK_HEADER),
        page(b"first page"),
        page(b""),
        page(bytes(range(256)) * 40),
    ]
    write_chunk(store_url, 1, frames)
    offsets = offsets_of(frames)

    reader = make(store_url)  # never opened: reading needs no writer role
    assert list(reader.read_records(1)) == [
        (offsets[0], b"chunk header"),
        (offsets[1], b"first page"),
        (offsets[2], b""),
        (offsets[3], bytes(range(256)) * 40),
    ]
    assert [(o, t) for o, t, _ in reader.read_typed_records(1)] == [
        (offsets[0], 0),
        (offsets[1], 1),
        (offsets[2], 1),
        (offsets[3], 1),
    ]
    assert raw_read(reader, 1) == b"".join(frames)

    again = writer(store_url)
    try:
        again.resume_chunk(1)
        again.append(page(b"after restart"))
    finally:
        again.close()
    assert list(make(store_url).read_records(1))[-1] == (len(b"".join(frames)), b"after restart")


@pytest.mark.parametrize("tail", ["cut", "damaged-last-byte", "zeroed", "zero-padding"])
def test_torn_tail_at_every_offset_of_the_last_record(store_url: str, tail: str) -> None:
    frames = [page(b"first"), page(b"second"), page(b"the last, torn record")]
    full = b"".join(frames)
    last = offsets_of(frames)[2]
    write_chunk(store_url, 1, frames)
    survivors = [(0, b"first"), (len(frames[0]), b"second")]
    for cut in range(last + 1, len(full) + 1):
        if tail == "cut":
            if cut == len(full):
                continue
            damaged = full[:cut]
        elif tail == "damaged-last-byte":
            damaged = full[: cut - 1] + bytes([full[cut - 1] ^ 0x20])
        elif tail == "zeroed":
            damaged = full[:last] + bytes(cut - last)
        else:
            damaged = full[:last] + bytes(cut - last + 4096)
        reader = make(store_url)
        raw_write(reader, 1, damaged)

        assert list(reader.read_records(1)) == survivors, cut
        assert raw_read(reader, 1) == damaged, cut  # a reader never repairs

        store = writer(store_url)
        try:
            assert list(store.read_records(1, repair=True)) == survivors, cut
            assert raw_read(store, 1) == full[:last], cut
            store.resume_chunk(1)
            store.append(page(b"appended after repair"))
        finally:
            store.close()
        assert list(make(store_url).read_records(1)) == [
            *survivors,
            (last, b"appended after repair"),
        ], cut


def test_resume_chunk_alone_cuts_a_torn_tail(store_url: str) -> None:
    frames = [page(b"first"), page(b"second")]
    write_chunk(store_url, 1, frames)
    store = writer(store_url)
    try:
        raw_write(store, 1, b"".join(frames) + page(b"torn")[:9])
        store.resume_chunk(1)
        assert raw_read(store, 1) == b"".join(frames)
        store.append(page(b"third"))
        assert [body for _, body in store.read_records(1)] == [b"first", b"second", b"third"]
    finally:
        store.close()


def test_middle_record_damage_is_corruption_and_touches_nothing(store_url: str) -> None:
    frames = [page(b"first"), page(b"middle"), page(b"x" * 400)]
    full = b"".join(frames)
    middle = offsets_of(frames)[1]
    write_chunk(store_url, 1, frames)
    # every byte, the length's high bytes too: the intact record after it shows it is not a tear
    positions = list(range(len(frames[1])))
    for i in positions:
        damaged = bytearray(full)
        damaged[middle + i] ^= 0x01
        store = make(store_url)
        raw_write(store, 1, bytes(damaged))
        source = chunk_source(store, 1)

        records = store.read_records(1)
        assert next(records) == (0, b"first")
        with pytest.raises(CorruptLogError) as info:
            next(records)
        message = str(info.value)
        assert message.startswith(f"corrupt log record in {source} at byte offset {middle}: "), i
        assert message.endswith(ADVICE), i
        assert raw_read(store, 1) == damaged, i

        store.open()
        try:
            with pytest.raises(CorruptLogError, match=f"at byte offset {middle}: "):
                list(store.read_records(1, repair=True))
            assert raw_read(store, 1) == damaged, i
            with pytest.raises(CorruptLogError, match=f"at byte offset {middle}: "):
                store.resume_chunk(1)
            assert raw_read(store, 1) == damaged, i
        finally:
            store.close()


def test_corruption_names_what_is_wrong(store_url: str) -> None:
    frames = [page(b"first"), page(b"middle"), page(b"last")]
    write_chunk(store_url, 1, frames)
    store = make(store_url)
    damaged = bytearray(b"".join(frames))
    damaged[len(frames[0]) + 12] ^= 0x01
    raw_write(store, 1, bytes(damaged))
    with pytest.raises(CorruptLogError) as info:
        list(store.read_records(1))
    assert str(info.value) == (
        f"corrupt log record in {chunk_source(store, 1)} at byte offset {len(frames[0])}: "
        f"checksum mismatch; {ADVICE}"
    )


def test_local_corruption_leaves_the_file_bytes_and_size_alone(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    frames = [page(b"first"), page(b"middle"), page(b"last")]
    write_chunk(url, 1, frames)
    store = LocalStore(url)
    path = store.chunk_path(1)
    damaged = bytearray(path.read_bytes())
    damaged[len(frames[0]) + 14] = ord("!")
    path.write_bytes(damaged)
    before = os.stat(path)
    store.open()
    try:
        with pytest.raises(CorruptLogError, match=str(path)):
            store.resume_chunk(1)
    finally:
        store.close()
    after = os.stat(path)
    assert path.read_bytes() == damaged
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def test_reader_beside_a_writer_sees_a_torn_looking_tail_as_the_end(store_url: str) -> None:
    store = writer(store_url)
    try:
        store.start_chunk(1)
        store.append(page(b"one"))
        store.append(page(b"two"))
        done = raw_read(store, 1)
        in_flight = done + page(b"three")[:15]
        raw_write(store, 1, in_flight)
        reader = make(store_url)
        assert [body for _, body in reader.read_records(1)] == [b"one", b"two"]
        assert raw_read(reader, 1) == in_flight
    finally:
        store.close()


def test_reading_a_missing_chunk(store_url: str) -> None:
    with pytest.raises(StoreError, match="no chunk 9 in log"):
        make(store_url).read_records(9)


# -- chunks --------------------------------------------------------------------------------------


def test_rollover_to_a_new_chunk(store_url: str) -> None:
    store = writer(store_url)
    try:
        store.start_chunk(1)
        store.append(page(b"in one"))
        store.start_chunk(2)
        store.append(page(b"in two"))
        store.append(page(b"also in two"))
        assert store.list_chunks() == [1, 2]
        with pytest.raises(StoreError, match="already exists"):
            store.start_chunk(2)
        with pytest.raises(StoreError, match="being appended to"):
            store.delete_chunk(2)
    finally:
        store.close()
    reader = make(store_url)
    assert list(reader.read_records(1)) == [(0, b"in one")]
    assert [body for _, body in reader.read_records(2)] == [b"in two", b"also in two"]


def test_listing_after_restart(store_url: str) -> None:
    store = writer(store_url)
    try:
        assert (store.list_chunks(), store.list_checkpoints()) == ([], [])
        for n in (1, 2, 3):
            store.start_chunk(n)
            store.append(page(f"page {n}".encode()))
        store.write_checkpoint(1, b"cp1")
        store.write_checkpoint(3, b"cp3")
        store.delete_chunk(1)
        store.delete_chunk(7)  # missing is fine
    finally:
        store.close()
    again = writer(store_url)
    try:
        assert again.list_chunks() == [2, 3]
        assert again.list_checkpoints() == [1, 3]
        assert list(again.read_records(3)) == [(0, b"page 3")]
    finally:
        again.close()


def test_writer_operations_need_the_writer_role(store_url: str) -> None:
    write_chunk(store_url, 1, [page(b"x")])
    store = make(store_url)
    attempts: list[Callable[[], object]] = [
        lambda: store.start_chunk(2),
        lambda: store.resume_chunk(1),
        lambda: store.append(page(b"y")),
        lambda: store.write_checkpoint(1, b"cp"),
        lambda: store.delete_chunk(1),
        lambda: store.delete_checkpoint(1),
        lambda: store.read_records(1, repair=True),
    ]
    for attempt in attempts:
        with pytest.raises(StoreError, match=r"not open for writing|has no chunk open"):
            attempt()
    assert list(store.read_records(1)) == [(0, b"x")]


def test_append_needs_a_target_chunk(store_url: str) -> None:
    store = writer(store_url)
    try:
        with pytest.raises(StoreError):
            store.append(page(b"nowhere"))
        assert store.list_chunks() == []
    finally:
        store.close()


def test_close_is_idempotent(store_url: str) -> None:
    make(store_url).close()
    store = writer(store_url)
    store.close()
    store.close()
    again = writer(store_url)
    again.close()


# -- checkpoints ---------------------------------------------------------------------------------


def test_checkpoints(store_url: str) -> None:
    store = writer(store_url)
    try:
        store.write_checkpoint(1, b"\xa1aa\x01")
        store.write_checkpoint(2, b"two")
        store.write_checkpoint(2, b"two, rewritten")
        assert store.list_checkpoints() == [1, 2]
        assert store.read_checkpoint(1) == b"\xa1aa\x01"
        assert store.read_checkpoint(2) == b"two, rewritten"
        store.delete_checkpoint(1)
        store.delete_checkpoint(1)
        assert store.list_checkpoints() == [2]
        with pytest.raises(CheckpointError, match=r"checkpoint 1 not found: .*checkpoint-00000001"):
            store.read_checkpoint(1)
    finally:
        store.close()
    reader = make(store_url)
    assert reader.list_checkpoints() == [2]
    assert reader.read_checkpoint(2) == b"two, rewritten"


def test_local_leftovers_are_not_listed(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"))
    store.open()
    try:
        store.write_checkpoint(2, b"complete")
        store.start_chunk(1)
        (store.path / "checkpoint-00000003.cbor.tmp").write_bytes(b"half a checkp")
        (store.path / "checkpoint-3.cbor").write_bytes(b"not canonical")
        (store.path / "chunk-00000009.log.bak").write_bytes(b"")
        (store.path / "notes.txt").write_bytes(b"")
        assert store.list_checkpoints() == [2]
        assert store.list_chunks() == [1]
        assert sorted(p.name for p in store.path.iterdir()) == [
            "LOCK",
            "checkpoint-00000002.cbor",
            "checkpoint-00000003.cbor.tmp",
            "checkpoint-3.cbor",
            "chunk-00000001.log",
            "chunk-00000009.log.bak",
            "notes.txt",
        ]
    finally:
        store.close()


# -- one writer ----------------------------------------------------------------------------------


def test_a_second_writer_is_fenced_out(store_url: str) -> None:
    first = writer(store_url)
    second = make(store_url)
    try:
        with pytest.raises(LogLockedError) as info:
            second.open()
        message = str(info.value)
        assert f"is in use by pid {os.getpid()} on host {socket.gethostname()} since " in message
        assert message.endswith("; stop that process or pass another --log")
        assert info.value.code == "log-locked"
        first.start_chunk(1)
        first.append(page(b"still the writer"))
    finally:
        first.close()
    second.open()
    try:
        second.resume_chunk(1)
        second.append(page(b"the new writer"))
    finally:
        second.close()
    assert [body for _, body in make(store_url).read_records(1)] == [
        b"still the writer",
        b"the new writer",
    ]


CHILD = """
import sys
from ambrosia_edge.errors import LogLockedError
from ambrosia_edge.storage.local import LocalStore
store = LocalStore(sys.argv[1])
print([body.decode() for _, body in store.read_records(1)])
try:
    store.open()
except LogLockedError as exc:
    print(exc)
    sys.exit(3)
store.close()
print("opened")
"""


def run_child(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CHILD, url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_local_writer_fences_out_another_process(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    store = LocalStore(url)
    store.open()
    try:
        store.start_chunk(1)
        store.append(page(b"held"))
        child = run_child(url)
        assert child.returncode == 3, child.stderr
        lines = child.stdout.splitlines()
        assert lines[0] == "['held']"
        assert lines[1].startswith(
            f"log {store.path} is in use by pid {os.getpid()} on host {socket.gethostname()} since "
        )
        assert lines[1].endswith("; stop that process or pass another --log")
    finally:
        store.close()
    child = run_child(url)
    assert (child.returncode, child.stdout.splitlines()) == (0, ["['held']", "opened"])


def test_local_lock_holder_record(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"))
    assert read_lock_holder(store.path) is None
    store.open()
    try:
        holder = read_lock_holder(store.path)
        assert holder is not None
        assert (holder["pid"], holder["host"]) == (os.getpid(), socket.gethostname())
        assert holder["since"].endswith("Z")
        assert read_lock_holder(store.path / "LOCK") == holder
    finally:
        store.close()
    assert read_lock_holder(store.path) is None
    assert (store.path / "LOCK").exists()


# -- URLs ----------------------------------------------------------------------------------------


def test_local_url_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "logs" / "a b"
    assert LocalStore(str(target)).path == target
    assert LocalStore("file://" + str(tmp_path / "logs" / "a%20b")).path == target
    assert LocalStore("file://localhost" + str(target)).path == target
    assert LocalStore("logs/a b").path == target
    assert isinstance(open_store("logs/a b"), LocalStore)
    for bad in ("file://otherhost/x", "file://", "s3://bucket/x", ""):
        with pytest.raises(ConfigError):
            LocalStore(bad)


def test_local_open_creates_parent_directories(tmp_path: Path) -> None:
    store = LocalStore(f"file://{tmp_path}/deep/er/log")
    store.open()
    try:
        store.start_chunk(1)
        assert (tmp_path / "deep" / "er" / "log" / "chunk-00000001.log").is_file()
    finally:
        store.close()


def test_memory_url_forms() -> None:
    assert MemoryStore("memory://a").name == "a"
    assert MemoryStore("memory://a/b").name == "a/b"
    for bad in ("memory://", "file:///x"):
        with pytest.raises(ConfigError):
            MemoryStore(bad)


def test_memory_logs_outlive_their_store_but_not_a_reset() -> None:
    url = f"memory://reset-{uuid.uuid4().hex}"
    write_chunk(url, 1, [page(b"kept")])
    assert list(MemoryStore(url).read_records(1)) == [(0, b"kept")]
    reset_memory_stores()
    assert MemoryStore(url).list_chunks() == []


def test_local_without_fsync_still_works(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"), fsync=False)
    store.open()
    try:
        store.start_chunk(1)
        store.append(page(b"fast"))
        # no zeros written ahead either: they only make flushes cheaper
        assert store.chunk_path(1).stat().st_size == len(page(b"fast"))
        store.write_checkpoint(1, b"cp")
    finally:
        store.close()
    assert list(LocalStore(str(tmp_path / "log")).read_records(1)) == [(0, b"fast")]


# -- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount: {exc}")
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True, timeout=60)


def fill_until_full(store: LocalStore, size: int, logged: list[bytes]) -> StoreError:
    """Append records with ``size``-byte bodies until one fails; ``logged`` gets the others."""
    store.start_chunk(1)
    for n in range(1 << 20):
        body = bytes([n % 256]) * size
        try:
            store.append(page(body))
        except StoreError as exc:
            return exc
        logged.append(body)
    raise AssertionError("the disk never filled up")


def test_local_disk_full(tiny_disk: Path) -> None:
    filler = tiny_disk / "filler"
    filler.write_bytes(bytes(128 * 1024))
    store = LocalStore(str(tiny_disk / "log"))
    store.open()
    logged: list[bytes] = []
    try:
        error = fill_until_full(store, 70_000, logged)
        path = store.chunk_path(1)
        assert str(error) == (
            f"disk full writing {path}: the record was not logged; free space and restart"
        )
        assert 0 < len(logged) < 20
        assert path.stat().st_size == len(logged) * (12 + 70_000)
        assert [body for _, body in store.read_records(1)] == logged
        with pytest.raises(StoreError, match="stopped accepting records: disk full writing"):
            store.append(page(b"small"))
    finally:
        store.close()

    filler.unlink()
    restarted = LocalStore(str(tiny_disk / "log"))
    restarted.open()
    try:
        assert [body for _, body in restarted.read_records(1, repair=True)] == logged
        restarted.resume_chunk(1)
        restarted.append(page(b"after freeing space"))
    finally:
        restarted.close()
    assert [body for _, body in LocalStore(str(tiny_disk / "log")).read_records(1)] == [
        *logged,
        b"after freeing space",
    ]


def test_local_disk_full_with_small_records_and_zero_fill(tiny_disk: Path) -> None:
    # The zeros written ahead of small appends must never cost a record that would have fit.
    (tiny_disk / "filler").write_bytes(bytes(128 * 1024))
    store = LocalStore(str(tiny_disk / "log"))
    store.open()
    logged: list[bytes] = []
    try:
        assert "disk full" in str(fill_until_full(store, 3000, logged))
        assert [body for _, body in store.read_records(1)] == logged
    finally:
        store.close()
    # what fits in ~896 KiB, give or take a page of tmpfs bookkeeping
    assert len(logged) * 3012 > 800 * 1024
    assert store.chunk_path(1).stat().st_size == len(logged) * 3012


# -- zeros written ahead of small appends (local tier) -----------------------------------------


def test_local_small_appends_land_in_zero_filled_space(tmp_path: Path) -> None:
    from ambrosia_edge.storage.local import ZERO_FILL, ZERO_FILL_MAX_RECORD

    store = LocalStore(str(tmp_path / "log"))
    store.open()
    try:
        store.start_chunk(1)
        path = store.chunk_path(1)
        records = [page(bytes([n]) * 100) for n in range(50)]
        for record in records:
            store.append(record)
        end = sum(map(len, records))
        size = path.stat().st_size
        assert end < ZERO_FILL <= size < end + ZERO_FILL + 4096
        assert path.read_bytes()[end:] == bytes(size - end)
        # a reader (no lock, beside the writer) sees the records and a clean end, not a torn tail
        assert [b for _, b in LocalStore(str(tmp_path / "log")).read_records(1)] == [
            bytes([n]) * 100 for n in range(50)
        ]
        big = page(b"x" * (ZERO_FILL_MAX_RECORD + 1))
        while path.stat().st_size >= end + len(big):  # use the zeros up, then one big append
            store.append(records[0])
            end += len(records[0])
        store.append(big)
        assert path.stat().st_size == end + len(big)  # no zeros after a large record
        store.append(records[0])
        assert path.stat().st_size > end + len(big) + len(records[0])
        store.start_chunk(2)
        assert path.stat().st_size == end + len(big) + len(records[0])  # chunk 1 cut to its end
        store.append(records[1])
        assert store.chunk_path(2).stat().st_size > len(records[1])
    finally:
        store.close()
    assert store.chunk_path(2).stat().st_size == len(records[1])  # close cuts the zeros too


def test_local_restart_after_a_crash_with_zero_fill(tmp_path: Path) -> None:
    url = str(tmp_path / "log")
    store = LocalStore(url)
    store.open()
    store.start_chunk(1)
    store.append(page(b"one"))
    store.append(page(b"two"))
    crashed = store.chunk_path(1).read_bytes()  # what a crash leaves: records, then zeros
    store.close()
    store.chunk_path(1).write_bytes(crashed)
    assert len(crashed) > 2 * len(page(b"one"))

    again = LocalStore(url)
    again.open()
    try:
        assert [b for _, b in again.read_records(1, repair=True)] == [b"one", b"two"]
        again.resume_chunk(1)
        again.append(page(b"three"))
    finally:
        again.close()
    assert [b for _, b in LocalStore(url).read_records(1)] == [b"one", b"two", b"three"]
    assert again.chunk_path(1).stat().st_size == 3 * len(page(b"one")) + 2
