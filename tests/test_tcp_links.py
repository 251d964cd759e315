"""Frames over real loopback links arrive whole and in order, on either event loop: large
DATA frames sent in pieces, small frames between them, and the fixed head apart."""

from __future__ import annotations

import random

import anyio
import pytest
from ambrosia_edge.transports.tcp import TcpTransport

from ambrosia_edge import wire
from ambrosia_edge.testing import eventually
from ambrosia_edge.transport import Link
from ambrosia_edge.wire import Frame

pytestmark = pytest.mark.anyio


async def test_frames_sent_whole_or_in_pieces_arrive_as_sent() -> None:
    rng = random.Random(7)
    batches = [
        [wire.frame_message(rng.randbytes(size)) for _ in range(count)]
        for size, count in ((16, 1000), (64 * 1024, 40), (100, 1), (1 << 20, 5))
    ]
    received: list[tuple[Frame, bytes, bytes]] = []

    async def handler(link: Link) -> None:
        link.authenticated()
        while len(received) < 2 * len(batches):
            received.append(await link.receive_split(wire.DATA_HEAD_SIZE))

    async with anyio.create_task_group() as tg:
        port = await tg.start(TcpTransport().serve, "127.0.0.1", 0, handler)
        link = await TcpTransport().connect("127.0.0.1", port)
        link.authenticated()
        for n, batch in enumerate(batches, start=1):
            await link.send_parts(wire.data_parts(n, len(batch), len(batch), batch))
            await link.send(wire.ack(n, n))
        await eventually(lambda: len(received) == 2 * len(batches), "every frame", 30)
        await link.aclose()
        tg.cancel_scope.cancel()
    for n, batch in enumerate(batches, start=1):
        ftype, head, body = received[2 * n - 2]
        assert ftype is Frame.DATA and body == b"".join(batch)
        assert wire.parse_data_head(head) == (n, len(batch), len(batch))
        assert received[2 * n - 1] == (Frame.ACK, wire.ack(n, n)[5:], b"")
