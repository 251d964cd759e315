"""The link contract as checks, for any transport (after trio's ``check_two_way_stream``).

A transport is tested through a function that makes two connected links::

    from ambrosia_edge.testing.link_suite import LinkConformance, TransportConformance

    class TestMyLinks(LinkConformance):
        async def make_pair(self):
            ...                          # two links, each the other's peer
            return one, other

    class TestMyTransport(TransportConformance):
        def make_transport(self):
            return MyTransport()

or, outside pytest, ``await check_link(make_pair)`` and ``await check_transport(transport)``.

What is checked is what the coordinator relies on: frames arrive whole and in order both ways,
however they were cut into sends; ``send_parts`` is ``send`` of the joined parts;
``receive_split``; ``buffered`` says whether the next frame is already here; frames up to
``wire.MAX_FRAME``; a malformed head is a ProtocolError after the frames before it; closing by
this side (ClosedByUs) is told apart from the peer closing or breaking the connection
(BrokenByPeer), also mid-frame; sending and receiving at once; a cancelled receive that was
waiting for a frame leaves the link usable; ``serve`` reports its port through ``task_status``.

A check a transport is known to fail is named in ``expected_failures`` with the reason, and
runs as a strict xfail. This module imports pytest; ``ambrosia_edge.testing`` itself does not.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import ClassVar

import anyio
import pytest

from .. import wire
from ..errors import BrokenByPeer, ClosedByUs, ConnectionClosed, ProtocolError
from ..transport import Link, Transport
from ..wire import DATA_HEAD_SIZE, MAX_FRAME, Frame
from . import eventually, free_port

__all__ = [
    "LINK_CHECKS",
    "TRANSPORT_CHECKS",
    "LinkConformance",
    "MakePair",
    "TransportConformance",
    "check_link",
    "check_transport",
]

#: Makes two connected links; the check closes them.
MakePair = Callable[[], Awaitable[tuple[Link, Link]]]

#: Each check's deadline, in seconds: a transport that hangs fails instead.
DEADLINE = 60


@contextmanager
def _raises(kind: type[BaseException] | tuple[type[BaseException], ...]) -> Iterator[None]:
    try:
        yield
    except kind:
        return
    raise AssertionError(f"{kind} was not raised")


@asynccontextmanager
async def _pair(
    make_pair: MakePair, *, authenticated: bool = True
) -> AsyncIterator[tuple[Link, Link]]:
    """Two links, through the handshake as far as the links know (``authenticated()``) unless
    a check is about strangers."""
    one, other = await make_pair()
    if authenticated:
        one.authenticated()
        other.authenticated()
    try:
        yield one, other
    finally:
        with anyio.CancelScope(shield=True):
            await one.aclose()
            await other.aclose()


def _payloads(rng: random.Random) -> list[tuple[Frame, bytes]]:
    """Frames of every type, around the sizes where links change how they read: a DATA
    frame's fixed head, and the 64 KiB from which a body gets a buffer of its own."""
    sizes = [0, 1, DATA_HEAD_SIZE - 1, DATA_HEAD_SIZE, DATA_HEAD_SIZE + 1, 1000]
    sizes += [(64 << 10) - 1, 64 << 10, (64 << 10) + 1, (1 << 20) + 3]
    return [(ftype, rng.randbytes(size)) for size in sizes for ftype in Frame]


def _encoded(frames: list[tuple[Frame, bytes]]) -> list[bytes]:
    return [wire.frame(ftype, payload) for ftype, payload in frames]


def _cuts(data: bytes, rng: random.Random) -> list[bytes]:
    """``data`` cut at random places, some of them a byte apart, with an empty piece or two."""
    pieces, at = [], 0
    while at < len(data):
        n = rng.choice([0, 1, 2, 3, 5, 17, 4096, 70_000, 300_000])
        pieces.append(data[at : at + n])
        at += n
    return pieces


async def _receive_all(link: Link, frames: list[tuple[Frame, bytes]]) -> None:
    for n, (ftype, payload) in enumerate(frames):
        got = await link.receive()
        assert got == (ftype, payload), f"frame {n}: {got[0]!r} of {len(got[1])} bytes"
        assert type(got[1]) is bytes


# -- the checks ------------------------------------------------------------------------------------


async def check_frames_arrive_whole_and_in_order_both_ways(make_pair: MakePair) -> None:
    rng = random.Random(1)
    forth, back = _payloads(rng), _payloads(rng)[::-1]
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send(link: Link, frames: list[tuple[Frame, bytes]]) -> None:
            for data in _encoded(frames):
                await link.send(data)

        tg.start_soon(send, one, forth)
        tg.start_soon(send, other, back)
        tg.start_soon(_receive_all, other, forth)
        tg.start_soon(_receive_all, one, back)


