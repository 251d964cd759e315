"""Immortals used by the end-to-end tests (run in child processes through the CLI)."""

from __future__ import annotations

import os

from ambrosia_edge import Immortal, impulse, rpc
from ambrosia_edge.testing.progress import report_progress

CALLS = int(os.environ.get("AMBROSIA_TEST_CALLS", "300"))
FORKS = int(os.environ.get("AMBROSIA_TEST_FORKS", "100000"))
#: forks per continuation step of the Streamer (small steps: many pages run ahead at once)
STEP = int(os.environ.get("AMBROSIA_TEST_STEP", "1000"))


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.received = 0
        self.total = 0
        self.last = 0
        self.out_of_order = 0
        self.readings: list[float] = []

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count

    @rpc
    async def fail(self, text: str) -> None:
        raise ValueError(text)

    @rpc
    def receive(self, n: int) -> None:
        self.received += 1
        self.total += n
        if n != self.last + 1:
            self.out_of_order += 1
        self.last = n

    @impulse
    async def reading(self, value: float) -> None:
        self.readings.append(value)

    async def becoming_primary(self) -> None:
        self.spawn(
            report_progress,
            self,
            ("count", "received", "total", "last", "out_of_order", "readings"),
        )


class Client(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.done = False

    async def on_first_start(self) -> None:
        server = self.proxy("server")
        for _ in range(CALLS):
            self.seen.append(await server.inc())
        self.done = True

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("seen", "done"))


class Streamer(Immortal):
    """Forks FORKS numbered messages in continuation steps of STEP (1,000 unless the test sets
    another; checkpoints interleave)."""

    def __init__(self) -> None:
        self.sent = 0

    async def on_first_start(self) -> None:
        self.this.fork.more()

    @rpc
    def more(self) -> None:
        server = self.proxy("server")
        for _ in range(min(STEP, FORKS - self.sent)):
            self.sent += 1
            server.fork.receive(self.sent)
        if self.sent < FORKS:
            self.this.fork.more()

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("sent",))


class Mixer(Immortal):
    """Streams numbered forks to the server with an awaited call after every ten, CALLS
    times: the server counts both, and the forks' order (``out_of_order`` stays 0)."""

    def __init__(self) -> None:
        self.sent = 0
        self.seen: list[int] = []
        self.done = False

    async def on_first_start(self) -> None:
        server = self.proxy("server")
        for _ in range(CALLS):
            for _ in range(10):
                self.sent += 1
                server.fork.receive(self.sent)
            self.seen.append(await server.inc())
        self.done = True

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("sent", "seen", "done"))
