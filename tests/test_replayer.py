"""The replay engine on its own: a checkpoint (or none), then pages up to a chosen one."""

from __future__ import annotations

from pathlib import Path

import pytest
from ambrosia_edge.storage.local import LocalStore

from ambrosia_edge import Immortal, messages, rpc, wire
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.errors import CheckpointError
from ambrosia_edge.page import Entry, Page, chunk_header
from ambrosia_edge.records import RecordType, encode_record
from ambrosia_edge.recovery import Replayer

INC = messages.call("inc", (), {}, impulse=False)
PAGES = 5


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    def inc(self) -> None:
        self.count += 1


def logged(directory: Path) -> LocalStore:
    """A log of PAGES pages from "client" in one chunk: page n holds n calls to ``inc``."""
    store = LocalStore(str(directory))
    store.open()
    store.start_chunk(1)
    store.append(encode_record(chunk_header("counter", 1, 1), RecordType.CHUNK_HEADER))
    total = 0
    for n in range(1, PAGES + 1):
        batch = b"".join(wire.frame_message(INC) for _ in range(n))
        entry = Entry("client", total + 1, total + 1, n, n, batch)
        total += n
        page = Page(n, 1, [entry], {"client": (total, total)})
        store.append(encode_record(page.encode(), RecordType.PAGE))
    store.close()
    return LocalStore(str(directory))


def after(pages: int) -> int:
    return pages * (pages + 1) // 2


def test_replay_up_to_a_page_gives_the_state_after_that_page(tmp_path: Path) -> None:
    replayer = Replayer(Counter, logged(tmp_path), name="counter", read_only=True)
    assert replayer.checkpoint is None and replayer.state["count"] == 0
    assert replayer.run(until_page=2) == 2
    assert replayer.state["count"] == after(2) and replayer.coordinator.next_page == 3
    assert replayer.coordinator.dispatched["client"] == (after(2), after(2))
    page = replayer.step()
    assert page is not None and page.number == 3 and replayer.state["count"] == after(3)
    assert replayer.run() == PAGES - 3
    assert replayer.state["count"] == after(PAGES) and replayer.pages == PAGES
    assert replayer.step() is None and replayer.peek() is None


def test_a_replay_stopped_early_cannot_take_over(tmp_path: Path) -> None:
    replayer = Replayer(Counter, logged(tmp_path), name="counter", read_only=True)
    replayer.run(until_page=1)
    with pytest.raises(RuntimeError, match="before the end of the log"):
        replayer.finish()
    replayer.run()
    epoch = replayer.coordinator.epoch
    replayer.finish()
    assert replayer.coordinator.epoch == epoch + 1


def test_a_checkpoint_that_is_not_there_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="has no checkpoint 3"):
        Replayer(Counter, logged(tmp_path), name="counter", checkpoint=3, read_only=True)


def test_the_coordinator_state_survives_snapshot_and_restore(tmp_path: Path) -> None:
    """What a checkpoint keeps of the coordinator: executed watermarks, output buffers, epoch."""
    replayer = Replayer(Counter, logged(tmp_path), name="counter", read_only=True)
    replayer.run(until_page=3)
    coordinator = replayer.coordinator
    coordinator.send("elsewhere", messages.call("inc", (), {}, impulse=False), impulse=False)
    coordinator.send("elsewhere", messages.call("tick", (), {}, impulse=True), impulse=True)
    state = coordinator.snapshot()
    assert state.next_page == 4 and state.inputs == {"client": (after(3), after(3))}
    assert [len(entries) for _, entries in state.outputs.values()] == [1, 1]  # start, inc
    again = Coordinator("counter", None, None)  # type: ignore[arg-type]
    again.restore(state)
    assert again.snapshot() == state
    assert again.received["client"] == [after(3), after(3)]
    assert again.durable["client"] == again.dispatched["client"] == (after(3), after(3))
