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
