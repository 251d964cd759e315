"""A server upgraded from version 1 to 2 (a field renamed, a method added), and its client.

``Server`` is version 1; ``ServerV2`` renames ``count`` to ``total``, adds ``peek`` and keeps
``Server`` as its ``previous`` class, so what version 1 logged is replayed by version 1's code.
``Doubling`` is a version 2 whose ``add`` behaves differently: replaying version 1's messages
with it would change history, which its ``previous`` prevents.
"""

from __future__ import annotations

import os
from typing import Any

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.testing.progress import report_progress

CALLS = int(os.environ.get("AMBROSIA_TEST_CALLS", "150"))


class Server(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def add(self, n: int) -> int:
        self.count += n
        return self.count

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("count",))


class ServerV2(Immortal):
    version = 2
    previous = Server

    def __init__(self) -> None:
        self.total = 0

    @classmethod
    def upgrade(cls, old_state: dict[str, Any], old_version: int) -> dict[str, Any]:
        state = dict(old_state)
        state["total"] = state.pop("count")
        return state

    @rpc
    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @rpc
    async def peek(self) -> int:
        return self.total

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("total",))


class Doubling(ServerV2):
    """Version 2 with another ``add``: new calls count double."""

    @rpc
    async def add(self, n: int) -> int:
        self.total += 2 * n
        return self.total


class Client(Immortal):
    """Streams awaited ``add(i)`` calls, then asks the (by then upgraded) server to ``peek``."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self.peeked: int | None = None
        self.done = False

    async def on_first_start(self) -> None:
        server = self.proxy("server")
        for i in range(1, CALLS + 1):
            self.seen.append(await server.add(i))
        self.peeked = await server.peek()
        self.done = True

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("seen", "peeked", "done"))


class ClientV2(Immortal):
    """The client's version 2 (``seen`` renamed ``results``): taking over a client that is
    waiting for a reply, it runs version 1's code until nothing waits, then converts."""

    version = 2
    previous = Client

    def __init__(self) -> None:
        self.results: list[int] = []
        self.peeked: int | None = None
        self.done = False

    @classmethod
    def upgrade(cls, old_state: dict[str, Any], old_version: int) -> dict[str, Any]:
        state = dict(old_state)
        state["results"] = state.pop("seen")
        return state
