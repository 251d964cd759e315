"""Pages sealed while a large page is being written are logged, executed and acknowledged in
order, exactly once, across a crash of the receiver."""

from __future__ import annotations

from pathlib import Path

import pytest

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.testing import Cluster, eventually

pytestmark = pytest.mark.anyio

RECORDS = 200
SIZE = 100 * 1024  # pages of two or more of these are written around the page cache


class Producer(Immortal):
    async def on_first_start(self) -> None:
        sink = self.proxy("sink")
        for i in range(RECORDS):
            sink.fork.take(i.to_bytes(4, "big") + bytes(SIZE - 4))


class Sink(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    @rpc
    def take(self, record: bytes) -> None:
        assert len(record) == SIZE
        self.seen.append(int.from_bytes(record[:4], "big"))


async def test_pages_sealed_during_a_write_follow_it_exactly_once(tmp_path: Path) -> None:
    async with Cluster(tmp_path, page_bytes=256 * 1024) as cluster:
        await cluster.start(Sink, "sink")
        await cluster.start(Producer, "producer", peers=["sink"])
        await eventually(lambda: len(cluster["sink"].obj.seen) >= RECORDS // 3, "some records")
        sealed_ahead = cluster["sink"].runtime.coordinator.stats["sealed_ahead"]
        await cluster.crash("sink")
        await cluster.start(Sink, "sink")
        await eventually(lambda: len(cluster["sink"].obj.seen) >= RECORDS, "every record", 60)
        sealed_ahead += cluster["sink"].runtime.coordinator.stats["sealed_ahead"]
        assert cluster["sink"].obj.seen == list(range(RECORDS))
    assert sealed_ahead > 0, "no page was sealed while another was written: nothing was tested"
