"""The impulse-source contract: when a source runs, what its impulses do, and how one is found."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar, TextIO

import anyio
import pytest
from ambrosia_edge.transports.terminal import TerminalSource
from anyio.abc import TaskGroup, TaskStatus

from ambrosia_edge import Immortal, NotAnImpulseError, UnknownMethodError, impulse, rpc
from ambrosia_edge import registry as plugins
from ambrosia_edge import sources as registry
from ambrosia_edge.config import Settings
from ambrosia_edge.errors import ConfigError
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.sources import ImpulseFeed, ImpulseSource, Receipt, open_source
from ambrosia_edge.testing import eventually


class Fed(Immortal):
    """Keeps every note it is fed; ``plain`` is there to be refused."""

    #: the stream its own terminal source reads, when a test gives one
    stream: ClassVar[TextIO | None] = None
    ended: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.notes: list[str] = []

    @impulse
    def note(self, text: str) -> None:
        self.notes.append(text)

    @rpc
    def plain(self) -> None:
        pass

    def impulse_sources(self) -> list[ImpulseSource]:
        if Fed.stream is None:
            return []
        return [TerminalSource("note", stream=Fed.stream, at_end=lambda: Fed.ended.append("end"))]


class Scripted:
    """A source that keeps its feed for the test to send through, and notes its life."""

    def __init__(self, probe: Callable[[], object] = lambda: None) -> None:
        self.probe = probe
        self.events: list[object] = []
        self.feed: ImpulseFeed | None = None

    async def run(
        self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        self.events.append(("started", self.probe()))
        self.feed = feed
        try:
            task_status.started()
            await anyio.sleep_forever()
        finally:
            self.events.append("stopped")


def notes(runtime: Runtime) -> list[str]:
    obj = runtime.immortal
    assert isinstance(obj, Fed)
    return obj.notes


def settings(tmp: Path) -> Settings:
    return Settings(target="tests:inprocess", name="fed", log=str(tmp / "fed"))


class Host:
    """One runtime in the test's task group, that can be crashed (cancelled, no clean-up)."""

    def __init__(self, tg: TaskGroup, runtime: Runtime) -> None:
        self.tg = tg
        self.runtime = runtime
        self.scope = anyio.CancelScope()
        self.stopped = anyio.Event()

    async def start(self) -> Runtime:
        async def serve(*, task_status: TaskStatus[Any]) -> None:
            try:
                with self.scope:
                    await self.runtime.serve(task_status=task_status)
            finally:
                self.stopped.set()

        await self.tg.start(serve)
        return self.runtime

    async def crash(self) -> None:
        self.scope.cancel()
        await self.stopped.wait()


pytestmark = pytest.mark.anyio


