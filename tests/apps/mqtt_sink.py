"""An immortal fed by MQTT, for the end-to-end tests (run in child processes through the CLI)."""

from __future__ import annotations

import os
from typing import Any

from ambrosia_edge import Immortal, impulse, rpc
from ambrosia_edge.testing.progress import report_progress


class Sink(Immortal):
    """Counts numbered readings per topic, and how many came out of order."""

    def __init__(self) -> None:
        self.count = 0
        self.last: dict[str, int] = {}
        self.out_of_order = 0
        self.values: list[Any] = []

    @impulse
    def reading(self, topic: str, payload: bytes) -> None:
        n = int(payload)
        self.count += 1
        if n != self.last.get(topic, 0) + 1:
            self.out_of_order += 1
        self.last[topic] = n

    @impulse
    def record(self, topic: str, value: Any) -> None:
        self.values.append([topic, value])

    @rpc
    def not_an_impulse(self, topic: str, payload: bytes) -> None:
        self.values.append(["rpc", topic])

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("count", "last", "out_of_order", "values"))


#: How many results the producer publishes, and at which QoS (the tests set them).
RESULTS = int(os.environ.get("AMBROSIA_TEST_RESULTS", "10000"))
RESULTS_QOS = int(os.environ.get("AMBROSIA_TEST_RESULTS_QOS", "1"))


class Producer(Immortal):
    """Publishes RESULTS numbered results over four topics, ten per logged step, as a
    continuation: each step forks the next to itself."""

    def __init__(self) -> None:
        self.done = 0

    async def on_first_start(self) -> None:
        self.this.fork.step(1)

    @rpc
    def step(self, first: int) -> None:
        last = min(first + 9, RESULTS)
        for n in range(first, last + 1):
            # per topic, payloads count 1, 2, 3...: what Sink.reading checks
            self.publish(f"results/{n % 4}", str((n - 1) // 4 + 1), qos=RESULTS_QOS)
        self.done = last
        if last < RESULTS:
            self.this.fork.step(last + 1)

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("done",))


class Relay(Sink):
    """Both directions: each reading taken from MQTT is published back (``relay/out``, the
    count so far), and so is each call from a peer (``relay/peer``, the calls so far)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @impulse
    def reading(self, topic: str, payload: bytes) -> None:
        super().reading(topic, payload)
        self.publish("relay/out", str(self.count))

    @rpc
    def inc(self) -> int:
        self.calls += 1
        self.publish("relay/peer", str(self.calls))
        return self.calls

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("count", "last", "out_of_order", "calls"))


class Kinds(Immortal):
    """One publish of each payload kind and QoS, in on_first_start."""

    def __init__(self) -> None:
        self.done = False

    async def on_first_start(self) -> None:
        self.publish("kinds/bytes", b"\x00\x01", qos=0)
        self.publish("kinds/text", "héllo")
        self.publish("kinds/json", {"a": [1, 2.5, None]}, qos=2, retain=True)
        self.done = True

    async def becoming_primary(self) -> None:
        self.spawn(report_progress, self, ("done",))
