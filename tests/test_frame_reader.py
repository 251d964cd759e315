"""The TCP link's reader returns exactly the bytes asked for, however the stream was chunked."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from ambrosia_edge.transports.tcp import _FrameReader
from hypothesis import given
from hypothesis import strategies as st


class Chunks:
    """A stream that delivers the given chunks, then ends (a unit test of the reader alone)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)

    async def receive(self, max_bytes: int) -> bytes:
        if not self.chunks:
            raise anyio.EndOfStream
        chunk = self.chunks.pop(0)
        assert len(chunk) <= max_bytes
        return chunk


def read_all(chunks: list[bytes], sizes: list[int]) -> list[bytes]:
    async def main() -> list[bytes]:
        reader = _FrameReader(Chunks(chunks))  # type: ignore[arg-type]
        return [await reader.read(n) for n in sizes]

    out: list[bytes] = anyio.run(main)
    return out


@given(st.data())
def test_reads_cut_the_stream_where_asked_whatever_the_chunks(data: Any) -> None:
    stream = data.draw(st.binary(min_size=2, max_size=300))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    reads = sorted(data.draw(st.sets(st.integers(1, len(stream) - 1), max_size=12)))
    sizes = [b - a for a, b in zip([0, *reads], [*reads, len(stream)], strict=True)]
    out = read_all(chunks, sizes)
    assert out == [stream[a:b] for a, b in zip([0, *reads], [*reads, len(stream)], strict=True)]
    assert all(type(piece) is bytes for piece in out)


def test_a_read_of_a_whole_chunk_returns_it_without_a_copy() -> None:
    chunk = bytes(range(200))
    assert read_all([chunk], [200])[0] is chunk


def test_a_stream_that_ends_inside_a_read_says_so() -> None:
    with pytest.raises(anyio.EndOfStream):
        read_all([b"abc", b"de"], [2, 4])


def test_buffered_counts_what_was_received_and_not_yet_read() -> None:
    async def main() -> list[int]:
        reader = _FrameReader(Chunks([b"abcdef", b"gh"]))  # type: ignore[arg-type]
        seen = [reader.buffered]
        for n in (2, 4, 2):
            await reader.read(n)
            seen.append(reader.buffered)
        return seen

    assert anyio.run(main) == [0, 4, 0, 0]
