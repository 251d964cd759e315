"""A peer that is down means waiting with bounded memory, never an error to the app."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.testing import Cluster, eventually

pytestmark = pytest.mark.anyio

TOTAL = 20_000
STEP = 500
BOUND = 64 * 1024


class Producer(Immortal):
    def __init__(self) -> None:
        self.sent = 0

    async def on_first_start(self) -> None:
        self.this.fork.step()

    @rpc
    def step(self) -> None:
        sink = self.proxy("sink")
        for _ in range(STEP):
            self.sent += 1
            sink.fork.put(self.sent, b"p" * 32)
        if self.sent < TOTAL:
            self.this.fork.step()


class Sink(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.last = 0

    @rpc
    def put(self, n: int, payload: bytes) -> None:
        assert n == self.last + 1
        self.count += 1
        self.last = n


async def test_output_to_a_down_peer_stays_bounded_then_all_arrives(tmp_path: Path) -> None:
    async with Cluster(tmp_path, buffer_bytes=BOUND) as cluster:
        cluster.port("sink")
        producer = await cluster.start(Producer, "producer")
        runtime = producer.runtime
        assert runtime is not None
        out = runtime.coordinator.output("sink")
        # the sink is down: the producer runs until its buffer passes the bound, then waits
        await eventually(lambda: out.bytes > BOUND, "the buffer to fill")
        peak = out.bytes
        for _ in range(50):  # the producer is stalled, not slowly creeping upwards
            await anyio.sleep(0.01)
            peak = max(peak, out.bytes)
        one_step = STEP * 64  # one handler's output can overshoot the bound, no more
        assert peak <= BOUND + one_step, peak
        assert producer.obj.sent < TOTAL
        await cluster.start(Sink, "sink")
        await eventually(lambda: cluster["sink"].obj.count == TOTAL, "every message", timeout=60)
        assert cluster["sink"].obj.last == TOTAL
