"""The asyncio link's frame parser: any split of the byte stream gives the same frames, large
bodies are read into bytes of their own, and a malformed head or a slow reader are handled."""

from __future__ import annotations

import random
import sys

import anyio
import pytest
from ambrosia_edge.transports import asyncio_link
from ambrosia_edge.transports.asyncio_link import LARGE_BODY, AsyncioLink, FrameProtocol

from ambrosia_edge import wire
from ambrosia_edge.errors import BrokenByPeer, ProtocolError
from ambrosia_edge.testing import eventually
from ambrosia_edge.wire import Frame

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the protocol API is asyncio's


class Transport:
    """What FrameProtocol and AsyncioLink use of an asyncio transport."""

    def __init__(self) -> None:
        self.reading = True
        self.aborted = False
        self.closed = False
        self.sent: list[bytes] = []

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def get_extra_info(self, name: str) -> object:
        return ("127.0.0.1", 1) if name == "peername" else None


def connected() -> tuple[FrameProtocol, Transport]:
    protocol, transport = FrameProtocol(), Transport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    protocol.authenticated()
    return protocol, transport


def feed(protocol: FrameProtocol, data: bytes, rng: random.Random) -> None:
    """Deliver ``data`` as a socket would: into the buffers the protocol offers, in reads of
    random sizes."""
    at = 0
    while at < len(data):
        buffer = protocol.get_buffer(-1)
        assert len(buffer) > 0
        n = min(len(buffer), len(data) - at, rng.choice([1, 7, 4096, 65536, 1 << 20]))
        buffer[:n] = data[at : at + n]
        protocol.buffer_updated(n)
        at += n


def frames() -> list[tuple[Frame, bytes, bytes]]:
    """(type, fixed head, rest) of assorted frames, as receive_split(16) returns DATA."""
    rng = random.Random(1)
    out = []
    for size in (1, 100, LARGE_BODY - 1, LARGE_BODY, LARGE_BODY + 1, 3 << 20):
        out.append((Frame.DATA, wire.data(5, 1, 1, [b""])[5:21], rng.randbytes(size)))
        out.append((Frame.ACK, b"", wire.ack(size, size)[5:]))
    return out


def encoded(frame: tuple[Frame, bytes, bytes]) -> bytes:
    ftype, head, rest = frame
    return wire.frame(ftype, head + rest)


@pytest.mark.parametrize("seed", range(5))
async def test_any_split_of_the_stream_gives_the_same_frames(seed: int) -> None:
    protocol, _ = connected()
    expected = frames()
    feed(protocol, b"".join(encoded(f) for f in expected), random.Random(seed))
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    for ftype, head, rest in expected:
        got = await link.receive_split(wire.DATA_HEAD_SIZE if ftype is Frame.DATA else 0)
        assert got == (ftype, head, rest)
        assert type(got[2]) is bytes
    assert link.buffered == 0


async def test_a_frame_asked_for_whole_is_whole() -> None:
    protocol, _ = connected()
    frame = frames()[-2]  # a large DATA frame, parsed with its head apart
    feed(protocol, encoded(frame), random.Random(0))
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    assert await link.receive() == (Frame.DATA, frame[1] + frame[2])


async def test_a_malformed_head_ends_the_link_after_the_frames_before_it() -> None:
    protocol, transport = connected()
    good = encoded(frames()[1])
    feed(protocol, good + b"\xff\xff\xff\xff\x01", random.Random(0))
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    assert (await link.receive())[0] is Frame.ACK
    with pytest.raises(ProtocolError, match="frame length"):
        await link.receive()
    # reading stops; the link stays up for the coordinator to refuse the peer and close it
    assert not transport.reading and not transport.aborted


async def test_reading_pauses_while_frames_pile_up_and_resumes_as_they_are_taken() -> None:
    protocol, transport = connected()
    body = bytes(1 << 20)
    feed(protocol, wire.frame(Frame.DATA, bytes(16) + body) * 9, random.Random(0))
    assert not transport.reading, "9 MiB waiting and still reading"
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    for _ in range(5):
        await link.receive_split(16)
    assert not transport.reading, "resumed with over 4 MiB still waiting"
    await link.receive_split(16)
    assert transport.reading


async def test_the_peer_closing_breaks_the_link_once_its_frames_are_read() -> None:
    protocol, _ = connected()
    feed(protocol, encoded(frames()[1]), random.Random(0))
    protocol.eof_received()
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    assert (await link.receive())[0] is Frame.ACK
    with pytest.raises(BrokenByPeer):
        await link.receive()
    with pytest.raises(BrokenByPeer):
        await link.send(b"x")


async def test_a_flood_of_empty_frames_pauses_reading_too() -> None:
    protocol, transport = connected()
    feed(protocol, wire.frame(Frame.REFUSE, b"") * 100_000, random.Random(0))
    assert not transport.reading, "100,000 frames waiting and still reading"


async def test_a_body_that_cannot_be_allocated_breaks_only_its_link(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_memory(n: int) -> tuple[bytes, memoryview]:
        raise MemoryError

    monkeypatch.setattr(asyncio_link, "_bytes_to_fill", no_memory)
    protocol, transport = connected()
    feed(protocol, encoded(frames()[-2]), random.Random(0))
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    with pytest.raises(BrokenByPeer):
        await link.receive()
    assert not transport.reading


async def test_a_cancelled_sender_does_not_fail_the_next_one() -> None:
    protocol, transport = connected()
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    protocol.pause_writing()  # the peer stopped reading
    async with anyio.create_task_group() as tg:
        tg.start_soon(link.send, b"ack")
        await anyio.sleep(0.01)
        tg.cancel_scope.cancel()  # as when the other half of a link ends
    sent = False

    async def refuse() -> None:
        nonlocal sent
        await link.send(b"refuse")
        sent = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(refuse)
        await anyio.sleep(0.01)
        assert not sent
        protocol.resume_writing()
    assert sent and transport.sent == [b"ack", b"refuse"]


async def test_closing_aborts_a_link_whose_peer_stopped_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio_link, "_CLOSE_GRACE", 0.01)
    protocol, transport = connected()
    link = AsyncioLink(protocol.transport, protocol)  # type: ignore[arg-type]
    await link.aclose()
    assert transport.closed and not transport.aborted
    await eventually(lambda: transport.aborted, "the close to be forced")


@pytest.mark.skipif(sys.implementation.name != "cpython", reason="a CPython detail")
def test_large_bodies_are_filled_in_place() -> None:
    data, view = asyncio_link._bytes_to_fill(LARGE_BODY)
    assert data is not None, "bytes are not filled in place on this CPython"
    view[:5] = b"hello"
    view[-3:] = b"end"
    assert type(data) is bytes and data[:5] == b"hello" and data[-3:] == b"end"


def test_elsewhere_large_bodies_are_filled_and_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(asyncio_link, "_new_bytes", None)
    body = asyncio_link._Body(Frame.DATA, b"", 5)
    body.view[:] = b"hello"
    assert body.finish() == b"hello"
