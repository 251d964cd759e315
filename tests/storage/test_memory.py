"""What only the memory tier does: its URLs, and logs that live as long as the process."""

from __future__ import annotations

import uuid

import pytest
from ambrosia_edge.storage.memory import MemoryStore, reset_memory_stores

from ambrosia_edge.errors import ConfigError
from ambrosia_edge.testing.storage_suite import page


def write_chunk(url: str, chunk: int, frames: list[bytes]) -> None:
    store = MemoryStore(url)
    store.open()
    try:
        store.start_chunk(chunk)
        for frame in frames:
            store.append(frame)
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
