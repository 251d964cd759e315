"""One behaviour for every storage tier: the shared suite, run against the local disk and
memory tiers (ambrosia_edge.testing.storage_suite; a third-party tier subclasses it the same way).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from ambrosia_edge.storage.local import LocalStore
from ambrosia_edge.storage.memory import MemoryStore, reset_memory_stores
from ambrosia_edge.storage.shared import SharedStore

from ambrosia_edge.store import LogStore
from ambrosia_edge.testing.storage_suite import StoreConformance


class TestLocalStore(StoreConformance):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "log")

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        assert isinstance(store, LocalStore)
        return store.chunk_path(chunk).read_bytes()

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        assert isinstance(store, LocalStore)
        store.chunk_path(chunk).write_bytes(data)

    def chunk_source(self, store: LogStore, chunk: int) -> str:
        assert isinstance(store, LocalStore)
        return str(store.chunk_path(chunk))


class TestMemoryStore(StoreConformance):
    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        yield f"memory://log-{uuid.uuid4().hex}"
        reset_memory_stores()

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        assert isinstance(store, MemoryStore)
        return bytes(store.raw_chunk(chunk))

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        assert isinstance(store, MemoryStore)
        store.raw_chunk(chunk)[:] = data


class TestATierThatOffersLess(StoreConformance):
    """A tier that declares it cannot show its chunks' bytes nor name a lock's holder is asked
    for neither (the memory tier, seen through the methods every tier has)."""

    raw_chunks = False
    lock_names_holder = False

    @pytest.fixture
    def store_url(self) -> Iterator[str]:
        yield f"memory://less-{uuid.uuid4().hex}"
        reset_memory_stores()


class TestSharedStore(StoreConformance):
    """The shared-mount tier on a local directory (its fencing needs no lock from the share)."""

    fencing = True

    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"nfs://{tmp_path / 'log'}?lease=0.4"

    def _segments(self, store: LogStore, chunk: int) -> list[tuple[Path, int | None]]:
        assert isinstance(store, SharedStore)
        return store.segment_paths(chunk)

    def read_chunk_bytes(self, store: LogStore, chunk: int) -> bytes:
        data = b""
        for path, limit in self._segments(store, chunk):
            data += path.read_bytes()[:limit]
        return data

    def write_chunk_bytes(self, store: LogStore, chunk: int, data: bytes) -> None:
        # one segment of the newest epoch that wrote the chunk, holding all of ``data``
        segments = self._segments(store, chunk)
        newest = segments[-1][0]
        for path, _ in segments:
            path.unlink()
        newest.with_name(newest.name.split(".after-")[0].removesuffix(".log") + ".log").write_bytes(
            data
        )

    def chunk_source(self, store: LogStore, chunk: int) -> str:
        return str(self._segments(store, chunk)[-1][0])

    def expire_lease(self, store: LogStore) -> None:
        assert isinstance(store, SharedStore)
        store.lease.expire()
