"""A batch that arrives while the committer idles is logged and run before accept_batch returns
(a lone awaited call waits for two such appends), and nothing else changes: batches that arrive
together still share a page, and a failed write stops the immortal once, whether it was written
on arrival or by the log writer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest
from support import lone_coordinator

from ambrosia_edge import wire
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.errors import StoreError
from ambrosia_edge.page import decode_page
from ambrosia_edge.records import scan_records
from ambrosia_edge.testing import eventually

pytestmark = pytest.mark.anyio


class Disk:
    """Records each appended page (a unit test of the coordinator's write path)."""

    inline_append_limit = 64 * 1024

    def __init__(self, *, fail: bool = False) -> None:
        self.pages: list[list[str]] = []
        self.fail = fail

    def append_parts(self, parts: list[bytes]) -> None:
        if self.fail:
            raise StoreError("log memory://a: no space left; free some and restart")
        [(_, _, body)] = list(scan_records(b"".join(parts), source="test"))
        self.pages.append([e.source for e in decode_page(body, "test").entries])


class Recorder:
    quiescent = True
    suspended_handlers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.ran: list[tuple[str, bytes]] = []

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        self.ran.append((source, batch))


def coordinator_on(disk: Disk) -> tuple[Coordinator, Recorder]:
    executor = Recorder()
    return lone_coordinator(disk, executor), executor


MESSAGE = wire.frame_message(b"\x01" + bytes(15))


@pytest.fixture
async def idle() -> AsyncIterator[tuple[Coordinator, Recorder, Disk]]:
    disk = Disk()
    coordinator, executor = coordinator_on(disk)
    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._committer)
        tg.start_soon(coordinator._dispatcher)
        await eventually(lambda: coordinator._committer_idle, "the committer to idle")
        yield coordinator, executor, disk
        tg.cancel_scope.cancel()


async def test_a_lone_batch_is_logged_and_run_before_accept_batch_returns(
    idle: tuple[Coordinator, Recorder, Disk],
) -> None:
    coordinator, executor, disk = idle
    coordinator.accept_batch("b", 1, 1, 1, MESSAGE, trusted=True, last=True)
    assert disk.pages == [["b"]]
    assert coordinator.durable["b"] == (1, 1)
    assert executor.ran == [("b", MESSAGE)]


async def test_a_batch_with_more_behind_it_waits_for_them(
    idle: tuple[Coordinator, Recorder, Disk],
) -> None:
    coordinator, executor, disk = idle
    coordinator.accept_batch("b", 1, 1, 1, MESSAGE, trusted=True, last=False)
    assert disk.pages == [] and "b" not in coordinator.durable
    coordinator.accept_batch("c", 1, 1, 1, MESSAGE, trusted=True, last=True)
    assert disk.pages == [["b", "c"]]  # one page, one flush, in arrival order
    assert executor.ran == [("b", MESSAGE), ("c", MESSAGE)]


async def test_without_last_the_committer_writes_the_page(
    idle: tuple[Coordinator, Recorder, Disk],
) -> None:
    coordinator, executor, disk = idle
    coordinator.accept_batch("b", 1, 1, 1, MESSAGE, trusted=True)
    assert disk.pages == []
    await eventually(lambda: disk.pages == [["b"]], "the committer's page")
    await eventually(lambda: executor.ran == [("b", MESSAGE)], "the page to run")


@pytest.mark.parametrize(
    "message",
    [MESSAGE, wire.frame_message(b"\x01" + bytes(100 * 1024))],
    ids=["written on arrival", "written by the log writer"],
)
async def test_a_failed_write_stops_the_committer(message: bytes) -> None:
    coordinator, executor = coordinator_on(Disk(fail=True))
    with pytest.raises(BaseExceptionGroup) as raised, anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator._committer)
            await eventually(lambda: coordinator._committer_idle, "the committer to idle")
            coordinator.accept_batch("b", 1, 1, 1, message, trusted=True, last=True)
            await anyio.sleep_forever()  # the committer must end the group
    assert raised.group_contains(StoreError, match="no space left")
    assert len(raised.value.exceptions) == 1
    assert executor.ran == [] and "b" not in coordinator.durable
