"""What only the local disk tier does: files, a lock another process sees, a full disk, zeros
written ahead. The contract every tier keeps is tested in test_conformance.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ambrosia_edge.storage.local import LocalStore, read_lock_holder

from ambrosia_edge.errors import ConfigError, CorruptLogError, StoreError
from ambrosia_edge.store import open_store
from ambrosia_edge.testing.storage_suite import page


def write_chunk(url: str, chunk: int, frames: list[bytes]) -> None:
    store = LocalStore(url)
    store.open()
    try:
        store.start_chunk(chunk)
        for frame in frames:
            store.append(frame)
    finally:
        store.close()


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