async def check_sends_may_cut_frames_anywhere(make_pair: MakePair) -> None:
    rng = random.Random(2)
    frames = _payloads(rng)
    data = b"".join(_encoded(frames))
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send() -> None:
            await one.send(data[: len(data) // 3])  # many frames in one send
            for piece in _cuts(data[len(data) // 3 :], rng):  # a frame in many sends
                if piece:
                    await one.send(piece)

        tg.start_soon(send)
        await _receive_all(other, frames)


async def check_send_parts_is_send_of_the_joined_parts(make_pair: MakePair) -> None:
    rng = random.Random(3)
    frames = _payloads(rng)
    encoded = _encoded(frames)
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send() -> None:
            for n in range(0, len(encoded), 7):
                await one.send_parts(_cuts(b"".join(encoded[n : n + 7]), rng))
            await one.send_parts([wire.frame(Frame.ACK, b"last")])  # one part

        tg.start_soon(send)
        await _receive_all(other, [*frames, (Frame.ACK, b"last")])


async def check_receive_split_cuts_the_payload_where_asked(make_pair: MakePair) -> None:
    rng = random.Random(4)
    heads = [0, 5, DATA_HEAD_SIZE, 100]
    frames = _payloads(rng)
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send() -> None:
            for _ in heads:
                for data in _encoded(frames):
                    await one.send(data)

        tg.start_soon(send)
        for head in heads:
            for ftype, payload in frames:
                got = await other.receive_split(head)
                # all of a payload no longer than ``head`` in the first part
                assert got == (ftype, payload[:head], payload[head:]), (head, ftype, len(payload))
                assert type(got[1]) is bytes and type(got[2]) is bytes


async def check_buffered_tells_whether_the_next_frame_is_here(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, other):
        assert other.buffered == 0
        await one.send(wire.frame(Frame.ACK, b"first") + wire.frame(Frame.ACK, b"second"))
        assert await other.receive() == (Frame.ACK, b"first")
        # both came in one write, so the second is here already
        assert other.buffered > 0
        assert await other.receive() == (Frame.ACK, b"second")
        assert other.buffered == 0


async def check_frames_up_to_the_largest_allowed(make_pair: MakePair) -> None:
    payload = random.Random(5).randbytes(MAX_FRAME - 1)  # the length counts the type's byte
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send() -> None:
            data = wire.frame(Frame.DATA, payload)
            await one.send(data)
            await one.send_parts([data[:3], data[3 : 1 << 20], data[1 << 20 :]])
            await one.send(wire.frame(Frame.ACK, b"after"))

        tg.start_soon(send)
        assert await other.receive() == (Frame.DATA, payload)
        got = await other.receive_split(DATA_HEAD_SIZE)
        assert got == (Frame.DATA, payload[:DATA_HEAD_SIZE], payload[DATA_HEAD_SIZE:])
        del got
        assert await other.receive() == (Frame.ACK, b"after")


async def check_a_malformed_head_is_a_protocol_error_after_the_frames_before_it(
    make_pair: MakePair,
) -> None:
    too_long = (MAX_FRAME + 1).to_bytes(4, "little") + bytes([Frame.DATA])
    empty = (0).to_bytes(4, "little") + bytes([Frame.DATA])
    unknown = (1).to_bytes(4, "little") + bytes([99])
    for bad in (too_long, empty, unknown):
        async with _pair(make_pair) as (one, other):
            await one.send(wire.frame(Frame.ACK, b"good") + bad + bytes(100))
            assert await other.receive() == (Frame.ACK, b"good")
            with _raises(ProtocolError):
                await other.receive()


async def check_closing_our_side(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, other):
        await one.aclose()
        with _raises(ClosedByUs):
            await one.receive()
        with _raises(ClosedByUs):
            await one.receive_split(DATA_HEAD_SIZE)
        with _raises(ClosedByUs):
            await one.send(wire.frame(Frame.ACK, b"x"))
        with _raises(ClosedByUs):
            await one.send_parts([wire.frame(Frame.ACK, b"x")])
        await one.aclose()  # again: nothing happens
        with _raises(BrokenByPeer):  # closed on the other side is broken on this one
            await other.receive()


async def check_closing_wakes_a_blocked_receive(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, _):
        failure: list[BaseException] = []

        async def receive() -> None:
            try:
                await one.receive()
            except ConnectionClosed as exc:
                failure.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()  # (if not, it raises all the same)
            await one.aclose()
        assert len(failure) == 1 and isinstance(failure[0], ClosedByUs), failure


async def check_the_peer_closing_breaks_the_link_after_its_frames(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, other):
        frames = [(Frame.ACK, b"one"), (Frame.DATA, bytes(100_000)), (Frame.REFUSE, b"bye")]
        for data in _encoded(frames):
            await one.send(data)
        await one.aclose()
        await _receive_all(other, frames)
        with _raises(BrokenByPeer):
            await other.receive()
        with _raises(BrokenByPeer):
            await other.receive()  # and it stays broken
        # sending notices too, once the network has said so (the first writes may be taken)
        with _raises(BrokenByPeer):
            for _ in range(100_000):
                await other.send(wire.frame(Frame.ACK, bytes(1000)))


async def check_the_peer_closing_mid_frame_breaks_the_link(make_pair: MakePair) -> None:
    for frame in (wire.frame(Frame.ACK, bytes(100)), wire.frame(Frame.DATA, bytes(200_000))):
        for cut in (2, 5 + DATA_HEAD_SIZE - 3, len(frame) // 2, len(frame) - 1):
            async with _pair(make_pair) as (one, other):
                await one.send(wire.frame(Frame.ACK, b"whole") + frame[:cut])
                await one.aclose()
                assert await other.receive() == (Frame.ACK, b"whole")
                with _raises(BrokenByPeer):
                    await other.receive_split(DATA_HEAD_SIZE)


async def check_sending_and_receiving_at_once(make_pair: MakePair) -> None:
    """Both sides send more than the sockets hold while they receive: no side may wait for
    the other to stop sending."""
    chunk = wire.frame(Frame.DATA, bytes(64 << 10))
    count = 256  # 16 MiB each way
    async with _pair(make_pair) as (one, other), anyio.create_task_group() as tg:

        async def send(link: Link) -> None:
            for n in range(count):
                if n % 2:
                    await link.send(chunk)
                else:
                    await link.send_parts([chunk[:100], chunk[100:]])

        async def receive(link: Link) -> None:
            for _ in range(count):
                assert await link.receive() == (Frame.DATA, bytes(64 << 10))

        for link in (one, other):
            tg.start_soon(send, link)
            tg.start_soon(receive, link)


async def check_a_cancelled_receive_leaves_the_link_usable(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, other):
        with anyio.move_on_after(0.05) as waited:
            await other.receive()
        assert waited.cancelled_caught
        await one.send(wire.frame(Frame.ACK, b"after the cancel"))
        assert await other.receive() == (Frame.ACK, b"after the cancel")
        await other.send(wire.frame(Frame.ACK, b"and back"))
        assert await one.receive() == (Frame.ACK, b"and back")


async def check_a_receive_cancelled_mid_frame_loses_nothing(make_pair: MakePair) -> None:
    frame = wire.frame(Frame.ACK, random.Random(6).randbytes(1000))
    async with _pair(make_pair) as (one, other):
        await one.send(frame[:500])
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                await other.receive()

            tg.start_soon(receive)
            await eventually(lambda: other.buffered > 0, "the first half to arrive")
            tg.cancel_scope.cancel()
        await one.send(frame[500:] + wire.frame(Frame.ACK, b"next"))
        assert await other.receive() == (Frame.ACK, frame[5:])
        assert await other.receive() == (Frame.ACK, b"next")


async def check_a_stranger_gets_small_frames_only(make_pair: MakePair) -> None:
    """Before ``authenticated()`` a frame may be at most wire.PREAUTH_MAX_FRAME long: a head
    announcing more is a ProtocolError at once, without waiting for (or holding) its body."""
    async with _pair(make_pair, authenticated=False) as (one, other):
        largest = wire.frame(Frame.HELLO, bytes(wire.PREAUTH_MAX_FRAME - 1))
        await one.send(largest + struct.pack("<IB", MAX_FRAME, Frame.DATA))
        assert await other.receive() == (Frame.HELLO, largest[wire.FRAME_HEAD_SIZE :])
        with anyio.fail_after(5), _raises(ProtocolError):
            await other.receive()


async def check_the_peer_is_printable(make_pair: MakePair) -> None:
    async with _pair(make_pair) as (one, other):
        assert isinstance(one.peer, str) and one.peer
        assert isinstance(other.peer, str) and other.peer


LINK_CHECKS: dict[str, Callable[[MakePair], Awaitable[None]]] = {
    check.__name__.removeprefix("check_"): check
    for check in (
        check_frames_arrive_whole_and_in_order_both_ways,
        check_sends_may_cut_frames_anywhere,
        check_send_parts_is_send_of_the_joined_parts,
        check_receive_split_cuts_the_payload_where_asked,
        check_buffered_tells_whether_the_next_frame_is_here,
        check_frames_up_to_the_largest_allowed,
        check_a_malformed_head_is_a_protocol_error_after_the_frames_before_it,
        check_closing_our_side,
        check_closing_wakes_a_blocked_receive,
        check_the_peer_closing_breaks_the_link_after_its_frames,
        check_the_peer_closing_mid_frame_breaks_the_link,
        check_sending_and_receiving_at_once,
        check_a_cancelled_receive_leaves_the_link_usable,
        check_a_receive_cancelled_mid_frame_loses_nothing,
        check_a_stranger_gets_small_frames_only,
        check_the_peer_is_printable,
    )
}


async def check_link(make_pair: MakePair, *, skip: frozenset[str] = frozenset()) -> None:
    """Run every link check (but those named in ``skip``), each on a pair of its own."""
    for name, check in LINK_CHECKS.items():
        if name not in skip:
            with anyio.fail_after(DEADLINE):
                await check(make_pair)


# -- the transport: serving and connecting ---------------------------------------------------------


async def check_serve_reports_its_port_and_connect_reaches_it(transport: Transport) -> None:
    served: list[Link] = []

    async def handler(link: Link) -> None:
        served.append(link)
        ftype, payload = await link.receive()
        await link.send(wire.frame(ftype, payload[::-1]))
        # returning ends the connection

    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0, handler)
        assert isinstance(port, int) and 0 < port < 65536, port
        links = [await transport.connect("127.0.0.1", port) for _ in range(3)]
        try:
            for n, link in enumerate(links):  # handled at once, each by a handler of its own
                await link.send(wire.frame(Frame.ACK, b"ping %d" % n))
            for n, link in enumerate(links):
                assert await link.receive() == (Frame.ACK, (b"ping %d" % n)[::-1])
                with _raises(BrokenByPeer):
                    await link.receive()
        finally:
            for link in links:
                await link.aclose()
        assert len(served) == 3
        tg.cancel_scope.cancel()
    # a server that stopped is no longer there
    with _raises(BrokenByPeer):
        await (await transport.connect("127.0.0.1", port)).aclose()


async def check_connecting_to_no_one_breaks(transport: Transport) -> None:
    with _raises(BrokenByPeer):
        link = await transport.connect("127.0.0.1", free_port())
        await link.aclose()


TRANSPORT_CHECKS: dict[str, Callable[[Transport], Awaitable[None]]] = {
    check.__name__.removeprefix("check_"): check
    for check in (
        check_serve_reports_its_port_and_connect_reaches_it,
        check_connecting_to_no_one_breaks,
    )
}


async def check_transport(transport: Transport) -> None:
    for check in TRANSPORT_CHECKS.values():
        with anyio.fail_after(DEADLINE):
            await check(transport)


# -- as pytest test classes ------------------------------------------------------------------------


class LinkConformance:
    """Every link check as a test; a subclass provides ``make_pair`` (and an ``anyio_backend``
    fixture if the links run on one event loop only)."""

    pytestmark = pytest.mark.anyio

    #: check name -> why this transport fails it (run as a strict xfail)
    expected_failures: ClassVar[dict[str, str]] = {}

    async def make_pair(self) -> tuple[Link, Link]:
        raise NotImplementedError("a LinkConformance subclass provides make_pair")

    @pytest.mark.parametrize("check", list(LINK_CHECKS))
    async def test_link(self, check: str, request: pytest.FixtureRequest) -> None:
        _expect(request, self.expected_failures, check)
        with anyio.fail_after(DEADLINE):
            await LINK_CHECKS[check](self.make_pair)


class TransportConformance:
    """Every transport check as a test; a subclass provides ``make_transport``."""

    pytestmark = pytest.mark.anyio

    expected_failures: ClassVar[dict[str, str]] = {}

    def make_transport(self) -> Transport:
        raise NotImplementedError("a TransportConformance subclass provides make_transport")

    @pytest.mark.parametrize("check", list(TRANSPORT_CHECKS))
    async def test_transport(self, check: str, request: pytest.FixtureRequest) -> None:
        _expect(request, self.expected_failures, check)
        with anyio.fail_after(DEADLINE):
            await TRANSPORT_CHECKS[check](self.make_transport())


def _expect(request: pytest.FixtureRequest, failures: dict[str, str], check: str) -> None:
    reason = failures.get(check)
    if reason is not None:
        request.applymarker(pytest.mark.xfail(strict=True, reason=reason))
