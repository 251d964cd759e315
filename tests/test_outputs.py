"""Output buffers keep each message's numbers by position: what is sent, trimmed, rebased and
checkpointed matches the numbering of paper §4.2, and a capture's function runs once, when its
message is first sent, or never if the receiver already holds its result."""

from __future__ import annotations

import pytest

from ambrosia_edge import wire
from ambrosia_edge.outputs import Output


def numbered() -> Output:
    out = Output("r")
    out.rebase(0, 0)  # a first start: nothing held by the receiver
    return out


def test_numbers_follow_from_positions_across_trims_and_compaction() -> None:
    out = numbered()
    for i in range(3000):
        out.append(i.to_bytes(2, "big"), impulse=i % 3 == 0)
    first, replayable, batch = out.unsent(100 * 6)
    assert (first, replayable, len(batch)) == (1, 66, 100)
    assert out.trim(2000) == 2000  # past what was sent: trims what the receiver says it holds
    assert len(out) == 1000 and out.bytes == 1000 * 6
    assert [t for t, _, _ in out.peek()][:2] == [2001, 2002]
    out.resume(2500)
    first, _, batch = out.unsent(1 << 20)
    assert first == 2501 and batch[0] == wire.frame_message((2500).to_bytes(2, "big"))
    assert not out.has_unsent()


def test_a_capture_runs_when_first_sent_and_only_once() -> None:
    out = numbered()
    runs: list[int] = []
    out.append(b"a", impulse=False)
    out.append_thunk(lambda: runs.append(1) or b"clock")
    assert runs == []
    _, _, batch = out.unsent(1 << 20)
    assert batch == [wire.frame_message(b"a"), wire.frame_message(b"clock")] and runs == [1]
    out.resume(1)  # a reconnection: the capture's message is resent, not run again
    assert out.unsent(1 << 20)[2] == [wire.frame_message(b"clock")] and runs == [1]


def test_a_capture_that_raises_can_be_sent_again() -> None:
    out = numbered()
    calls: list[int] = []

    def flaky() -> bytes:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("not yet")
        return b"ok"

    out.append_thunk(flaky)
    with pytest.raises(OSError):
        out.unsent(1 << 20)
    assert out.unsent(1 << 20) == (1, 1, [wire.frame_message(b"ok")])


def test_captures_the_receiver_holds_never_run_after_a_rebase() -> None:
    out = Output("r")  # recovering: regenerated output, numbers not known yet
    runs: list[str] = []
    out.append(b"m1", impulse=False)
    out.append_thunk(lambda: runs.append("c2") or b"c2")
    out.append_thunk(lambda: runs.append("c3") or b"c3")
    out.append(b"i", impulse=True)
    assert [(t, r) for t, r, _ in out.peek()] == [(0, 1), (0, 2), (0, 3), (0, 0)]
    out.rebase(10, 2)  # the receiver holds replayable 1 and 2 (and 10 messages in all)
    assert [(t, r) for t, r, _ in out.peek()] == [(11, 3), (12, 0)]
    assert out.unsent(1 << 20) == (11, 1, [wire.frame_message(b"c3"), wire.frame_message(b"i")])
    assert runs == ["c3"]


def test_replay_trims_by_replayable_number_without_running_captures() -> None:
    out = Output("r")
    out.append_thunk(lambda: pytest.fail("a capture the receiver logged ran during replay"))
    out.append(b"m2", impulse=False)
    out.append(b"m3", impulse=False)
    out.trim_replayable(2)
    assert [(r, m) for _, r, m in out.peek()] == [(3, wire.frame_message(b"m3"))]
    assert list(out.replayable_entries()) == [(3, b"m3")]


def test_restore_then_drop_impulses_keeps_the_checkpointed_messages() -> None:
    out = Output("r")
    out.restore(8, [(5, b"m5"), (7, b"m7")])
    out.append(b"i", impulse=True)
    out.drop_impulses()
    assert list(out.replayable_entries()) == [(5, b"m5"), (7, b"m7")]
    assert out.bytes == 2 * 6 and out.next_replayable == 8


def test_the_bytes_held_count_captures_once_they_have_run() -> None:
    out = numbered()
    for _ in range(3):
        out.append_thunk(lambda: bytes(100))
    assert out.bytes == 0  # not run yet: their size is not known
    out.unsent(1 << 20)
    assert out.bytes == 3 * 104
    out.trim(3)
    assert out.bytes == 0 and len(out) == 0


def test_unsent_takes_at_most_a_count_of_messages() -> None:
    """What the MQTT publisher relies on to stay inside its window (transports/mqtt_out.py)."""
    out = numbered()
    for i in range(10):
        out.append(bytes([i]), impulse=False)
    assert out.unsent(1 << 20, 3) == (1, 3, [wire.frame_message(bytes([i])) for i in range(3)])
    assert out.unsent(1 << 20, 0) == (0, 0, [])
    first, _, batch = out.unsent(1 << 20)
    assert (first, len(batch)) == (4, 7)
