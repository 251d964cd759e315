"""The TCP transport's accept loop: connections are handed over, and running out of
descriptors for a moment does not stop the server."""

from __future__ import annotations

import errno
import logging
import socket
import struct

import anyio
import pytest
from ambrosia_edge.transports import tcp

from ambrosia_edge import wire
from ambrosia_edge.testing import eventually
from ambrosia_edge.transport import Link

pytestmark = pytest.mark.anyio


class OutOfDescriptors(socket.socket):
    """A listening socket whose first accept fails as a process at its descriptor limit's."""

    failures = 1

    def accept(self) -> tuple[socket.socket, object]:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EMFILE, "Too many open files")
        return super().accept()


async def test_a_moment_without_descriptors_only_delays_a_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listening = OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    listening.setblocking(False)
    port = listening.getsockname()[1]
    links: list[Link] = []

    async def accepted(link: Link) -> None:
        links.append(link)

    with caplog.at_level(logging.WARNING, logger="ambrosia_edge"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp._accept, listening, accepted, tg)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                await eventually(lambda: len(links) == 1, "the connection to be accepted")
                await client.send(wire.ack(7, 5))
                assert await links[0].receive() == (wire.Frame.ACK, wire.ack(7, 5)[5:])
                await links[0].aclose()
            tg.cancel_scope.cancel()
    listening.close()
    assert listening.failures == 0, "accept never failed: nothing was tested"
    assert any("Too many open files" in r.getMessage() for r in caplog.records)


async def test_other_accept_errors_stop_the_server() -> None:
    class Broken(socket.socket):
        def accept(self) -> tuple[socket.socket, object]:
            raise OSError(errno.EINVAL, "Invalid argument")

    listening = Broken(socket.AF_INET, socket.SOCK_STREAM)
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    listening.setblocking(False)

    async def accepted(link: Link) -> None:
        raise AssertionError("nothing can be accepted")

    with pytest.raises(BaseExceptionGroup) as raised:
        async with anyio.create_task_group() as tg:
            tg.start_soon(tcp._accept, listening, accepted, tg)
            with socket.create_connection(listening.getsockname()):
                await anyio.sleep_forever()
    listening.close()
    assert raised.group_contains(OSError, match="Invalid argument")


async def test_a_peer_that_resets_before_it_is_accepted_is_skipped() -> None:
    handled: list[str] = []

    async def handler(link: Link) -> None:
        handled.append(link.peer)

    async with anyio.create_task_group() as tg:
        port = await tg.start(tcp.TcpTransport().serve, "127.0.0.1", 0, handler)
        # a blocking client, nothing awaited in between: the server has not accepted it yet
        rude = socket.create_connection(("127.0.0.1", port))
        rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rude.close()  # a reset while the connection waits in the accept queue
        async with await anyio.connect_tcp("127.0.0.1", port):
            await eventually(lambda: len(handled) == 1, "the next peer to be handled")
        tg.cancel_scope.cancel()
