"""Pages written in pieces (gathered writes) are byte for byte the pages written whole."""

from __future__ import annotations

import os
from pathlib import Path

import cbor2
import pytest
from ambrosia_edge.storage import local
from ambrosia_edge.storage.local import LocalStore
from hypothesis import given
from hypothesis import strategies as st

from ambrosia_edge.page import BY_REFERENCE, Entry, Page, decode_page
from ambrosia_edge.records import RecordType, encode_record, encode_record_parts

SIZES = st.sampled_from([0, 1, 23, 24, 255, 256, BY_REFERENCE - 1, BY_REFERENCE, 70_000])


def as_list(page: Page) -> list[object]:
    """The page's CBOR array, as the format spec (docs/protocol.md) gives it."""
    return [
        page.number,
        page.epoch,
        [
            [e.source, e.first_total, e.first_replayable, e.count, e.replayable, e.batch]
            for e in page.entries
        ],
        {source: list(mark) for source, mark in page.inputs.items()},
        page.trims,
    ]


@given(
    st.integers(1, 2**64 - 1),
    st.integers(0, 2**32),
    st.lists(st.tuples(st.text(max_size=30), st.integers(1, 2**63), SIZES), max_size=6),
    st.dictionaries(st.text(max_size=8), st.tuples(st.integers(0, 2**40), st.integers(0, 9))),
    st.dictionaries(st.text(max_size=8), st.integers(0, 2**40)),
)
def test_the_pieces_join_to_the_cbor_of_the_page(
    number: int,
    epoch: int,
    entries: list[tuple[str, int, int]],
    inputs: dict[str, tuple[int, int]],
    trims: dict[str, int],
) -> None:
    page = Page(
        number,
        epoch,
        [Entry(s, n, n, size, size, os.urandom(size)) for s, n, size in entries],
        inputs,
        trims,
    )
    parts = page.encode_parts()
    assert b"".join(parts) == cbor2.dumps(as_list(page)) == page.encode()
    assert decode_page(page.encode(), "test") == page
    # large batches are pieces of their own, by reference; small ones are copied
    large = [e.batch for e in page.entries if len(e.batch) >= BY_REFERENCE]
    assert [p for p in parts if any(p is batch for batch in large)] == large
    assert len(parts) == 1 + 2 * len(large)


def test_a_record_in_pieces_is_the_record_whole() -> None:
    pieces = [b"", os.urandom(100), b"", os.urandom(BY_REFERENCE), b"x"]
    whole = encode_record(b"".join(pieces), RecordType.PAGE)
    assert b"".join(encode_record_parts(pieces, RecordType.PAGE)) == whole


@pytest.mark.parametrize("fsync", [True, False])
def test_an_append_of_more_pieces_than_one_write_takes(tmp_path: Path, fsync: bool) -> None:
    store = LocalStore(str(tmp_path / "log"), fsync=fsync)
    store.open()
    try:
        store.start_chunk(1)
        small = [bytes([i % 251]) * (i % 7) for i in range(3 * local._IOV_MAX)]
        big = [os.urandom(40_000) for _ in range(3)]
        for pieces in (small, big, [b"tail"]):
            store.append_parts(encode_record_parts(pieces, RecordType.PAGE))
    finally:
        store.close()
    bodies = [body for _, body in LocalStore(str(tmp_path / "log")).read_records(1)]
    assert bodies == [b"".join(small), b"".join(big), b"tail"]


def test_short_writes_are_resumed_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_pwritev, real_pwrite = os.pwritev, os.pwrite
    calls = 0

    def pwritev(fd: int, buffers: list[memoryview], offset: int) -> int:
        # a kernel may stop anywhere; this one stops at 1000 bytes and mid-buffer
        nonlocal calls
        calls += 1
        assert calls < 100, "the writes make no progress"
        out, budget = [], 1000
        for b in buffers:
            out.append(b[:budget])
            budget -= len(out[-1])
            if not budget:
                break
        return real_pwritev(fd, out, offset)

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        nonlocal calls
        calls += 1
        assert calls < 100, "the writes make no progress"
        return real_pwrite(fd, data[:999], offset)

    monkeypatch.setattr(os, "pwritev", pwritev)
    monkeypatch.setattr(os, "pwrite", pwrite)
    pieces = [os.urandom(n) for n in (10, 3000, 0, 1, 2500, 7)]
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        local._write_parts(fd, pieces, 5)
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(5) + b"".join(pieces)
