"""``async def`` handlers that never suspend run on the executor's quick path (stepped in place,
with no context made for them); they must behave exactly as plain handlers and as handlers
that do suspend: the same effects in the same order, the same replies, the same messages out.
Each batch goes through each way the executor dispatches a batch: a run of same-shaped forks
cut out by position, plain forks decoded together, and messages one by one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ambrosia_edge import Immortal, messages, rpc, wire
from ambrosia_edge.executor import Executor
from ambrosia_edge.messages import Kind


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    def send(self, destination: str, message: bytes, *, impulse: bool) -> None:
        self.sent.append((destination, message, impulse))

    def send_thunk_to_self(self, thunk: object) -> None:
        raise AssertionError("not used here")


class Handlers(Immortal):
    def __init__(self) -> None:
        self.seen: list[object] = []
        self.total = 0

    @rpc
    def plain(self, value: Any) -> Any:
        self.seen.append(value)
        self.total += 1
        self.proxy("other").fork.note(value)
        return value

    @rpc
    async def quick(self, value: Any) -> Any:
        self.seen.append(value)
        self.total += 1
        self.proxy("other").fork.note(value)
        return value

    @rpc
    async def slow(self, value: Any) -> Any:
        echoed = await self.proxy("other").echo(value)
        self.seen.append(echoed)
        self.total += 1
        self.proxy("other").fork.note(echoed)
        return echoed

    @rpc
    async def fails(self, value: Any) -> None:
        raise ValueError(f"no {value}")

    @rpc
    async def sleeps(self) -> None:
        await _Foreign()


class _Foreign:
    def __await__(self) -> Any:
        yield "a future the runtime does not log"


def executor() -> tuple[Executor, Outbox, Handlers]:
    outbox = Outbox()
    obj = Handlers()
    ex = Executor("me", obj, outbox)
    ex.replaying = False
    return ex, outbox, obj


def batch_of(items: list[bytes]) -> bytes:
    return b"".join(wire.frame_message(m) for m in items)


def fork(method: str, *args: object) -> bytes:
    return messages.call(method, args, {}, impulse=False)


def answer_every_request(ex: Executor, outbox: Outbox) -> None:
    """Reply to each awaited call in the order it was made, as the log would bring them."""
    answered = 0
    while True:
        requests = [m for _, m, _ in outbox.sent if messages.decode(m)[0] is Kind.REQUEST][
            answered:
        ]
        if not requests:
            return
        for message in requests:
            _, _, (call_id, _, args, _) = messages.decode(message)
            ex.dispatch("other", messages.reply(call_id, args[0], where="test"))
            answered += 1


#: a run of same-shaped forks (cut out by position), plain forks of mixed arguments (decoded
#: together), and a batch too short for either (one by one)
BATCHES = {
    "run": [(b"%04d" % i,) for i in range(40)],
    "window": [(i,) if i % 2 else (f"text {i}",) for i in range(20)],
    "one by one": [(1,), (b"two",)],
}


@pytest.mark.parametrize("shape", list(BATCHES))
def test_an_async_handler_that_never_suspends_is_a_plain_one(shape: str) -> None:
    results = {}
    for method in ("plain", "quick"):
        ex, outbox, obj = executor()
        items = [fork(method, *args) for args in BATCHES[shape]]
        ex.dispatch_batch("peer", batch_of(items), len(items))
        assert ex.quiescent
        results[method] = (obj.seen, obj.total, outbox.sent)
    assert results["plain"] == results["quick"]
    assert results["quick"][0] == [args[0] for args in BATCHES[shape]]


@pytest.mark.parametrize("shape", list(BATCHES))
def test_suspending_or_not_the_effects_and_messages_are_the_same(shape: str) -> None:
    """A handler that awaits a reply runs later (when the reply is dispatched), but once every
    reply is in, state and the forks it made match the handler that never suspended."""
    ex, outbox, obj = executor()
    items = [fork("slow", *args) for args in BATCHES[shape]]
    ex.dispatch_batch("peer", batch_of(items), len(items))
    assert obj.seen == [] and not ex.quiescent
    answer_every_request(ex, outbox)
    assert ex.quiescent
    quick, quick_out, quick_obj = executor()
    items = [fork("quick", *args) for args in BATCHES[shape]]
    quick.dispatch_batch("peer", batch_of(items), len(items))
    assert (obj.seen, obj.total) == (quick_obj.seen, quick_obj.total)
    notes = [m for _, m, _ in outbox.sent if messages.decode(m)[0] is Kind.CALL]
    assert notes == [m for _, m, _ in quick_out.sent]


def test_a_mixed_batch_keeps_log_order() -> None:
    """Quick handlers run as they come; a suspended one resumes when its reply comes, and its
    effects land there, after everything dispatched before the reply."""
    ex, outbox, obj = executor()
    items = [fork("quick", 1), fork("slow", 2), fork("plain", 3), fork("quick", 4)]
    ex.dispatch_batch("peer", batch_of(items), len(items))
    assert obj.seen == [1, 3, 4]
    ex.dispatch_batch("peer", batch_of([fork("quick", 5)]), 1)
    answer_every_request(ex, outbox)
    assert obj.seen == [1, 3, 4, 5, 2]


@pytest.mark.parametrize("method", ["plain", "quick", "slow"])
def test_an_awaited_call_gets_the_same_reply(method: str) -> None:
    ex, outbox, _ = executor()
    ex.dispatch("caller", messages.request(7, method, ({"k": [1, 2]},), {}))
    answer_every_request(ex, outbox)
    replies = [(d, m) for d, m, _ in outbox.sent if d == "caller"]
    assert replies == [("caller", messages.reply(7, {"k": [1, 2]}, where="test"))]


@pytest.mark.parametrize("shape", ["run", "one by one"])
def test_a_failing_async_handler_is_logged_with_its_name(
    shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    ex, outbox, _ = executor()
    items = [fork("fails", *args) for args in BATCHES[shape]]
    with caplog.at_level(logging.ERROR, logger="ambrosia_edge"):
        ex.dispatch_batch("peer", batch_of(items), len(items))
    assert caplog.text.count("Handlers.fails raised ValueError") == len(items)
    assert outbox.sent == [] and ex.quiescent
    ex.dispatch("caller", messages.request(3, "fails", (1,), {}))
    [(_, message, _)] = outbox.sent
    kind, _, fields = messages.decode(message)
    assert (kind, fields[0], fields[1], fields[2]) == (Kind.FAILURE, 3, "ValueError", "no 1")


def test_awaiting_what_is_not_logged_is_refused_on_the_quick_path_too() -> None:
    ex, outbox, _ = executor()
    ex.dispatch("caller", messages.request(9, "sleeps", (), {}))
    [(_, message, _)] = outbox.sent
    kind, _, fields = messages.decode(message)
    assert (kind, fields[0], fields[1]) == (Kind.FAILURE, 9, "NondeterminismError")
    assert "Handlers.sleeps awaited" in fields[2]
    assert ex.quiescent
