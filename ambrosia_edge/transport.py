"""The contract between the coordinator and a network transport (TCP today)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .wire import Frame


class Link(Protocol):
    """One bidirectional, ordered, framed connection to another coordinator.

    ``receive`` raises BrokenByPeer when the peer or the network broke the connection and
    ClosedByUs when this side closed it, so reconnection logic can tell the two apart.
    """

    peer: str  # a printable address, for messages
    #: the names in the peer's TLS certificate, or None on a link without TLS
    certificate_names: frozenset[str] | None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned by ``receive``: 0 means the next ``receive``
        waits for the network, so what was received so far is all there is for now."""

    def authenticated(self) -> None:
        """The handshake is done: lift the limits on a peer not yet known (frames of at most
        wire.PREAUTH_MAX_FRAME bytes, and buffers to match), with which every link starts."""

    async def send(self, data: bytes) -> None:
        """Send already-framed bytes (one or more frames)."""

    async def send_parts(self, parts: list[bytes]) -> None:
        """``send`` of the concatenation of ``parts``, which a transport may write without
        joining them (a DATA frame of large messages is mostly the messages as they are)."""

    async def receive(self) -> tuple[Frame, bytes]:
        """The next frame's type and payload."""

    async def receive_split(self, head: int) -> tuple[Frame, bytes, bytes]:
        """``receive``, with the payload's first ``head`` bytes apart from the rest (all of a
        shorter payload in the first part). Cutting a DATA frame's fixed head off its batch
        afterwards would copy the batch, megabytes under large messages, on the event loop."""

    async def aclose(self) -> None: ...


class Transport(Protocol):
    async def connect(self, host: str, port: int, *, name: str | None = None) -> Link:
        """A link to ``host:port``, where immortal ``name`` is expected (with TLS, its
        certificate must be for that name)."""

    async def serve(
        self,
        host: str,
        port: int,
        handler: Callable[[Link], Awaitable[None]],
        *,
        task_status: Any = ...,
    ) -> None:
        """Accept connections forever, running ``handler`` for each; report the bound port
        through ``task_status.started(port)``."""


TRANSPORTS: dict[str, str] = {"tcp": "ambrosia_edge.transports.tcp:TcpTransport"}
