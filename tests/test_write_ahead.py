"""Pages sealed while a large page is being written are logged, executed and acknowledged in
order, exactly once, across a crash of the receiver, and do not put checkpoints off."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from support import lone_coordinator

from ambrosia_edge import Immortal, rpc, wire
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


class SlowStore:
    """A store whose appends take 10 ms, as a busy disk's do (a unit test of the committer)."""

    def __init__(self) -> None:
        self.rolls = 0

    def append_parts(self, parts: list[bytes]) -> None:
        time.sleep(0.01)

    def append(self, record: bytes) -> None:
        pass

    def start_chunk(self, chunk: int) -> None:
        self.rolls += 1

    def write_checkpoint(self, n: int, data: bytes) -> None:
        pass

    def list_checkpoints(self) -> list[int]:
        return []

    def list_chunks(self) -> list[int]:
        return []


async def test_pages_sealed_ahead_do_not_put_checkpoints_off() -> None:
    page = 256 * 1024
    coordinator = lone_coordinator(SlowStore(), page_bytes=page, checkpoint_bytes=4 * page)
    at_rolls: list[int] = []
    roll = coordinator._roll

    async def recorded_roll() -> None:
        at_rolls.append(coordinator.log_bytes)
        await roll()

    coordinator._roll = recorded_roll  # type: ignore[method-assign]
    message = wire.frame_message(b"\x01" + bytes(64 * 1024))

    async def feed(source: str) -> None:
        n = 1
        while True:
            await coordinator.wait_page_room()
            await anyio.sleep(0.002)  # as the link receives
            coordinator.accept_batch(source, n, 1, 1, message, trusted=True)
            n += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._committer)
        tg.start_soon(coordinator._dispatcher)
        tg.start_soon(coordinator._checkpointer)
        tg.start_soon(feed, "source")
        await eventually(lambda: len(at_rolls) >= 8, "eight rolls", 30)
        tg.cancel_scope.cancel()
    assert coordinator.stats["sealed_ahead"] > 0, "nothing was sealed ahead: nothing was tested"
    # A roll comes as soon as the pages in flight when it fell due are written: the log writer
    # reports each page, and when the one that crosses the threshold is reported, one more may
    # be being written and two sealed ahead. Four pages past the threshold at most. (Sealing
    # ahead past the threshold put each roll off by about eleven pages here.)
    record = 64 * 1024 + 1024  # a message with its frame, and its share of the page's heads
    largest_page = (page // record + 1) * record
    assert max(at_rolls) <= 4 * page + 4 * largest_page, at_rolls
