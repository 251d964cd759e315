"""Recovery from a checkpoint plus the log tail equals recovery from the whole log."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from instances import Instance, eventually, settings
from support import free_port

from ambrosia_edge import (
    Immortal,
    RemoteError,
    StateEncodingError,
    UnknownMethodError,
    impulse,
    rpc,
)
from ambrosia_edge.config import Settings
from ambrosia_edge.immortal import state_of
from ambrosia_edge.recovery import _set_attributes
from ambrosia_edge.runtime import Runtime

pytestmark = pytest.mark.anyio

FORKS = 6000


class Producer(Immortal):
    """The continuation pattern: 250 forks per step, then a self-fork for the next step."""

    def __init__(self) -> None:
        self.sent = 0
        self.acked = 0
        self.stamps: list[float] = []

    async def on_first_start(self) -> None:
        self.this.fork.step()

    @rpc
    async def step(self) -> None:
        sink = self.proxy("sink")
        for _ in range(min(250, FORKS - self.sent)):
            self.sent += 1
            sink.fork.put(self.sent)
        self.stamps.append(await self.capture(time.time))
        if self.sent < FORKS:
            self.this.fork.step()

    @rpc
    def ack(self, n: int) -> None:
        self.acked = n


class Sink(Immortal):
    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.echoed = 0

    @rpc
    def put(self, n: int) -> None:
        self.count += 1
        self.total += n
        if n % 500 == 0:
            self.proxy("producer").fork.ack(n)  # output worth comparing across recoveries


def _replay(cls: type, name: str, log: Path, from_checkpoint: int | None) -> Runtime:
    runtime = Runtime(cls, Settings(target="tests:recovery", name=name, log=str(log)))
    runtime.recover(read_only=True, from_checkpoint=from_checkpoint)
    return runtime


def _outputs(runtime: Runtime) -> dict[str, tuple[int, list[tuple[int, int, bytes | None]]]]:
    """Regenerated output; peeking keeps a pending capture's function from running here."""
    return {
        dest: (out.next_replayable, list(out.peek()))
        for dest, out in runtime.coordinator.outputs.items()
    }


def _assert_same_outputs(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Same numbering and the same messages; one side may still hold a few messages the
    receiver had already acknowledged (live acks trim sooner than logged trims replay)."""
    assert a.keys() == b.keys()
    for dest in a:
        (next_a, entries_a), (next_b, entries_b) = a[dest], b[dest]
        assert next_a == next_b, dest
        short, long = sorted((entries_a, entries_b), key=len)
        assert long[len(long) - len(short) :] == short, dest
        assert all(
            r < (short[0][1] if short else next_a) for _, r, _ in long[: len(long) - len(short)]
        )


async def test_checkpoint_plus_tail_equals_the_full_log(tmp_path: Path) -> None:
    pp, ps = free_port(), free_port()
    extra = {"checkpoint_bytes": 2048, "keep_checkpoints": 1000}
    async with anyio.create_task_group() as tg:
        producer = Instance(
            tg, Producer, settings("producer", tmp_path / "p", pp, {"sink": ps}, **extra)
        )
        sink = Instance(tg, Sink, settings("sink", tmp_path / "s", ps, {"producer": pp}, **extra))
        await sink.start()
        await producer.start()
        # and the producer's last step resumed with its captured time: stopped before that, its
        # log may hold the capture's result while the live object has not taken it yet
        await eventually(
            lambda: sink.obj.count == FORKS and len(producer.obj.stamps) == FORKS // 250,
            "every fork to arrive and every step to end",
        )
        tg.cancel_scope.cancel()
    assert sink.obj.total == FORKS * (FORKS + 1) // 2
    for cls, name, log in ((Producer, "producer", tmp_path / "p"), (Sink, "sink", tmp_path / "s")):
        from_checkpoint = _replay(cls, name, log, -1)
        whole = _replay(cls, name, log, None)
        assert (from_checkpoint.recovery["checkpoint"] or 0) > 1, "no checkpoint was taken"
        assert from_checkpoint.recovery["pages"] < whole.recovery["pages"]
        assert state_of(from_checkpoint.immortal) == state_of(whole.immortal)
        _assert_same_outputs(_outputs(from_checkpoint), _outputs(whole))
        assert from_checkpoint.executor is not None and whole.executor is not None
        assert from_checkpoint.executor.next_call_id == whole.executor.next_call_id
    # capture: replay returns the logged clock values, it does not read the clock again
    assert state_of(_replay(Producer, "producer", tmp_path / "p", None).immortal)["stamps"] == (
        producer.obj.stamps
    )


class Holder(Immortal):
    def __init__(self) -> None:
        self.items: list[Any] = []


class Asker(Immortal):
    def __init__(self) -> None:
        self.results: list[str] = []

    @impulse
    async def go(self) -> None:
        try:
            await self.this.no_such_method()
        except UnknownMethodError as exc:
            self.results.append(f"local: {exc}")
        try:
            await self.proxy("holder").missing(1)
        except RemoteError as exc:
            self.results.append(f"remote: {exc.type_name}: {exc.message}")


async def test_unencodable_state_is_a_clear_error_naming_the_attribute(tmp_path: Path) -> None:
    runtime = Runtime(Holder, settings("holder", tmp_path / "h", free_port(), {}))
    runtime.recover()
    try:
        runtime.immortal.items.append(socket.socket())  # type: ignore[attr-defined]
        with pytest.raises(StateEncodingError, match=r"Holder\.items\[0\]: cannot encode a socket"):
            runtime._checkpoint(2, 1)
    finally:
        for item in runtime.immortal.items:  # type: ignore[attr-defined]
            item.close()
        runtime.store.close()


async def test_unknown_methods_are_clear_errors(tmp_path: Path) -> None:
    ph, pa = free_port(), free_port()
    async with anyio.create_task_group() as tg:
        holder = Instance(tg, Holder, settings("holder", tmp_path / "h", ph, {"asker": pa}))
        asker = Instance(tg, Asker, settings("asker", tmp_path / "a", pa, {"holder": ph}))
        await holder.start()
        await asker.start()
        asker.obj.this.fork.go()
        await eventually(lambda: len(asker.obj.results) == 2, "both answers")
        tg.cancel_scope.cancel()
    assert asker.obj.results == [
        "local: Asker (immortal 'asker') has no method 'no_such_method'",
        "remote: UnknownMethodError: holder (Holder) has no @rpc or @impulse method 'missing'",
    ]


class WithProperty:
    def __init__(self) -> None:
        self.setter_calls = 0

    @property
    def level(self) -> int:
        return 0

    @level.setter
    def level(self, value: int) -> None:
        self.setter_calls += 1


def test_restored_attributes_are_the_checkpointed_ones_and_skip_descriptors() -> None:
    obj = WithProperty.__new__(WithProperty)
    state = {"setter_calls": 0, "items": [1, 2], "level": 7}
    _set_attributes(obj, state)
    assert vars(obj) == state  # in the checkpoint's order, the property's setter not called
    assert list(vars(obj)) == list(state)
