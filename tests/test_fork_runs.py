"""Runs of same-shaped forks, cut out of a batch by position, run exactly as one by one would."""

from __future__ import annotations

import logging
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ambrosia_edge import Immortal, codec, messages, rpc, wire
from ambrosia_edge.executor import Executor
from ambrosia_edge.messages import Kind

LOAD = codec.make_loader(None)
DECODE = codec.make_decoder(None)


def fork(method: str, *args: object) -> bytes:
    return messages.call(method, args, {}, impulse=False)


def framed(messages_: list[bytes]) -> bytes:
    return b"".join(wire.frame_message(m) for m in messages_)


def decoded_one_by_one(batch: bytes, count: int) -> list[Any]:
    out: list[Any] = []
    for head, body in wire.message_parts(batch, count):
        try:
            kind, impulse, fields = messages.decode_parts(head, body, DECODE)
            out.append((kind, impulse, fields))
        except Exception as exc:
            out.append(type(exc))
    return out


def run_messages(batch: bytes, run: messages.ForkRun) -> list[Any]:
    """What the run says its messages are, in the one-by-one path's terms."""
    return [
        (Kind.CALL, False, [run.method, [batch[at : at + run.size]], {}])
        for at in range(run.first, run.first + run.forks * run.stride, run.stride)
    ]


def test_a_run_of_same_sized_forks_is_found_and_ends_where_they_do() -> None:
    samples = [bytes([i]) * 16 for i in range(20)]
    batch = framed([fork("receive", s) for s in samples] + [fork("receive", b"short")])
    run = messages.fork_run(batch, 0, 21, LOAD, least=4)
    assert run is not None
    assert (run.method, run.size, run.forks) == ("receive", 16, 20)
    assert run_messages(batch, run) == decoded_one_by_one(batch, 21)[:20]


@pytest.mark.parametrize(
    "what, odd",
    [
        ("an impulse", messages.call("receive", (b"x" * 16,), {}, impulse=True)),
        ("a text argument", fork("receive", "x" * 16)),
        ("two arguments", fork("receive", b"x" * 16, 1)),
        ("keyword arguments", messages.call("receive", (b"x" * 16,), {"k": 1}, impulse=False)),
        ("a request", messages.request(1, "receive", (b"x" * 16,), {})),
        # 16 bytes with a one-byte length where none is needed: decodes fine, not shortest
        (
            "a longer encoding",
            bytes([Kind.CALL]) + b"\x83\x67receive\x81\x58\x10" + b"x" * 16 + b"\xa0",
        ),
    ],
)
def test_what_does_not_start_a_run(what: str, odd: bytes) -> None:
    batch = framed([odd] * 8)
    assert messages.fork_run(batch, 0, 8, LOAD, least=4) is None, what


def test_a_run_shorter_than_asked_for_is_not_one() -> None:
    batch = framed([fork("receive", b"a" * 8)] * 3 + [fork("receive", b"b" * 9)] * 5)
    assert messages.fork_run(batch, 0, 8, LOAD, least=4) is None
    run = messages.fork_run(batch, 0, 8, LOAD, least=3)
    assert run is not None and run.forks == 3


def test_a_run_stops_at_the_count_even_with_bytes_after() -> None:
    batch = framed([fork("receive", b"a" * 8)] * 10)
    run = messages.fork_run(batch, 0, 6, LOAD, least=4)
    assert run is not None and run.forks == 6


