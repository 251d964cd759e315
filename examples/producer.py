"""The continuation pattern: a long producer that re-schedules itself, so checkpoints can happen.

A checkpoint captures an immortal's attributes, which is only a complete description of it when
no handler is half-way through (suspended on an ``await``): a suspended coroutine's local
variables cannot be saved. A producer written as one long handler, say::

    async def on_first_start(self) -> None:
        for n in range(1, 1_000_001):
            await self.proxy("consumer").consume(n)

stays suspended for its whole run, so no checkpoint can be taken (the runtime logs "checkpoint
postponed"), the log only grows, and a crash replays everything from the first message.

Written as a continuation, each step does a bounded amount of work, records its progress in
an attribute and ends by forking the next step to itself. Between two steps no handler is
running, so the runtime checkpoints there; recovery loads the checkpoint and replays only the
steps after it.
"""

from __future__ import annotations

import os

from ambrosia_edge import Immortal, rpc

STEP = 1000


def numbers_wanted() -> int:
    return int(os.environ.get("PRODUCER_NUMBERS", "1000000"))


class Producer(Immortal):
    def __init__(self) -> None:
        self.wanted = 0
        self.sent = 0

    async def on_first_start(self) -> None:
        self.wanted = await self.capture(numbers_wanted)
        self.this.fork.produce()

    @rpc
    def produce(self) -> None:
        consumer = self.proxy("consumer")
        for _ in range(min(STEP, self.wanted - self.sent)):
            self.sent += 1
            consumer.fork.consume(self.sent, self.sent == self.wanted)
        if self.sent < self.wanted:
            self.this.fork.produce()  # the continuation: the rest of the work is a new input


class Consumer(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.in_order = True

    @rpc
    def consume(self, n: int, last: bool) -> None:
        self.in_order = self.in_order and n == self.count + 1
        self.count += 1
        self.total += n
        if self.count % 10_000 == 0 or last:
            print(f"consumer: {self.count} numbers, sum {self.total}", flush=True)
        if last:
            print(f"consumer: done; each number once and in order: {self.in_order}", flush=True)
