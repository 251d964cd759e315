"""The log writer's thread writes pages in the order given, goes on to the next without the
event loop, reports each page on its own, and never writes a page after one that failed."""

from __future__ import annotations

import threading

import anyio
import pytest

from ambrosia_edge.errors import StoreError
from ambrosia_edge.logwriter import LogWriter
from ambrosia_edge.page import Page
from ambrosia_edge.testing import eventually

pytestmark = pytest.mark.anyio


def page(number: int) -> Page:
    return Page(number, 1, [], {}, {})


class Disk:
    """Appends page numbers; can fail one page, or hold every write until it is let go."""

    def __init__(self, *, fail_at: int = 0, held: bool = False) -> None:
        self.written: list[int] = []
        self.fail_at = fail_at
        self.go = threading.Event()
        if not held:
            self.go.set()
        self.second_written = threading.Event()
        self.writing = threading.Event()

    def write(self, p: Page) -> int:
        self.writing.set()
        self.go.wait(10)
        if p.number == self.fail_at:
            raise StoreError(f"log memory://a: page {p.number} could not be written")
        self.written.append(p.number)
        if len(self.written) == 2:
            self.second_written.set()
        return 100 + p.number


async def test_pages_are_written_in_order_and_each_is_reported() -> None:
    disk = Disk()
    writer = LogWriter(disk.write, "a")
    writer.start()
    try:
        for n in range(1, 6):
            writer.submit(page(n))
        taken: list[tuple[int, int]] = []
        while len(taken) < 5:
            await writer.progress.wait()
            taken += [(p.number, size) for p, size, _ in writer.take_written()]
            assert writer.in_flight == 5 - len(taken)
    finally:
        await writer.aclose()
    assert disk.written == [1, 2, 3, 4, 5]
    assert taken == [(n, 100 + n) for n in range(1, 6)]


async def test_a_queued_page_is_written_while_the_event_loop_is_busy() -> None:
    disk = Disk()
    writer = LogWriter(disk.write, "a")
    writer.start()
    try:
        writer.submit(page(1))
        writer.submit(page(2))
        # Block the loop itself: a writer that needed it between two pages would stall here.
        assert disk.second_written.wait(10), "the second page waited for the event loop"
    finally:
        await writer.aclose()
    assert disk.written == [1, 2]


async def test_a_failed_write_is_reported_and_nothing_after_it_is_written() -> None:
    disk = Disk(fail_at=2, held=True)
    writer = LogWriter(disk.write, "a")
    writer.start()
    try:
        for n in range(1, 5):
            writer.submit(page(n))
        disk.go.set()
        await eventually(lambda: writer.failure is not None, "the failure to be reported")
        assert isinstance(writer.failure, StoreError)
        assert [p.number for p, _, _ in writer.take_written()] == [1]
    finally:
        await writer.aclose()
    assert disk.written == [1], "a page was written after the one that failed"


async def test_closing_waits_for_the_write_in_progress_and_drops_the_queue() -> None:
    disk = Disk(held=True)
    writer = LogWriter(disk.write, "a")
    writer.start()
    writer.submit(page(1))
    writer.submit(page(2))
    await eventually(disk.writing.is_set, "page 1 to be taken up")
    async with anyio.create_task_group() as tg:
        tg.start_soon(writer.aclose)
        await eventually(lambda: writer.queued == 0, "aclose to drop page 2")
        assert disk.written == []
        disk.go.set()
    # aclose returned only once page 1, already being written, was: the store may close now
    assert disk.written == [1]
