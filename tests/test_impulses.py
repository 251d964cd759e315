"""The four impulse behaviours of paper §4.2, one test each, on asyncio and trio."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from apps.counting import Counter
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge import Immortal, NotAnImpulseError, impulse, rpc
from ambrosia_edge.testing import Cluster

pytestmark = pytest.mark.anyio


class Sensor(Immortal):
    """Turns impulses into replayable calls to the server (and sends impulses itself)."""

    def __init__(self) -> None:
        self.ticks = 0

    @impulse
    def tick(self, n: int) -> None:
        self.ticks += 1
        self.proxy("server").fork.receive(n)

    @rpc
    def plain(self) -> None:
        pass


class World:
    def __init__(self, tg: Any, tmp: Path) -> None:
        ps, pn = free_port(), free_port()
        self.server = Instance(tg, Counter, settings("server", tmp / "server", ps, {"sensor": pn}))
        self.sensor = Instance(tg, Sensor, settings("sensor", tmp / "sensor", pn, {"server": ps}))

    def tick(self, n: int) -> None:
        """An impulse from outside to the sensor, which forwards n as a replayable call."""
        self.sensor.obj.this.fork.tick(n)

    def reading(self, value: float) -> None:
        """An impulse the sensor sends to the server directly."""
        assert self.sensor.runtime is not None
        self.sensor.runtime.executor.proxy("server").fork.reading(value)  # type: ignore[union-attr]


async def test_replayable_calls_run_exactly_once_in_order_around_impulses(tmp_path: Path) -> None:
    """Behaviour 1: non-impulses keep exactly-once order while impulses come and go."""
    async with anyio.create_task_group() as tg:
        world = World(tg, tmp_path)
        await world.server.start()
        await world.sensor.start()
        for n in range(1, 6):
            world.tick(n)
            world.reading(n / 10)
        await eventually(lambda: world.server.obj.received == 5, "5 calls")
        await world.sensor.crash()
        await world.server.crash()
        await world.sensor.start()
        await world.server.start()
        for n in range(6, 9):
            world.tick(n)
        await eventually(lambda: world.server.obj.received == 8, "8 calls")
        server = world.server.obj
        assert (server.received, server.total, server.last, server.out_of_order) == (8, 36, 8, 0)
        assert server.readings == [0.1, 0.2, 0.3, 0.4, 0.5]
        tg.cancel_scope.cancel()


async def test_logged_impulses_run_exactly_once_in_order(tmp_path: Path) -> None:
    """Behaviour 2: once the receiver logged an impulse, crashes neither lose nor repeat it."""
    async with anyio.create_task_group() as tg:
        world = World(tg, tmp_path)
        await world.server.start()
        await world.sensor.start()
        for value in (1.0, 2.0, 3.0):
            world.reading(value)
        await eventually(lambda: world.server.obj.readings == [1.0, 2.0, 3.0], "3 readings")
        await world.server.crash()
        await world.sensor.crash()
        await world.server.start()
        assert world.server.obj.readings == [1.0, 2.0, 3.0]  # rebuilt from the log alone
        await world.sensor.start()
        world.reading(4.0)
        await eventually(lambda: world.server.obj.readings[-1:] == [4.0], "the 4th reading")
        assert world.server.obj.readings == [1.0, 2.0, 3.0, 4.0]
        tg.cancel_scope.cancel()


async def test_impulses_never_logged_are_lost(tmp_path: Path) -> None:
    """Behaviour 3: an impulse whose sender dies before the receiver logs it is gone."""
    async with anyio.create_task_group() as tg:
        world = World(tg, tmp_path)
        await world.sensor.start()  # the server is down: the impulse waits in memory
        world.reading(9.0)
        world.sensor.obj.this.fork.tick(1)  # logged by the sensor itself: replayable output
        await eventually(lambda: world.sensor.obj.ticks == 1, "the sensor to log its tick")
        await world.sensor.crash()
        await world.sensor.start()
        await world.server.start()
        await eventually(lambda: world.server.obj.received == 1, "the replayed call")
        world.reading(10.0)
        await eventually(lambda: world.server.obj.readings == [10.0], "the live reading")
        assert world.server.obj.last == 1
        tg.cancel_scope.cancel()


async def test_unsent_impulses_of_a_recovering_sender_are_lost_even_if_checkpointed(
    tmp_path: Path,
) -> None:
    """Behaviour 4, with the paper's sequence-number trap: after recovery the sender must not
    "eat" replayable messages because the receiver counted impulses it no longer remembers."""
    async with anyio.create_task_group() as tg:
        world = World(tg, tmp_path)
        await world.server.start()
        await world.sensor.start()
        world.tick(1)
        world.tick(2)
        world.reading(0.5)
        await eventually(
            lambda: world.server.obj.received == 2 and world.server.obj.readings, "the first calls"
        )
        await world.server.crash()
        world.reading(1.5)  # unsent: the server is down
        world.tick(3)
        await eventually(lambda: world.sensor.obj.ticks == 3, "the third tick to be logged")
        sensor_runtime = world.sensor.runtime
        assert sensor_runtime is not None
        sensor_runtime.request_checkpoint()  # its send buffer holds reading(1.5) and receive(3)
        await eventually(
            lambda: sensor_runtime.store.list_checkpoints()[-1:] == [2], "the sensor's checkpoint"
        )
        world.reading(2.5)
        await world.sensor.crash()
        await world.sensor.start()
        await world.server.start()
        world.tick(4)
        world.reading(3.5)
        await eventually(
            lambda: world.server.obj.received == 4 and 3.5 in world.server.obj.readings,
            "calls after recovery",
        )
        server = world.server.obj
        assert server.readings == [0.5, 3.5]
        assert (server.received, server.total, server.out_of_order) == (4, 10, 0)
        tg.cancel_scope.cancel()


async def test_non_impulse_from_nondeterministic_code_is_refused(tmp_path: Path) -> None:
    async with anyio.create_task_group() as tg:
        world = World(tg, tmp_path)
        await world.sensor.start()
        with pytest.raises(NotAnImpulseError, match=r"Sensor\.plain is not an @impulse"):
            world.sensor.obj.this.fork.plain()
        with pytest.raises(NotAnImpulseError, match=r"awaited call sensor\.plain\(\) made outside"):
            world.sensor.obj.this.plain()
        tg.cancel_scope.cancel()


HANDLER_RUNNING = threading.Event()
THREAD_DONE = threading.Event()


class Busy(Immortal):
    """A handler that runs while another thread calls into the immortal."""

    def __init__(self) -> None:
        self.ran = 0

    @impulse
    def hold(self) -> None:
        HANDLER_RUNNING.set()
        assert THREAD_DONE.wait(10), "the thread never called"

    @rpc
    def plain(self) -> None:
        self.ran += 1


async def test_a_thread_calling_while_a_handler_runs_is_not_taken_for_the_handler(
    tmp_path: Path,
) -> None:
    """Calls from another thread are refused unless to an @impulse, whatever the immortal is
    doing meanwhile. One made while a handler ran was sent as the handler's own replayable
    call, from the wrong thread, and replay would never have regenerated it."""
    HANDLER_RUNNING.clear()
    THREAD_DONE.clear()
    outcome: list[BaseException | None] = []
    async with Cluster(tmp_path) as cluster:
        obj = (await cluster.start(Busy, "busy")).obj

        def caller() -> None:
            try:
                assert HANDLER_RUNNING.wait(10), "the handler never ran"
                obj.this.fork.plain()
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                THREAD_DONE.set()

        thread = threading.Thread(target=caller)
        thread.start()
        obj.this.fork.hold()
        await anyio.to_thread.run_sync(thread.join, 10)
    assert len(outcome) == 1 and isinstance(outcome[0], NotAnImpulseError), outcome
    assert obj.ran == 0
