"""Immortals used by the end-to-end tests (run in child processes through the CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio

from ambrosia_edge import Immortal, impulse, rpc

STATUS_DIR = os.environ.get("AMBROSIA_TEST_STATUS")
CALLS = int(os.environ.get("AMBROSIA_TEST_CALLS", "300"))
FORKS = int(os.environ.get("AMBROSIA_TEST_FORKS", "100000"))
#: forks per continuation step of the Streamer (small steps: many pages run ahead at once)
STEP = int(os.environ.get("AMBROSIA_TEST_STEP", "1000"))


async def report(obj: Immortal, fields: tuple[str, ...]) -> None:
    """Publish a few state fields to a file so a test can wait on progress (read-only)."""
    if not STATUS_DIR:
        return
    path = Path(STATUS_DIR) / f"{obj.name}.json"
    tmp = path.with_suffix(".tmp")
    while True:
        data: dict[str, Any] = {f: getattr(obj, f) for f in fields}
        data["pid"] = os.getpid()
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
        await anyio.sleep(0.02)


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
        self.spawn(report, self, ("count", "received", "total", "last", "out_of_order", "readings"))


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
        self.spawn(report, self, ("seen", "done"))


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
        self.spawn(report, self, ("sent",))


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
        self.spawn(report, self, ("sent", "seen", "done"))