@given(
    st.lists(st.binary(min_size=4, max_size=4), min_size=8, max_size=24),
    st.data(),
)
def test_whatever_byte_is_changed_a_run_agrees_with_one_by_one(
    samples: list[bytes], data: st.DataObject
) -> None:
    # hostile batches: one byte anywhere (lengths, heads, method name, the map) changed
    batch = bytearray(framed([fork("receive", s) for s in samples]))
    where = data.draw(st.integers(0, len(batch) - 1))
    batch[where] = data.draw(st.integers(0, 255))
    hostile = bytes(batch)
    run = messages.fork_run(hostile, 0, len(samples), LOAD, least=2)
    if run is None:
        return
    try:
        expected = decoded_one_by_one(hostile, len(samples))
    except wire.ProtocolError:
        # the changed byte broke the framing itself; the run must still be whole messages
        expected = decoded_one_by_one(hostile[: run.forks * run.stride], run.forks)
    assert run_messages(hostile, run) == expected[: run.forks]


class Recorder(Immortal):
    def __init__(self) -> None:
        self.seen: list[object] = []

    @rpc
    def receive(self, data: bytes) -> None:
        if data == b"boom":
            raise ValueError("boom")
        self.seen.append(data)

    @rpc
    def other(self, data: object) -> None:
        self.seen.append(("other", data))

    @rpc
    async def slow(self, data: bytes) -> None:
        self.seen.append(("slow", data))


class Outbox:
    def send(self, destination: str, message: bytes, *, impulse: bool) -> None:
        raise AssertionError("forks send nothing back")

    def send_thunk_to_self(self, thunk: object) -> None:
        raise AssertionError("not used here")


MESSAGES = st.one_of(
    st.binary(min_size=3, max_size=3).map(lambda b: fork("receive", b)),
    st.just(fork("receive", b"boom")),
    st.binary(min_size=3, max_size=3).map(lambda b: fork("slow", b)),
    st.integers(0, 3).map(lambda n: fork("other", n)),
    st.just(fork("missing", b"abc")),
)


# no deadline: each example logs up to a few hundred tracebacks of failing forks, which on a
# busy machine takes longer than hypothesis's default 200 ms now and then
@settings(deadline=None)
@given(st.lists(st.tuples(MESSAGES, st.integers(1, 40)), min_size=1, max_size=6))
def test_a_batch_runs_as_it_would_one_message_at_a_time(
    pieces: list[tuple[bytes, int]],
) -> None:
    # runs of repeated messages (receive, slow) long enough to be cut out, mixed with others
    listed = [message for message, times in pieces for _ in range(times)]
    batch = framed(listed)
    by_batch, by_one = Executor("r", Recorder(), Outbox()), Executor("r", Recorder(), Outbox())
    by_batch.dispatch_batch("peer", batch, len(listed))
    by_one.dispatch_all("peer", wire.message_parts(batch, len(listed)))
    assert by_batch.obj.seen == by_one.obj.seen  # type: ignore[attr-defined]
    assert len(by_one.obj.seen) == sum(  # type: ignore[attr-defined]
        times for message, times in pieces if b"boom" not in message and b"missing" not in message
    )


def test_a_handler_that_raises_in_a_run_does_not_stop_it(caplog: pytest.LogCaptureFixture) -> None:
    ex = Executor("r", Recorder(), Outbox())
    ex.replaying = False
    samples = [b"boom" if i == 5 else b"%04d" % i for i in range(40)]
    batch = framed([fork("receive", s) for s in samples])
    assert messages.fork_run(batch, 0, 40, LOAD, least=16) is not None
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        ex.dispatch_batch("peer", batch, 40)
    assert ex.obj.seen == [s for s in samples if s != b"boom"]  # type: ignore[attr-defined]
    assert caplog.text.count("Recorder.receive raised ValueError: boom") == 1


def test_names_a_batch_brings_in_are_not_kept() -> None:
    # a peer (or a log) may name any number of methods; none may stay in memory because of it
    batches = [
        framed([bytes([Kind.CALL]) + cbor2.dumps([f"made_up_{i}", [b"x" * 8], {}])] * 20)
        for i in range(50)
    ]
    before = dict(messages._CALL_HEADS)
    for batch in batches:
        assert messages.fork_run(batch, 0, 20, LOAD, least=4) is not None
    assert before == messages._CALL_HEADS
