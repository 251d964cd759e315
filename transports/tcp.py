"""Coordinator-to-coordinator links over TCP, on anyio (asyncio or trio)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from ambrosia_edge.errors import BrokenByPeer, ClosedByUs
from ambrosia_edge.wire import FRAME_HEAD_SIZE, Frame, parse_head

_BROKEN = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.IncompleteRead, OSError)


class TcpLink:
    """A framed TCP connection; foreign exceptions are translated at this boundary."""

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        try:
            stream.extra(SocketAttribute.raw_socket).setsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
            )
            address = stream.extra(SocketAttribute.remote_address)
            self.peer = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)
        except (OSError, anyio.TypedAttributeLookupError, ValueError):
            self.peer = "?"

    async def send(self, data: bytes) -> None:
        try:
            await self._stream.send(data)
        except anyio.ClosedResourceError:
            raise ClosedByUs(f"link to {self.peer} was closed") from None
        except _BROKEN as exc:
            raise BrokenByPeer(f"link to {self.peer} broke: {exc or type(exc).__name__}") from None

    async def receive(self) -> tuple[Frame, bytes]:
        try:
            head = await self._reader.receive_exactly(FRAME_HEAD_SIZE)
            length, ftype = parse_head(head)
            payload = await self._reader.receive_exactly(length) if length else b""
        except anyio.ClosedResourceError:
            raise ClosedByUs(f"link to {self.peer} was closed") from None
        except _BROKEN as exc:
            raise BrokenByPeer(f"link to {self.peer} broke: {exc or type(exc).__name__}") from None
        return ftype, payload

    async def aclose(self) -> None:
        with contextlib.suppress(*_BROKEN):
            await self._stream.aclose()


class TcpTransport:
    async def connect(self, host: str, port: int) -> TcpLink:
        try:
            stream = await anyio.connect_tcp(host, port)
        except _BROKEN as exc:
            raise BrokenByPeer(f"cannot connect to {host}:{port}: {exc}") from None
        return TcpLink(stream)

    async def serve(
        self,
        host: str,
        port: int,
        handler: Callable[[TcpLink], Awaitable[None]],
        *,
        task_status: Any = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = await anyio.create_tcp_listener(
            local_host=host, local_port=port, reuse_port=False
        )
        bound = listener.extra(SocketAttribute.local_port)

        async def accepted(stream: SocketStream) -> None:
            link = TcpLink(stream)
            try:
                await handler(link)
            finally:
                await link.aclose()

        async with listener:
            task_status.started(bound)
            await listener.serve(accepted)
