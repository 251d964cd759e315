"""The immortals of the kill soak (``tools/soak.py``), run through the CLI in child processes.

Every message carries its sender's name and a number that counts up from 1, so a receiver can
tell a gap, a repeat or a swap at once; each receiver keeps, per sender, how many it got, the
last number, their sum and how many came out of order. The peer a sender or relay sends to is
``AMBROSIA_SOAK_TO`` and how many a sender sends is ``AMBROSIA_SOAK_COUNT``: both are given to
every start of the process alike, so replay takes the same branches as the first run.

``Sensor`` is fed by an impulse source of its own that ticks every few milliseconds while
``AMBROSIA_SOAK_TICKS`` is set; each tick carries ``[run, n]`` (a token of the process and a
number), and the source appends to ``AMBROSIA_SOAK_JOURNAL`` each one whose receipt said
durable: what the soak may demand to find in the state after any number of SIGKILLs (a tick
not yet logged when the process dies is lost, paper §4.2).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ambrosia_edge import Immortal, impulse, rpc
from ambrosia_edge.sources import ImpulseFeed, ImpulseSource, Receipt
from ambrosia_edge.testing.progress import report_progress

TO = os.environ.get("AMBROSIA_SOAK_TO", "sink")
COUNT = int(os.environ.get("AMBROSIA_SOAK_COUNT", "1000"))
STEP = 100  # forks per continuation step: checkpoints fall between them


class Receiver(Immortal):
    def __init__(self) -> None:
        #: sender -> [received, last, total, out_of_order]
        self.senders: dict[str, list[int]] = {}

    def take(self, sender: str, n: int) -> None:
        seen = self.senders.setdefault(sender, [0, 0, 0, 0])
        seen[0] += 1
        if n != seen[1] + 1:
            seen[3] += 1
        seen[1] = n
        seen[2] += n

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("senders",))


class Sink(Receiver):
    @rpc
    def receive(self, sender: str, n: int) -> None:
        self.take(sender, n)


class Relay(Receiver):
    """Forwards each message it takes, numbered again from 1 under its own name."""

    def __init__(self) -> None:
        super().__init__()
        self.forwarded = 0

    @rpc
    def receive(self, sender: str, n: int) -> None:
        self.take(sender, n)
        self.forwarded += 1
        self.proxy(TO).fork.receive(self.name, self.forwarded)


class Sender(Immortal):
    """Forks COUNT numbered messages to TO, STEP at a time in continuation steps."""

    def __init__(self) -> None:
        self.sent = 0

    async def on_first_start(self) -> None:
        self.this.fork.more()

    @rpc
    def more(self) -> None:
        target = self.proxy(TO)
        for _ in range(min(STEP, COUNT - self.sent)):
            self.sent += 1
            target.fork.receive(self.name, self.sent)
        if self.sent < COUNT:
            self.this.fork.more()

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("sent",))


class Ticks:
    """Sends a numbered tick every few milliseconds; journals the ones that became durable."""

    def __init__(self, journal: str) -> None:
        self.journal = journal

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        token = os.urandom(6).hex()
        with open(self.journal, "a") as journal:

            def durable(number: list[Any], receipt: Receipt) -> None:
                journal.write(f"{number[0]} {number[1]}\n")
                journal.flush()

            task_status.started()
            n = 0
            while True:
                number: list[Any] = [token, n]
                receipt = feed.send("tick", number)
                receipt.add_done_callback(partial(durable, number))
                n += 1
                await anyio.sleep(0.005)


class Sensor(Immortal):
    """Logs each tick, and forks its running count to TO: the sink sees 1, 2, 3... exactly."""

    def __init__(self) -> None:
        self.ticks: list[list[Any]] = []

    @impulse
    def tick(self, number: list[Any]) -> None:
        self.ticks.append(number)
        self.proxy(TO).fork.receive(self.name, len(self.ticks))

    def impulse_sources(self) -> list[ImpulseSource]:
        if os.environ.get("AMBROSIA_SOAK_TICKS"):
            return [Ticks(os.environ["AMBROSIA_SOAK_JOURNAL"])]
        return []

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("ticks",))
