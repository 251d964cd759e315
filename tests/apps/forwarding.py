"""A forwarder and its variants: the recorded log of the time-travel and retrotest tests.

``Forwarder`` is the code that ran live; the others are "new versions" tried against its log.
"""

from __future__ import annotations

from typing import Any

from ambrosia_edge import Immortal, rpc

#: A probe outside the state: the forwarder's running total after each forward, as it ran.
PROBE: dict[int, int] = {}
#: The value on which ChangedBranch behaves differently: forward(12_331) is message 12,345 of
#: the forwarder's log (its start, then 1,000 forwards and one sum() at a time).
ODD_ONE = 12_331


class Forwarder(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.seen: dict[str, int] = {}

    @rpc
    def forward(self, i: int) -> None:
        self.count += 1
        self.total += i
        self.seen[str(i % 7)] = i
        PROBE[self.count] = self.total
        self.proxy("sink").fork.put(i * 2)

    @rpc
    def sum(self) -> int:
        return self.total


class SameCode(Forwarder):
    """Another class, the same behaviour."""


class ChangedBranch(Forwarder):
    """A branch that changes what one message sends."""

    @rpc
    def forward(self, i: int) -> None:
        self.count += 1
        self.total += i
        self.seen[str(i % 7)] = i
        self.proxy("sink").fork.put(i * 2 if i != ODD_ONE else -1)


class ChangedState(Forwarder):
    """Sends the same, keeps something else: only --compare-state sees it."""

    @rpc
    def forward(self, i: int) -> None:
        self.count += 1
        self.total += i
        self.seen[str(i % 7)] = i if i != ODD_ONE else 0
        self.proxy("sink").fork.put(i * 2)


class ChangedReply(Forwarder):
    """Returns something else to an awaited call."""

    @rpc
    def sum(self) -> int:
        return self.total + 1


class Raising(Forwarder):
    """Raises on one message instead of forwarding it."""

    @rpc
    def forward(self, i: int) -> None:
        if i == ODD_ONE:
            raise ValueError(f"cannot forward {i}")
        super().forward(i)


class Renamed(Forwarder):
    """Version 2: ``total`` renamed ``running_total``; behaves the same."""

    version = 2

    def __init__(self) -> None:
        self.count = 0
        self.running_total = 0
        self.seen: dict[str, int] = {}

    @classmethod
    def upgrade(cls, old_state: dict[str, Any], old_version: int) -> dict[str, Any]:
        state = dict(old_state)
        state["running_total"] = state.pop("total")
        return state

    @rpc
    def forward(self, i: int) -> None:
        self.count += 1
        self.running_total += i
        self.seen[str(i % 7)] = i
        self.proxy("sink").fork.put(i * 2)

    @rpc
    def sum(self) -> int:
        return self.running_total


class NoUpgrade(Forwarder):
    """Version 2 without an upgrade(): refused on a version-1 log."""

    version = 2


class Stopping(Forwarder):
    """Stops in the debugger at forward(ODD_ONE), as a developer's breakpoint() would."""

    @rpc
    def forward(self, i: int) -> None:
        self.count += 1
        self.total += i
        if i == ODD_ONE:
            breakpoint()
        self.seen[str(i % 7)] = i
        self.proxy("sink").fork.put(i * 2)


class Sink(Immortal):
    def __init__(self) -> None:
        self.got = 0

    @rpc
    def put(self, n: int) -> None:
        self.got += 1


class Client(Immortal):
    """Sends FORWARDS forks, and an awaited sum() after every 1,000 (and at the end)."""

    FORWARDS = 13_000

    def __init__(self) -> None:
        self.result: int | None = None

    async def on_first_start(self) -> None:
        fwd = self.proxy("fwd")
        for i in range(self.FORWARDS):
            fwd.fork.forward(i)
            if i % 1000 == 999:
                await fwd.sum()
        self.result = await fwd.sum()


class MillionClient(Client):
    FORWARDS = 1_000_000
