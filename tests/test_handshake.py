"""The handshake of docs/protocol.md 4.6 as both ends run it, over a real connection."""

from __future__ import annotations

import os
from typing import Any

import anyio
import pytest
from ambrosia_edge.transports.tcp import TcpTransport

from ambrosia_edge import handshake
from ambrosia_edge.errors import AuthenticationError, ProtocolError
from ambrosia_edge.transport import Link

pytestmark = pytest.mark.anyio


async def shake(
    sender_secret: str | None, receiver_secret: str | None
) -> tuple[Any, BaseException | None]:
    """Run ``initiate`` against ``accept``/``check``/``welcome``; return what the sender got
    (the watermarks or its error) and the receiver's error, if it refused."""
    refused: list[BaseException] = []

    async def serve(link: Link) -> None:
        try:
            hello = await handshake.accept(link, nonce=os.urandom)
            assert hello.source == "client"
            handshake.check(hello, name="server", secret=receiver_secret, peer=link.peer)
            await handshake.welcome(
                link, hello, name="server", secret=receiver_secret, total=7, replayable=5
            )
        except ProtocolError as exc:
            refused.append(exc)
            await handshake.refuse(link, exc)
        finally:
            await link.aclose()

    transport = TcpTransport()
    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0, serve)
        link = await transport.connect("127.0.0.1", port)
        try:
            got: Any = await handshake.initiate(
                link,
                name="client",
                destination="server",
                epoch=1,
                secret=sender_secret,
                nonce=os.urandom,
            )
        except ProtocolError as exc:
            got = exc
        finally:
            await link.aclose()
        tg.cancel_scope.cancel()
    return got, refused[0] if refused else None


@pytest.mark.parametrize("secret", [None, "s3cret"], ids=["open", "secret"])
async def test_both_sides_agree(secret: str | None) -> None:
    assert await shake(secret, secret) == ((7, 5), None)


async def test_a_wrong_secret_is_refused() -> None:
    got, refused = await shake("guess", "s3cret")
    assert isinstance(refused, AuthenticationError)
    assert isinstance(got, ProtocolError) and "refused the connection" in str(got)


async def test_a_receiver_without_the_secret_is_not_trusted() -> None:
    """Its WELCOME carries no MAC: the sender must not trim on its word."""
    got, refused = await shake("s3cret", None)
    assert refused is None and isinstance(got, AuthenticationError)


def test_the_mac_is_bound_to_direction_and_nonce() -> None:
    nonce = bytes(16)
    hello = handshake.mac("k", nonce, "client", "server")
    assert hello != handshake.mac("k", nonce, "client", "server", welcome=True)
    assert hello != handshake.mac("k", nonce, "server", "client")
    assert hello != handshake.mac("k", bytes(15) + b"\1", "client", "server")
    assert hello != handshake.mac("other", nonce, "client", "server")
