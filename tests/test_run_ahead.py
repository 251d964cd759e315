"""A page of an immortal's own messages (a continuation's next step) runs while the log writer
flushes it, and what it sends to others is held until the page is durable; pages with input
from others still run only once durable. The log, and when anything leaves, do not change."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.storage.local import LocalStore
from instances import settings
from support import free_port, lone_coordinator

from ambrosia_edge import Immortal, impulse, rpc, wire
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.errors import StoreError
from ambrosia_edge.page import decode_page
from ambrosia_edge.records import RecordType, scan_records
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.testing import eventually

pytestmark = pytest.mark.anyio

MESSAGE = wire.frame_message(b"\x01" + bytes(15))
SENT = b"\x01sent by the page"


class GatedDisk:
    """Appends wait for the gate: a flush that takes as long as the test wants."""

    def __init__(self, *, inline: int = 64 * 1024, fail: bool = False) -> None:
        self.inline_append_limit = inline
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.pages: list[list[str]] = []
        self.fail = fail

    def append_parts(self, parts: list[bytes]) -> None:
        self.writing.set()
        assert self.gate.wait(30), "the test never opened the gate"
        if self.fail:
            raise StoreError("log memory://a: no space left; free some and restart")
        [(_, _, body)] = list(scan_records(b"".join(parts), source="test"))
        self.pages.append([e.source for e in decode_page(body, "test").entries])


class Sends:
    """Runs a batch by sending one message to immortal "b" (and records what it ran)."""

    quiescent = True
    suspended_handlers: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.coordinator: Coordinator | None = None

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        assert self.coordinator is not None
        self.ran.append(source)
        self.coordinator.send("b", SENT, impulse=False)


@contextlib.asynccontextmanager
async def started(disk: GatedDisk) -> AsyncIterator[tuple[Coordinator, Sends]]:
    runner = Sends()
    coordinator = lone_coordinator(disk, runner)
    runner.coordinator = coordinator
    coordinator.output("b").rebase(0, 0)  # as after the first handshake with "b"
    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._committer)
        tg.start_soon(coordinator._dispatcher)
        await eventually(lambda: coordinator._committer_idle, "the committer to idle")
        yield coordinator, runner
        tg.cancel_scope.cancel()


@pytest.fixture
async def ours() -> AsyncIterator[tuple[Coordinator, Sends, GatedDisk]]:
    disk = GatedDisk()
    async with started(disk) as (coordinator, runner):
        yield coordinator, runner, disk


async def test_our_own_page_runs_during_its_flush_and_its_output_waits_for_it(
    ours: tuple[Coordinator, Sends, GatedDisk],
) -> None:
    coordinator, runner, disk = ours
    out = coordinator.output("b")
    coordinator.accept_batch("a", 1, 1, 1, MESSAGE, trusted=True)  # a message to ourselves
    await eventually(lambda: runner.ran == ["a"], "the page to run ahead of its flush")
    await eventually(disk.writing.is_set, "the flush to start")
    assert not disk.gate.is_set() and disk.pages == []
    assert "a" not in coordinator.durable
    # what it sent is there, and held: nothing leaves before the page is durable
    assert len(out) == 1 and not out.has_unsent() and out.unsent(1 << 20) == (0, 0, [])
    assert coordinator.stats["run_ahead"] == 1
    disk.gate.set()
    await eventually(lambda: coordinator.durable.get("a") == (1, 1), "the page to be durable")
    assert disk.pages == [["a"]]
    assert out.has_unsent()
    assert out.unsent(1 << 20) == (1, 1, [wire.frame_message(SENT)])
    assert runner.ran == ["a"]  # run once, not again when durable


async def test_what_is_sent_meanwhile_waits_too_and_order_is_kept(
    ours: tuple[Coordinator, Sends, GatedDisk],
) -> None:
    coordinator, runner, disk = ours
    out = coordinator.output("b")
    coordinator.send("b", b"\x01before", impulse=True)  # from a task, before the page
    coordinator.accept_batch("a", 1, 1, 1, MESSAGE, trusted=True)
    await eventually(lambda: runner.ran == ["a"], "the page to run ahead of its flush")
    coordinator.send("b", b"\x01after", impulse=True)  # from a task, while it is flushed
    assert out.unsent(1 << 20) == (1, 0, [wire.frame_message(b"\x01before")])
    assert out.unsent(1 << 20) == (0, 0, [])
    disk.gate.set()
    await eventually(lambda: out.has_unsent(), "the page to be durable")
    framed = [wire.frame_message(m) for m in (SENT, b"\x01after")]
    assert out.unsent(1 << 20) == (2, 1, framed)


async def test_a_page_with_input_from_others_runs_only_once_durable() -> None:
    disk = GatedDisk(inline=0)  # through the log writer, so the loop runs while it flushes
    async with started(disk) as (coordinator, runner):
        coordinator.accept_batch("c", 1, 1, 1, MESSAGE, trusted=True)
        await eventually(disk.writing.is_set, "the flush to start")
        assert runner.ran == [] and coordinator.stats["run_ahead"] == 0
        disk.gate.set()
        await eventually(lambda: runner.ran == ["c"], "the page to run once durable")
        assert coordinator.output("b").has_unsent()


@pytest.mark.parametrize(
    "send",
    ["impulse", "capture", "both kinds in one page"],
)
async def test_what_replay_would_not_send_again_runs_only_once_durable(send: str) -> None:
    """An impulse or a captured value is lost if the process dies before the flush: a page
    holding one must not change the state a task can read before it is durable."""
    disk = GatedDisk(inline=0)  # through the log writer, so the loop runs while it flushes
    async with started(disk) as (coordinator, runner), anyio.create_task_group() as tg:
        tg.start_soon(coordinator._self_sender)
        if send != "capture":
            coordinator.send("a", b"\x81impulse", impulse=True)
        if send != "impulse":
            coordinator.send("a", b"\x01fork", impulse=False)
            coordinator.send_thunk_to_self(lambda: b"\x06captured")
        await eventually(disk.writing.is_set, "the flush to start")
        assert runner.ran == [] and coordinator.stats["run_ahead"] == 0
        disk.gate.set()
        await eventually(lambda: runner.ran == ["a"], "the page to run once durable")
        tg.cancel_scope.cancel()


async def test_forks_to_ourselves_through_the_link_to_ourselves_run_ahead(
    ours: tuple[Coordinator, Sends, GatedDisk],
) -> None:
    coordinator, runner, disk = ours
    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._self_sender)
        coordinator.send("a", b"\x01fork", impulse=False)
        coordinator.send("a", b"\x02request", impulse=False)
        await eventually(lambda: runner.ran == ["a"], "the page to run ahead of its flush")
        assert not disk.gate.is_set() and coordinator.stats["run_ahead"] == 1
        disk.gate.set()
        await eventually(lambda: "a" in coordinator.durable, "the page to be durable")
        tg.cancel_scope.cancel()


async def test_a_failed_flush_of_a_page_run_ahead_stops_it_and_sends_nothing() -> None:
    disk = GatedDisk(fail=True)
    runner = Sends()
    coordinator = lone_coordinator(disk, runner)
    runner.coordinator = coordinator
    out = coordinator.output("b")
    out.rebase(0, 0)
    with pytest.raises(BaseExceptionGroup) as raised, anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator._committer)
            tg.start_soon(coordinator._dispatcher)
            await eventually(lambda: coordinator._committer_idle, "the committer to idle")
            coordinator.accept_batch("a", 1, 1, 1, MESSAGE, trusted=True)
            await eventually(lambda: runner.ran == ["a"], "the page to run ahead")
            disk.gate.set()
            await anyio.sleep_forever()  # the committer must end the group
    assert raised.group_contains(StoreError, match="no space left")
    assert "a" not in coordinator.durable
    assert len(out) == 1 and not out.has_unsent()


# --- a chain: each page run ahead forks the next, which runs ahead behind it ---------------


class MeteredDisk:
    """Each append waits for a permit: the test lets the flushes through one at a time. It
    records each append as the page numbers of the records it holds, or fails them all."""

    def __init__(self, *, fail: bool = False) -> None:
        self.inline_append_limit = 64 * 1024
        self.permits = threading.Semaphore(0)
        self.writing = threading.Event()
        self.appends: list[list[int]] = []
        self.fail = fail

    def append_parts(self, parts: list[bytes]) -> None:
        self.writing.set()
        assert self.permits.acquire(timeout=30), "the test never let the flush through"
        if self.fail:
            raise StoreError("log memory://a: no space left; free some and restart")
        records = scan_records(b"".join(parts), source="test")
        self.appends.append([decode_page(body, "test").number for _, _, body in records])


class Chain:
    """Runs each message to ourselves by sending its step number to "b" and forking the next
    step to ourselves, STEPS steps in all: a continuation."""

    quiescent = True
    suspended_handlers: tuple[str, ...] = ()
    STEPS = 12

    def __init__(self) -> None:
        self.ran: list[int] = []
        self.coordinator: Coordinator | None = None

    def dispatch_batch(self, source: str, batch: bytes, count: int) -> None:
        assert self.coordinator is not None and source == "a"
        for _ in range(count):
            self.ran.append(len(self.ran) + 1)
            self.coordinator.send("b", sent(len(self.ran)), impulse=False)
            if len(self.ran) < self.STEPS:
                self.coordinator.send("a", b"\x01step", impulse=False)


def sent(step: int) -> bytes:
    return b"\x01step %d" % step


@contextlib.asynccontextmanager
async def chain(disk: MeteredDisk) -> AsyncIterator[tuple[Coordinator, Chain]]:
    runner = Chain()
    coordinator = lone_coordinator(disk, runner)
    runner.coordinator = coordinator
    coordinator.output("b").rebase(0, 0)
    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._committer)
        tg.start_soon(coordinator._dispatcher)
        tg.start_soon(coordinator._self_sender)
        await eventually(lambda: coordinator._committer_idle, "the committer to idle")
        coordinator.send("a", b"\x01step", impulse=False)  # the first step
        yield coordinator, runner
        tg.cancel_scope.cancel()


async def test_a_chain_of_steps_runs_ahead_and_each_output_waits_for_its_own_flush() -> None:
    disk = MeteredDisk()
    async with chain(disk) as (coordinator, runner):
        out = coordinator.output("b")
        # the first page's flush stands still, and every step runs meanwhile, one page each
        await eventually(lambda: len(runner.ran) == Chain.STEPS, "the chain to run ahead")
        assert coordinator.stats["run_ahead"] == Chain.STEPS
        assert coordinator.stats["chained"] == Chain.STEPS - 1
        assert disk.appends == [] and "a" not in coordinator.durable
        assert len(out) == Chain.STEPS and not out.has_unsent()
        assert out.unsent(1 << 20) == (0, 0, [])
        # the flushes go through one at a time: each write holds the first page still queued
        # and, if the writer found more queued behind it, those too (each its own record, in
        # order); each time the output of exactly the steps written goes, nothing of later ones
        written = 0
        while written < Chain.STEPS:
            disk.permits.release()
            await eventually(lambda: out.has_unsent(), "the next pages to be durable")
            pages = disk.appends[-1]
            assert pages == list(range(written + 1, written + len(pages) + 1)), disk.appends
            framed = [wire.frame_message(sent(n)) for n in pages]
            assert out.unsent(1 << 20) == (written + 1, len(pages), framed)
            assert not out.has_unsent() and out.unsent(1 << 20) == (0, 0, [])
            written += len(pages)
            assert coordinator.durable["a"] == (written, written)
        assert len(disk.appends) < Chain.STEPS, "no write took more than one page"
        assert runner.ran == list(range(1, Chain.STEPS + 1))  # each step once
        assert not coordinator._ahead


async def test_a_failed_flush_under_a_chain_stops_it_and_sends_nothing_of_any_step() -> None:
    disk = MeteredDisk(fail=True)
    runner = Chain()
    coordinator = lone_coordinator(disk, runner)
    runner.coordinator = coordinator
    out = coordinator.output("b")
    out.rebase(0, 0)
    with pytest.raises(BaseExceptionGroup) as raised, anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(coordinator._committer)
            tg.start_soon(coordinator._dispatcher)
            tg.start_soon(coordinator._self_sender)
            await eventually(lambda: coordinator._committer_idle, "the committer to idle")
            coordinator.send("a", b"\x01step", impulse=False)
            await eventually(lambda: len(runner.ran) == Chain.STEPS, "the chain to run ahead")
            disk.permits.release()
            await anyio.sleep_forever()  # the committer must end the group
    assert raised.group_contains(StoreError, match="no space left")
    assert "a" not in coordinator.durable
    assert len(out) == Chain.STEPS and not out.has_unsent()


# --- end to end: a continuation as users write it, between two processes' worth of runtime ---


class Sink(Immortal):
    def __init__(self) -> None:
        self.got: list[int] = []
        self.sum = 0

    @rpc
    async def take(self, n: int) -> None:
        self.got.append(n)
        self.sum += n

    @rpc
    async def double(self, n: int) -> int:
        return 2 * n


class Steps(Immortal):
    """Forks STEP numbers a step, with one awaited call in every third step."""

    STEP = 7
    TOTAL = 210

    def __init__(self) -> None:
        self.sent = 0
        self.doubled: list[int] = []
        self.done = False

    @impulse
    async def go(self) -> None:
        if not self.sent:
            self.this.fork.step()

    @rpc
    async def step(self) -> None:
        sink = self.proxy("server")
        for _ in range(self.STEP):
            sink.fork.take(self.sent)
            self.sent += 1
        if self.sent % (3 * self.STEP) == 0:
            self.doubled.append(await sink.double(self.sent))
        if self.sent < self.TOTAL:
            self.this.fork.step()
        else:
            self.done = True


async def test_a_continuation_runs_ahead_and_everything_arrives_once_in_order(
    tmp_path: Path,
) -> None:
    ps, pc = free_port(), free_port()
    server = Runtime(Sink, settings("server", tmp_path / "s", ps, {"client": pc}))
    client = Runtime(Steps, settings("client", tmp_path / "c", pc, {"server": ps}))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        await tg.start(client.serve)
        client.immortal.this.fork.go()
        await eventually(lambda: client.immortal.done, "the client to finish", 30)  # type: ignore[attr-defined]
        await eventually(lambda: len(server.immortal.got) == Steps.TOTAL, "the sink", 30)  # type: ignore[attr-defined]
        tg.cancel_scope.cancel()
    sink: Any = server.immortal
    steps: Any = client.immortal
    assert sink.got == list(range(Steps.TOTAL))
    assert steps.doubled == [2 * n for n in range(21, Steps.TOTAL + 1, 21)]
    assert client.coordinator.stats["run_ahead"] > 0

    # the client's log is a record per page, pages numbered in order, and its messages to
    # itself numbered without a gap or a repeat, however many pages shared a write
    with LocalStore(str(tmp_path / "c")) as log:
        pages = [
            decode_page(body, "test")
            for chunk in log.list_chunks()
            for _, rtype, body in log.read_typed_records(chunk)
            if rtype == RecordType.PAGE
        ]
    numbers = [p.number for p in pages]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    own = [(e.first_total, e.count) for p in pages for e in p.entries if e.source == "client"]
    assert [first for first, _ in own] == list(
        itertools.accumulate([1] + [count for _, count in own[:-1]])
    )

    # the logs alone rebuild both, as they were
    for cls, name, log, port, peer in (
        (Sink, "server", tmp_path / "s", ps, {"client": pc}),
        (Steps, "client", tmp_path / "c", pc, {"server": ps}),
    ):
        again = Runtime(cls, settings(name, log, port, peer))
        again.recover(read_only=True)
        again.store.close()
        live = server.immortal if name == "server" else client.immortal
        assert state(again.immortal) == state(live), name


def state(obj: Immortal) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
