"""The executor on its own, with a recording outbox (a unit test of one layer)."""

from __future__ import annotations

import logging

import pytest

from ambrosia_edge import Immortal, codec, messages, rpc
from ambrosia_edge.errors import CodecError
from ambrosia_edge.executor import Executor
from ambrosia_edge.messages import Kind


class Outbox:
    def __init__(self, limit: int = 1 << 20) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []
        self.limit = limit

    def send(self, destination: str, message: bytes, *, impulse: bool) -> None:
        if len(message) > self.limit:
            raise CodecError(f"a message of {len(message)} bytes is over the limit")
        self.sent.append((destination, message, impulse))

    def send_thunk_to_self(self, thunk: object) -> None:
        raise AssertionError("not used here")


class Echo(Immortal):
    def __init__(self) -> None:
        self.calls = 0
        self.seen: list[object] = []

    @rpc
    def big(self, n: int) -> bytes:
        self.calls += 1
        return b"x" * n

    @rpc
    def note(self, value: object, *, tag: str = "") -> None:
        self.seen.append((value, tag) if tag else value)

    @rpc
    def fail(self) -> None:
        raise ValueError("no")

    @rpc
    async def later(self, value: object) -> None:
        self.seen.append(("async", value))


def executor(limit: int = 1 << 20) -> tuple[Executor, Outbox]:
    outbox = Outbox(limit)
    return Executor("echo", Echo(), outbox), outbox


def test_a_reply_too_large_to_send_becomes_a_failure_for_the_caller() -> None:
    ex, outbox = executor(limit=1000)
    ex.dispatch("caller", messages.request(7, "big", (5000,), {}))
    [(destination, message, impulse)] = outbox.sent
    kind, _, fields = messages.decode(message)
    assert (destination, impulse, kind) == ("caller", False, Kind.FAILURE)
    assert fields[0] == 7 and fields[1] == "CodecError" and "over the limit" in fields[2]


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],  # CALL with too few fields
        [["not", "a", "name"], [], {}],  # method is not a string
        ["big", "not a list", {}],
        "not even a list",
    ],
)
def test_a_malformed_logged_call_is_dropped_not_fatal(
    body: object, caplog: pytest.LogCaptureFixture
) -> None:
    ex, outbox = executor()
    ex.replaying = False
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        ex.dispatch("peer", bytes([Kind.CALL]) + codec.encode(body))
    assert outbox.sent == [] and ex.obj.calls == 0  # type: ignore[attr-defined]
    assert "cannot be decoded or is malformed" in caplog.text
    ex.dispatch("peer", messages.request(1, "big", (3,), {}))  # and it still works
    assert ex.obj.calls == 1  # type: ignore[attr-defined]


def test_an_unknown_message_kind_is_dropped() -> None:
    ex, outbox = executor()
    ex.dispatch("peer", bytes([0x7F]) + codec.encode([]))
    assert outbox.sent == []


def fork(method: str, *args: object, **kwargs: object) -> bytes:
    return messages.call(method, args, kwargs, impulse=False)


def test_forks_run_in_order_with_their_arguments() -> None:
    ex, outbox = executor()
    batch = [
        fork("note", 1),
        fork("note", b"two"),
        fork("note", [3, {"x": 3.5}]),
        fork("note", "four", tag="t"),
        fork("later", 5),
    ]
    ex.dispatch_all("peer", ((m[0], m[1:]) for m in batch))
    assert ex.obj.seen == [1, b"two", [3, {"x": 3.5}], ("four", "t"), ("async", 5)]  # type: ignore[attr-defined]
    assert outbox.sent == []


def test_a_fork_with_trailing_bytes_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    ex, _ = executor()
    ex.replaying = False
    message = fork("note", 1) + b"\x01"
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        ex.dispatch_all("peer", [(message[0], message[1:])])
    assert ex.obj.seen == []  # type: ignore[attr-defined]
    assert "not exactly one CBOR data item" in caplog.text


def test_forks_to_unknown_or_failing_methods_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    ex, outbox = executor()
    ex.replaying = False
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        ex.dispatch_all("peer", [(m[0], m[1:]) for m in (fork("nope"), fork("fail"))])
    assert "has no @rpc or @impulse method 'nope'" in caplog.text
    assert "Echo.fail raised ValueError: no" in caplog.text
    assert outbox.sent == []