async def test_a_source_starts_once_the_immortal_is_live_and_stops_with_it(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        first = Scripted()
        host = Host(tg, Runtime(Fed, settings(tmp_path), sources=[first]))
        await host.start()
        assert first.feed is not None
        await first.feed.send("note", "before").wait()
        await host.crash()
        assert first.events[-1] == "stopped"

        runtime = Runtime(Fed, settings(tmp_path))

        def probe() -> object:
            executor = runtime.executor
            assert executor is not None
            return runtime.coordinator.live, executor.replaying, list(notes(runtime))

        source = Scripted(probe)
        runtime.sources.append(source)
        runtime.recover()
        assert source.events == []  # replay is over, and still nothing started
        await Host(tg, runtime).start()
        # live, not replaying, with the state that recovery rebuilt
        assert source.events == [("started", (True, False, ["before"]))]
        tg.cancel_scope.cancel()
    assert source.events[-1] == "stopped"


async def test_an_impulse_is_fed_exactly_once_and_is_durable_when_its_receipt_says(
    tmp_path: Path,
) -> None:
    async with anyio.create_task_group() as tg:
        source = Scripted()
        runtime = Runtime(Fed, settings(tmp_path), sources=[source])
        host = Host(tg, runtime)
        await host.start()
        feed = source.feed
        assert feed is not None and feed.immortal == "fed"
        told: list[Receipt] = []
        receipts = [feed.send("note", f"n{i}") for i in range(50)]
        assert not receipts[0].durable  # sent, not yet logged
        receipts[0].add_done_callback(told.append)
        assert [r.number for r in receipts] == sorted({r.number for r in receipts})
        await receipts[-1].wait()
        assert all(r.durable for r in receipts)
        assert told == [receipts[0]]
        assert runtime.coordinator.durable["fed"][0] >= receipts[-1].number
        later: list[Receipt] = []
        receipts[0].add_done_callback(later.append)  # already durable: told at once
        assert later == [receipts[0]]
        await host.crash()  # at once: durable is all that the log promises

        again = Host(tg, Runtime(Fed, settings(tmp_path)))
        restarted = await again.start()
        await eventually(lambda: len(notes(restarted)) >= 50, "the replayed notes")
        assert notes(restarted) == [f"n{i}" for i in range(50)]  # each once, in order
        tg.cancel_scope.cancel()


async def test_a_feed_sends_to_impulses_only(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        source = Scripted()
        await Host(tg, Runtime(Fed, settings(tmp_path), sources=[source])).start()
        assert source.feed is not None
        with pytest.raises(NotAnImpulseError, match=r"fed\.plain is not an @impulse"):
            source.feed.send("plain")
        with pytest.raises(UnknownMethodError, match="no @impulse method 'nope'"):
            source.feed.send("nope")
        tg.cancel_scope.cancel()


async def test_a_failing_source_leaves_the_immortal_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken:
        async def run(
            self, feed: ImpulseFeed, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
        ) -> None:
            raise OSError("no such device")

    async with anyio.create_task_group() as tg:
        working = Scripted()
        runtime = Runtime(Fed, settings(tmp_path), sources=[Broken(), working])
        await Host(tg, runtime).start()
        assert working.feed is not None
        await working.feed.send("note", "still here").wait()
        await eventually(lambda: notes(runtime) == ["still here"], "the note")
        tg.cancel_scope.cancel()
    assert "impulse source" in caplog.text and "no such device" in caplog.text


@contextmanager
def pipe() -> Iterator[tuple[TextIO, TextIO]]:
    read_fd, write_fd = os.pipe()
    with open(read_fd) as reading, open(write_fd, "w") as writing:
        yield reading, writing


async def test_the_terminal_source_feeds_lines_from_the_immortals_own_sources(
    tmp_path: Path,
) -> None:
    """The recorder's way: the immortal names its sources; each line is one impulse."""
    Fed.ended.clear()
    with pipe() as (reading, writing):
        Fed.stream = reading
        try:
            async with anyio.create_task_group() as tg:
                runtime = await Host(tg, Runtime(Fed, settings(tmp_path))).start()
                writing.write("alpha\nbeta\n")
                writing.flush()
                await eventually(lambda: notes(runtime) == ["alpha", "beta"], "2 lines")
                writing.close()
                await eventually(lambda: Fed.ended == ["end"], "the end of input")
                tg.cancel_scope.cancel()
        finally:
            Fed.stream = None


async def test_the_terminal_source_reports_a_method_it_cannot_feed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pipe() as (reading, writing):
        source = TerminalSource("plain", stream=reading)
        async with anyio.create_task_group() as tg:
            runtime = Runtime(Fed, settings(tmp_path), sources=[source])
            await Host(tg, runtime).start()
            writing.write("x\n")
            writing.flush()
            await eventually(lambda: "not an @impulse" in caplog.text, "the error")
            tg.cancel_scope.cancel()


# --- the registry ------------------------------------------------------------------------------


def test_a_source_is_found_by_name() -> None:
    source = open_source("terminal:note")
    assert isinstance(source, TerminalSource) and source.method == "note"
    assert isinstance(source, ImpulseSource)


def test_a_source_that_needs_more_says_what() -> None:
    with pytest.raises(ConfigError, match="terminal:METHOD"):
        open_source("terminal")


def test_an_unknown_source_is_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"no impulse source named 'carrier-pigeon'.*terminal"):
        open_source("carrier-pigeon:note")


def test_a_source_is_found_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    group = registry.ENTRY_POINTS
    target = "ambrosia_edge.transports.terminal:TerminalSource"
    found = [EntryPoint(name="keyboard", value=target, group=group)]
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: found if group == registry.ENTRY_POINTS else []
    )
    source = open_source("keyboard:note")
    assert isinstance(source, TerminalSource) and source.method == "note"


def test_a_source_whose_extra_is_missing_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.REGISTRY, "mqtt", "ambrosia_edge_not_installed.mqtt:MqttSource")
    monkeypatch.setitem(registry.EXTRAS, "mqtt", "mqtt")
    with pytest.raises(ConfigError, match=r"pip install 'ambrosia-edge\[mqtt\]'"):
        open_source("mqtt://localhost/sensors")
