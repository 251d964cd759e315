"""Checkpoints are stored beside the log: pages go on into the new chunk while a checkpoint is
written, old chunks go only once it is durable, and the next roll waits for it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest
from support import lone_coordinator

from ambrosia_edge import wire
from ambrosia_edge.testing import eventually

pytestmark = pytest.mark.anyio


class GatedStore:
    """Records what happens, in order; writing a checkpoint waits for the test to let it go."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.chunks = [1]
        self.checkpoints = [1]
        self.gate = threading.Event()

    def append_parts(self, parts: list[bytes]) -> None:
        self.events.append("page")

    def append(self, record: bytes) -> None:
        pass  # a chunk's header

    def start_chunk(self, chunk: int) -> None:
        self.chunks.append(chunk)
        self.events.append(f"chunk {chunk}")

    def write_checkpoint(self, n: int, data: bytes) -> None:
        self.events.append(f"writing checkpoint {n}")
        assert self.gate.wait(30), "the test never let the checkpoint go"
        self.checkpoints.append(n)
        self.events.append(f"checkpoint {n}")

    def list_checkpoints(self) -> list[int]:
        return list(self.checkpoints)

    def list_chunks(self) -> list[int]:
        return list(self.chunks)

    def delete_checkpoint(self, n: int) -> None:
        self.checkpoints.remove(n)

    def delete_chunk(self, chunk: int) -> None:
        self.chunks.remove(chunk)
        self.events.append(f"deleted chunk {chunk}")


def after(events: list[str], event: str) -> Callable[[], bool]:
    return lambda: event in events


async def test_pages_are_logged_while_a_checkpoint_is_written() -> None:
    store = GatedStore()
    coordinator = lone_coordinator(store, keep_checkpoints=1)
    message = wire.frame_message(b"\x01" + bytes(15))
    n = 0

    def arrive() -> None:
        nonlocal n
        n += 1
        coordinator.accept_batch("b", n, 1, 1, message, trusted=True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(coordinator._committer)
        tg.start_soon(coordinator._dispatcher)
        tg.start_soon(coordinator._checkpointer)
        coordinator.request_checkpoint()
        await eventually(after(store.events, "writing checkpoint 2"), "the checkpoint to start")
        for _ in range(3):
            arrive()
            await eventually(lambda: coordinator.durable.get("b") == (n, n), f"page {n}")
        coordinator.request_checkpoint()  # must wait for checkpoint 2
        arrive()
        await eventually(lambda: coordinator.durable.get("b") == (n, n), "a page after it")
        assert store.events == [
            "chunk 2",
            "writing checkpoint 2",
            *["page"] * 4,  # into chunk 2, while checkpoint 2 is being written
        ]
        store.gate.set()
        await eventually(after(store.events, "checkpoint 3"), "the next checkpoint")
        tg.cancel_scope.cancel()
    assert store.events[6:] == [
        "checkpoint 2",
        "deleted chunk 1",  # only once checkpoint 2 is durable
        "chunk 3",
        "writing checkpoint 3",
        "checkpoint 3",
        "deleted chunk 2",
    ]
    assert store.chunks == [3] and store.checkpoints == [3]
