"""Large appends on the local tier bypass the page cache (O_DIRECT) and read back exactly."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from ambrosia_edge.storage import local
from ambrosia_edge.storage.local import DIRECT_MIN_RECORD, LocalStore

from ambrosia_edge.records import RecordType, encode_record

pytestmark = pytest.mark.skipif(not hasattr(os, "O_DIRECT"), reason="no O_DIRECT here")

BIG = DIRECT_MIN_RECORD


def record(size: int, seed: int) -> bytes:
    return encode_record(bytes([seed]) * size, RecordType.PAGE)


def bodies(path: Path) -> list[bytes]:
    return [body for _, body in LocalStore(str(path)).read_records(1)]


def test_small_and_large_appends_in_any_order_read_back_exactly(tmp_path: Path) -> None:
    # small then large (the block it starts in is read back), large then large (kept from the
    # last write), large then small (a buffered write into a block written directly)
    sizes = [100, BIG, BIG + 1, 3, BIG + 4095, 7000, 5, BIG * 3 + 17, 1]
    records = [record(n, i) for i, n in enumerate(sizes)]
    store = LocalStore(str(tmp_path / "log"))
    store.open()
    try:
        store.start_chunk(1)
        for r in records:
            store.append(r)
        assert store._direct_fd >= 0, "no large append went direct"
        # before close: the file may end in zeros after the last record, read as its end
        assert bodies(tmp_path / "log") == [bytes([i]) * n for i, n in enumerate(sizes)]
    finally:
        store.close()
    # after close: the chunk is exactly its records
    assert (tmp_path / "log" / local.chunk_name(1)).read_bytes() == b"".join(records)


def test_a_direct_append_ends_in_zeros_up_to_the_block_boundary(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"))
    store.open()
    try:
        store.start_chunk(1)
        store.append(record(10, 1))
        store.append(record(BIG, 2))
        data = (tmp_path / "log" / local.chunk_name(1)).read_bytes()
        end = len(record(10, 1)) + len(record(BIG, 2))
        assert len(data) % 4096 == 0 and len(data) > end
        assert data[:end] == record(10, 1) + record(BIG, 2)
        assert data[end:] == bytes(len(data) - end)
        store.append(record(10, 3))  # lands in the zeros
    finally:
        store.close()
    assert bodies(tmp_path / "log") == [b"\x01" * 10, b"\x02" * BIG, b"\x03" * 10]


def test_resuming_a_chunk_written_directly_continues_it(tmp_path: Path) -> None:
    with LocalStore(str(tmp_path / "log")) as store:
        store.start_chunk(1)
        store.append(record(BIG + 123, 1))
    with LocalStore(str(tmp_path / "log")) as store:
        store.resume_chunk(1)
        store.append(record(BIG, 2))
        store.append(record(1, 3))
    assert bodies(tmp_path / "log") == [b"\x01" * (BIG + 123), b"\x02" * BIG, b"\x03"]


def test_without_direct_io_large_appends_go_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def no_direct(path: str, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")  # as tmpfs answers
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_direct)
    store = LocalStore(str(tmp_path / "log"))
    store.open()
    try:
        store.start_chunk(1)
        store.append(record(BIG, 1))
        store.append(record(BIG, 2))
        assert store._direct_fd < 0
    finally:
        store.close()
    assert bodies(tmp_path / "log") == [b"\x01" * BIG, b"\x02" * BIG]


def test_no_fsync_means_no_direct_io(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "log"), fsync=False)
    store.open()
    try:
        store.start_chunk(1)
        store.append(record(BIG, 1))
        assert store._direct_fd < 0
    finally:
        store.close()
    assert bodies(tmp_path / "log") == [b"\x01" * BIG]
