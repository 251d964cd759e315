"""Where immortals are: the discovery contract, its static implementation, and the registry.

A coordinator publishes the address it listens on, and resolves the name of every immortal it
sends to on each connection attempt (not once), trying the addresses it gets in turn: an
immortal that moved to another host or port is reached at its new address on the next
attempt. The ``--peer`` table is the first implementation (:class:`StaticDiscovery`); others
(mDNS, a registry service) are picked by name through :data:`REGISTRY` or the
``ambrosia_edge.discovery`` entry-point group, as storage tiers are in :mod:`.store`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol, runtime_checkable

import anyio

from .kinds import PeerAddress
from .registry import load


@runtime_checkable
class Discovery(Protocol):
    """Publishes this immortal's address and finds the others'."""

    async def publish(self, name: str, address: PeerAddress) -> None:
        """Make ``name`` reachable at ``address`` (called once listening, with the bound port)."""

    async def resolve(self, name: str) -> list[PeerAddress]:
        """The addresses ``name`` may be reached at now, best first; empty when none is known.
        A lookup that fails raises OSError (the sender then waits and tries again)."""

    def names(self) -> list[str]:
        """The immortals known now; a coordinator keeps a sender for each of them."""

    def changes(self) -> AsyncIterator[str]:
        """Yields a name each time what :meth:`resolve` gives for it may have changed (a new
        name included). A sender does not need it: it resolves on every attempt anyway; it
        lets a waiting one retry at once."""


class StaticDiscovery:
    """The ``--peer NAME=HOST:PORT`` table: fixed addresses, known from the start.

    What is published is resolvable too (one's own name, with the port actually bound), and
    a test may move a peer with :meth:`set`.
    """

    def __init__(self, spec: str = "static", *, peers: Mapping[str, PeerAddress] = {}) -> None:
        self._table: dict[str, PeerAddress] = dict(peers)
        self._changed: anyio.Event = anyio.Event()
        self._changes: list[str] = []

    async def publish(self, name: str, address: PeerAddress) -> None:
        self.set(name, address)

    async def resolve(self, name: str) -> list[PeerAddress]:
        address = self._table.get(name)
        return [] if address is None else address.all()

    def names(self) -> list[str]:
        return list(self._table)

    def set(self, name: str, address: PeerAddress) -> None:
        """Give ``name`` a new address: the next connection attempt to it goes there."""
        self._table[name] = address
        self._changes.append(name)
        self._changed.set()

    def changes(self) -> AsyncIterator[str]:
        # counted from now, not from the first ``anext``
        return self._changes_after(len(self._changes))

    async def _changes_after(self, seen: int) -> AsyncIterator[str]:
        while True:
            while seen < len(self._changes):
                seen += 1
                yield self._changes[seen - 1]
            changed = self._changed
            await changed.wait()
            if self._changed is changed:
                self._changed = anyio.Event()


#: Discovery name (the scheme of a ``--discovery`` URL, or the bare name) -> "module:Class".
#: Third parties add theirs through the ``ambrosia_edge.discovery`` entry-point group.
REGISTRY: dict[str, str] = {
    "static": "ambrosia_edge.discovery:StaticDiscovery",
}

#: Optional extras needed by a discovery, for the install hint when an import fails.
EXTRAS: dict[str, str] = {}


def open_discovery(spec: str = "static", *, peers: Mapping[str, PeerAddress] = {}) -> Discovery:
    """Build the discovery that ``spec`` names (``static``, or a URL whose scheme names it).

    Every implementation's constructor takes ``(spec, *, peers)``: the ``--peer`` table is
    given to all of them, so an explicit address can stand beside discovered ones.
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
