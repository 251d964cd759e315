"""Discovery: the static ``--peer`` table, the registry, and senders that resolve on every
connection attempt rather than once."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
from ambrosia_edge.transports.tcp import TcpTransport

from ambrosia_edge import errors, handshake
from ambrosia_edge.config import PeerAddress, Settings, load_settings, parse_peer
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.discovery import Discovery, StaticDiscovery, open_discovery
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.kinds import PeerAddresses, each_address
from ambrosia_edge.testing import eventually, free_port
from ambrosia_edge.transport import Link

pytestmark = pytest.mark.anyio

HERE = PeerAddress("127.0.0.1", 7001)
THERE = PeerAddress("127.0.0.1", 7002)


async def test_the_static_table_resolves_its_peers_and_what_is_published() -> None:
    discovery = open_discovery("static", peers={"server": HERE})
    assert isinstance(discovery, StaticDiscovery) and isinstance(discovery, Discovery)
    assert await discovery.resolve("server") == [HERE]
    assert await discovery.resolve("nobody") == []
    await discovery.publish("me", THERE)
    assert await discovery.resolve("me") == [THERE]
    assert discovery.names() == ["server", "me"]


async def test_a_change_is_told() -> None:
    discovery = StaticDiscovery(peers={"server": HERE})
    async with aclosing(discovery.changes()) as changes:  # type: ignore[type-var]
        discovery.set("server", THERE)
        with anyio.fail_after(5):
            assert await anext(changes) == "server"
    assert await discovery.resolve("server") == [THERE]


def test_an_unknown_discovery_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no discovery called 'carrier-pigeon'"):
        open_discovery("carrier-pigeon://loft")


class Moving:
    """A peer that moves: each resolve gives the next of ``places`` (the last one for good)."""

    def __init__(self, *places: PeerAddress) -> None:
        self.places = list(places)
        self.resolved: list[PeerAddress] = []

    async def publish(self, name: str, address: PeerAddress) -> None:
        pass

    async def resolve(self, name: str) -> list[PeerAddress]:
        place = self.places.pop(0) if len(self.places) > 1 else self.places[0]
        self.resolved.append(place)
        return [place]

    def names(self) -> list[str]:
        return ["server"]

    async def changes(self) -> AsyncIterator[str]:
        await anyio.sleep_forever()
        yield "server"


async def test_a_sender_resolves_again_on_each_attempt() -> None:
    """Its first attempt goes where nobody listens; the next finds the peer where it moved."""
    transport = TcpTransport()
    welcomed: list[str] = []

    async def serve(link: Link) -> None:
        hello = await handshake.accept(link, nonce=os.urandom)
        await handshake.welcome(link, hello, name="server", secret=None, total=0, replayable=0)
        welcomed.append(hello.source)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0, serve)
        gone, moved = PeerAddress("127.0.0.1", free_port()), PeerAddress("127.0.0.1", port)
        discovery = Moving(gone, moved)
        client = Coordinator("client", None, transport, discovery=discovery)  # type: ignore[arg-type]
        tg.start_soon(client._sender, "server")
        await eventually(lambda: welcomed == ["client"], "the sender to reach the moved peer")
        assert discovery.resolved[:2] == [gone, moved]
        tg.cancel_scope.cancel()


async def test_a_sender_starts_for_an_immortal_discovered_while_live() -> None:
    transport = TcpTransport()
    welcomed: list[str] = []

    async def serve(link: Link) -> None:
        hello = await handshake.accept(link, nonce=os.urandom)
        await handshake.welcome(link, hello, name="late", secret=None, total=0, replayable=0)
        welcomed.append(hello.source)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        port = await tg.start(transport.serve, "127.0.0.1", 0, serve)
        discovery = StaticDiscovery()
        client = Coordinator("client", None, transport, discovery=discovery)  # type: ignore[arg-type]
        await tg.start(client.run)
        assert welcomed == []
        discovery.set("late", PeerAddress("127.0.0.1", port))
        await eventually(lambda: welcomed == ["client"], "a sender to the discovered immortal")
        tg.cancel_scope.cancel()


async def test_a_connected_sender_leaves_when_its_peer_is_announced_elsewhere() -> None:
    """A peer that lost power never closes its end: the old link looks open. When discovery
    says the peer is somewhere else now, the sender leaves it and connects there at once."""
    transport = TcpTransport()
    welcomed: list[int] = []

    def serving(port_of: list[int]) -> Callable[[Link], Awaitable[None]]:
        async def serve(link: Link) -> None:
            hello = await handshake.accept(link, nonce=os.urandom)
            await handshake.welcome(link, hello, name="server", secret=None, total=0, replayable=0)
            welcomed.append(port_of[0])
            await anyio.sleep_forever()  # answers nothing more, never closes: a dead device

        return serve

    async with anyio.create_task_group() as tg:
        old_port: list[int] = []
        new_port: list[int] = []
        old_port.append(await tg.start(transport.serve, "127.0.0.1", 0, serving(old_port)))
        new_port.append(await tg.start(transport.serve, "127.0.0.1", 0, serving(new_port)))
        discovery = StaticDiscovery(peers={"server": PeerAddress("127.0.0.1", old_port[0])})
        client = Coordinator("client", None, transport, discovery=discovery)  # type: ignore[arg-type]
        await tg.start(client.run)
        await eventually(lambda: welcomed == old_port, "the first connection")
        discovery.set("server", PeerAddress("127.0.0.1", new_port[0]))
        with anyio.fail_after(1):  # at once: no back-off, no timeout of the old link
            await eventually(lambda: welcomed == [*old_port, *new_port], "the move")
        tg.cancel_scope.cancel()


# --- one peer at several addresses: --peer NAME=HOST:PORT,HOST:PORT ------------------------------


def test_a_peer_may_be_given_several_addresses() -> None:
    name, address = parse_peer("server=127.0.0.1:7001,[::1]:7002")
    assert name == "server" and isinstance(address, PeerAddresses)
    assert each_address(address) == [HERE, PeerAddress("::1", 7002)]
    assert str(address) == "127.0.0.1:7001,[::1]:7002"
    assert each_address(HERE) == [HERE]
    with pytest.raises(ConfigError, match="port 'x' is not a number"):
        parse_peer("server=127.0.0.1:7001,127.0.0.1:x")
    settings = Settings("m:C", "client", peers={"server": address})
    assert settings.peers["server"] == address


def test_a_config_file_lists_several_addresses_too(tmp_path: Path) -> None:
    config = tmp_path / "client.toml"
    config.write_text('target = "m:C"\n[peers]\nserver = "127.0.0.1:7001,127.0.0.1:7002"\n')
    peers = load_settings(config, name="client").peers
    assert each_address(peers["server"]) == [HERE, THERE]


async def test_static_discovery_resolves_every_address_in_order() -> None:
    discovery = StaticDiscovery(peers={"server": PeerAddresses("127.0.0.1", 7001, (THERE,))})
    assert await discovery.resolve("server") == [HERE, THERE]


async def test_a_sender_passes_over_an_address_that_is_moving_away() -> None:
    """The first address refuses with "moved" (an immortal handing itself over), the second
    welcomes: the sender gets there at once, and tries it first from then on."""
    transport = TcpTransport()
    welcomed: list[int] = []

    async def moving(link: Link) -> None:
        await handshake.accept(link, nonce=os.urandom)
        await handshake.refuse(
            link, errors.ProtocolError("server is handing itself over"), code=handshake.MOVED
        )

    async def serve(link: Link) -> None:
        hello = await handshake.accept(link, nonce=os.urandom)
        welcomed.append(1)
        await handshake.welcome(link, hello, name="server", secret=None, total=0, replayable=0)
        await anyio.sleep_forever()

    async with anyio.create_task_group() as tg:
        old = await tg.start(transport.serve, "127.0.0.1", 0, moving)
        new = await tg.start(transport.serve, "127.0.0.1", 0, serve)
        addresses = [PeerAddress("127.0.0.1", old), PeerAddress("127.0.0.1", new)]
        client = Coordinator("client", None, transport)  # type: ignore[arg-type]
        with anyio.fail_after(5):
            link, address, total, _ = await client._open_link("server", addresses)
        assert address == addresses[1] and total == 0 and welcomed == [1]
        await link.aclose()
        with anyio.fail_after(5):
            link, address, _, _ = await client._open_link("server", addresses)
        assert address == addresses[1]  # the one that last worked is tried first
        await link.aclose()
        tg.cancel_scope.cancel()
