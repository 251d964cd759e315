"""The forwarder of the AMBROSIA paper (§3.2): why reading the clock needs ``capture``.

The forwarder produces numbered messages, stamps each with the time and forwards it to a sink
in another process. Kill the forwarder with ``kill -9`` while it runs and start it again: it
replays its log and prints the messages it had forwarded once more, with the very same stamps,
and the sink, which never saw a duplicate, finally compares its stamps with the forwarder's.

Why ``await self.capture(time.time)`` and not ``time.time()``: recovery rebuilds the forwarder
by running its handlers again on the logged inputs. A plain ``time.time()`` would return a new
time during that replay, so the rebuilt forwarder would remember stamps the sink never received,
and a message it regenerates for a sink that had not logged it yet would carry a different stamp
than the first attempt. ``capture`` runs the function once, live, logs its value like any
input, and during replay hands back the logged value, so the replayed handler is deterministic.
"""

from __future__ import annotations

import os
import time

from ambrosia_edge import Immortal, rpc


def messages_wanted() -> int:
    return int(os.environ.get("FORWARDER_MESSAGES", "3000"))


class Forwarder(Immortal):
    def __init__(self) -> None:
        self.wanted = 0
        self.stamps: list[float] = []

    async def on_first_start(self) -> None:
        self.wanted = await self.capture(messages_wanted)
        self.this.fork.forward(1)

    @rpc
    async def forward(self, n: int) -> None:
        stamp: float = await self.capture(time.time)
        self.stamps.append(stamp)
        # Awaited, so one message is in flight at a time and the stream runs at a human pace.
        await self.proxy("sink").put(n, stamp, n == self.wanted)
        print(f"forwarder: message {n} stamped {stamp:.6f}", flush=True)
        if n < self.wanted:
            # Each message is its own logged step (see producer.py for why that matters).
            self.this.fork.forward(n + 1)

    @rpc
    def history(self) -> list[float]:
        return self.stamps


class Sink(Immortal):
    def __init__(self) -> None:
        self.numbers: list[int] = []
        self.stamps: list[float] = []

    @rpc
    async def put(self, n: int, stamp: float, last: bool) -> None:
        self.numbers.append(n)
        self.stamps.append(stamp)
        print(f"sink: message {n} stamped {stamp:.6f}", flush=True)
        if last:
            theirs = await self.proxy("forwarder").history()
            in_order = self.numbers == list(range(1, n + 1))
            print(
                f"sink: {n} messages, each received once and in order: {in_order}; the "
                f"forwarder's stamps are the ones received: {theirs == self.stamps}",
                flush=True,
            )
