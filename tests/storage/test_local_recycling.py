"""The local tier keeps deleted chunks' files as zeroed spares for later chunks, which never
show a byte of an old record."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest
from ambrosia_edge.storage import fallocate, local
from ambrosia_edge.storage.local import DIRECT_MIN_RECORD, MAX_SPARES, LocalStore

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.records import RecordType, encode_record
from ambrosia_edge.testing import Cluster, eventually


def zeroing_works(directory: Path) -> bool:
    probe = directory / "probe"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"x" * 8192)
        return fallocate.zero(fd, 0, 8192)
    finally:
        os.close(fd)
        probe.unlink()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    if not zeroing_works(tmp_path):
        pytest.skip("this file system cannot zero a file in place")
    return tmp_path / "log"


def record(size: int, seed: int) -> bytes:
    return encode_record(bytes([seed]) * size, RecordType.PAGE)


def bodies(path: Path, chunk: int) -> list[bytes]:
    return [body for _, body in LocalStore(str(path)).read_records(chunk)]


def spares(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("spare-*"))


def test_a_deleted_chunk_becomes_a_later_chunk_that_holds_only_new_records(log: Path) -> None:
    with LocalStore(str(log)) as store:
        store.start_chunk(1)
        for i, size in enumerate([100, DIRECT_MIN_RECORD, 5000]):
            store.append(record(size, i + 1))
        store.start_chunk(2)
        inode = (log / local.chunk_name(1)).stat().st_ino
        store.delete_chunk(1)
        assert store.list_chunks() == [2] and spares(log) == ["spare-00000001.log"]
        store.start_chunk(3)
        assert (log / local.chunk_name(3)).stat().st_ino == inode, "the spare was not taken"
        assert spares(log) == []
        assert bodies(log, 3) == []  # what a crash right now would leave: an empty chunk
        store.append(record(10, 9))
        assert bodies(log, 3) == [bytes([9]) * 10]
    assert (log / local.chunk_name(3)).read_bytes() == record(10, 9)


def test_at_most_max_spares_are_kept(log: Path) -> None:
    with LocalStore(str(log)) as store:
        for chunk in range(1, MAX_SPARES + 3):
            store.start_chunk(chunk)
            store.append(record(10, chunk))
        for chunk in range(1, MAX_SPARES + 2):
            store.delete_chunk(chunk)
        assert len(spares(log)) == MAX_SPARES
        assert store.list_chunks() == [MAX_SPARES + 2]


def test_a_spare_left_unzeroed_by_a_crash_is_deleted_on_open(log: Path) -> None:
    with LocalStore(str(log)) as store:
        store.start_chunk(1)
        store.append(record(10, 1))
    shutil.copy(log / local.chunk_name(1), log / "spare-00000007.tmp")  # old records inside
    with LocalStore(str(log)) as store:
        assert spares(log) == []
        store.start_chunk(2)
        assert bodies(log, 2) == []


#: Enough forks that the sink is still receiving them when its third chunk is recycled.
TOTAL = 10_000


class Producer(Immortal):
    """Forks in steps of 50, so that the sink logs many pages and rolls its log often."""

    def __init__(self) -> None:
        self.sent = 0

    async def on_first_start(self) -> None:
        self.this.fork.step()

    @rpc
    def step(self) -> None:
        sink = self.proxy("sink")
        for _ in range(50):
            sink.fork.take(self.sent, bytes(300))
            self.sent += 1
        if self.sent < TOTAL:
            self.this.fork.step()


class Sink(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @rpc
    def take(self, i: int, padding: bytes) -> None:
        self.seen.append(i)


@pytest.mark.anyio
async def test_an_immortal_crashing_on_recycled_chunks_runs_everything_exactly_once(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recycled: list[int] = []
    recycle = LocalStore._recycle

    def counted(store: LocalStore, chunk: int, path: Path) -> None:
        recycle(store, chunk, path)
        recycled.append(chunk)

    monkeypatch.setattr(LocalStore, "_recycle", counted)
    # pages of at most 16 KiB: the sink logs many and rolls its log often, however fast the
    # producer runs ahead of its flushes
    async with Cluster(log, checkpoint_bytes=64 * 1024, page_bytes=16 * 1024) as cluster:
        await cluster.start(Sink, "sink")
        await cluster.start(Producer, "producer", peers=["sink"])
        await eventually(lambda: len(recycled) >= 3, "chunks to be recycled")
        assert len(cluster["sink"].obj.seen) < TOTAL, "the crash came too late to test anything"
        await cluster.crash("sink")
        await cluster.start(Sink, "sink")
        await eventually(lambda: len(cluster["sink"].obj.seen) >= TOTAL, "every fork", 60)
        assert cluster["sink"].obj.seen == list(range(TOTAL))


def test_an_empty_chunk_is_simply_removed_and_recycling_goes_on(log: Path) -> None:
    with LocalStore(str(log)) as store:
        store.start_chunk(1)  # left empty
        store.start_chunk(2)
        store.append(record(10, 2))
        store.start_chunk(3)
        store.delete_chunk(1)
        store.delete_chunk(2)
        assert spares(log) == ["spare-00000002.log"]


def cannot_zero(fd: int, offset: int, length: int) -> bool:
    return False  # a file system without FALLOC_FL_ZERO_RANGE


def disk_full(fd: int, offset: int, length: int) -> bool:
    raise OSError(errno.ENOSPC, "No space left on device")  # extents could not be split


@pytest.mark.parametrize("zero", [cannot_zero, disk_full])
def test_where_a_chunk_cannot_be_zeroed_it_is_deleted_instead(
    log: Path, monkeypatch: pytest.MonkeyPatch, zero: object
) -> None:
    monkeypatch.setattr(fallocate, "zero", zero)
    with LocalStore(str(log)) as store:
        store.start_chunk(1)
        store.append(record(10, 1))
        store.start_chunk(2)
        store.delete_chunk(1)
        assert store.list_chunks() == [2] and spares(log) == []
        assert sorted(p.name for p in log.iterdir()) == ["LOCK", local.chunk_name(2)]
