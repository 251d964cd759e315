"""Where immortals are: the discovery contract, its static implementation, and the registry.

A coordinator publishes the address it listens on, and resolves the name of every immortal it
sends to on each connection attempt (not once), trying the addresses it gets in turn: an
immortal that moved to another host or port is reached at its new address on the next
attempt. The ``--peer`` table is the first implementation (:class:`StaticDiscovery`); others
(mDNS: :mod:`ambrosia_edge.transports.zeroconf`, a registry service) are picked by name through
:data:`REGISTRY` or the ``ambrosia_edge.discovery`` entry-point group, as storage tiers are in
:mod:`.store`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Protocol, runtime_checkable

import anyio

from .kinds import PeerAddress, each_address
from .registry import load


@runtime_checkable
class Discovery(Protocol):
    """Publishes this immortal's address and finds the others'."""

    async def publish(
        self, name: str, address: PeerAddress, *, epoch: int = 0, incarnation: int | None = None
    ) -> None:
        """Make ``name`` reachable at ``address`` (called once listening, with the bound port).

        ``epoch`` (and the log's ``incarnation``, where the log has one) tell the peers which
        of two announcements of one name is the newer: a higher one means the immortal moved
        or restarted, and its peers reconnect at once."""

    async def resolve(self, name: str) -> list[PeerAddress]:
        """The addresses ``name`` may be reached at now, best first; empty when none is known.
        A lookup that fails raises OSError (the sender then waits and tries again)."""

    def names(self) -> list[str]:
        """The immortals known now; a coordinator keeps a sender for each of them."""

    def changes(self) -> AsyncIterator[str]:
        """Yields a name each time what :meth:`resolve` gives for it may have changed (a new
        name included). A sender does not need it: it resolves on every attempt anyway; it
        lets a waiting one retry at once, and a connected one leave an address that is no
        longer the first."""

    async def aclose(self) -> None:
        """Withdraw what was published (peers hear a goodbye) and stop; called once at exit."""


class StaticDiscovery:
    """The ``--peer NAME=HOST:PORT`` table: fixed addresses, known from the start.

    What is published is resolvable too (one's own name, with the port actually bound), and
    a test may move a peer with :meth:`set`.
    """

    def __init__(
        self, spec: str = "static", *, peers: Mapping[str, PeerAddress | None] = {}
    ) -> None:
        self._table: dict[str, PeerAddress | None] = dict(peers)
        self._changes = ChangeLog()

    async def publish(
        self, name: str, address: PeerAddress, *, epoch: int = 0, incarnation: int | None = None
    ) -> None:
        self.set(name, address)

    async def resolve(self, name: str) -> list[PeerAddress]:
        address = self._table.get(name)
        return [] if address is None else each_address(address)

    def names(self) -> list[str]:
        return list(self._table)

    def set(self, name: str, address: PeerAddress) -> None:
        """Give ``name`` a new address: the next connection attempt to it goes there."""
        self._table[name] = address
        self._changes.tell(name)

    def changes(self) -> AsyncIterator[str]:
        return self._changes.follow()

    async def aclose(self) -> None:
        pass


class ChangeLog:
    """The names whose addresses changed, in order, for any number of followers.

    Each follower starts from the moment it calls :meth:`follow` (not from its first
    ``anext``), so none is missed between listing the names and following their changes.
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._changed: anyio.Event | None = None

    def tell(self, name: str) -> None:
        self._names.append(name)
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def follow(self) -> AsyncGenerator[str, None]:
        return self._after(len(self._names))

    async def _after(self, seen: int) -> AsyncGenerator[str, None]:
        while True:
            while seen < len(self._names):
                seen += 1
                yield self._names[seen - 1]
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


#: Discovery name (the scheme of a ``--discovery`` URL, or the bare name) -> "module:Class".
#: Third parties add theirs through the ``ambrosia_edge.discovery`` entry-point group.
REGISTRY: dict[str, str] = {
    "static": "ambrosia_edge.discovery:StaticDiscovery",
    "zeroconf": "ambrosia_edge.transports.zeroconf:ZeroconfDiscovery",
}

#: Optional extras needed by a discovery, for the install hint when an import fails.
EXTRAS: dict[str, str] = {"zeroconf": "zeroconf"}


def open_discovery(
    spec: str = "static", *, peers: Mapping[str, PeerAddress | None] = {}
) -> Discovery:
    """Build the discovery that ``spec`` names (``static``, or a URL whose scheme names it).

    Every implementation's constructor takes ``(spec, *, peers)``: the ``--peer`` table is
    given to all of them, so an explicit address can stand beside discovered ones (a peer
    whose address is None is one to be discovered).
    """
    scheme = spec.partition("://")[0] if "://" in spec else spec
    cls = load(
        scheme,
        builtin=REGISTRY,
        group="ambrosia_edge.discovery",
        extras=EXTRAS,
        what=f"discovery {scheme!r}",
        unknown=lambda known: f"no discovery called {scheme!r} (known: {known})",
    )
    discovery: Discovery = cls(spec, peers=peers)
    return discovery
