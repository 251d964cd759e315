"""A Hypothesis state machine over the sequence-number protocol of paper §3.3 and §4.2.

A sender's output buffer (the real ``Output``) and a receiver's input side (the real
``Coordinator.accept_batch`` and page sealing) exchange batches while either side crashes at
any step, links drop, and acknowledgements arrive late. Whatever happens, the receiver's log
must hold every replayable message exactly once and in order, and impulses at most once, in
order, never reordered against replayable messages.
"""

from __future__ import annotations

from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ambrosia_edge import wire
from ambrosia_edge.coordinator import Coordinator
from ambrosia_edge.outputs import Output


def receiver(durable: dict[str, tuple[int, int]]) -> Coordinator:
    coordinator = Coordinator("r", None, None)  # type: ignore[arg-type]
    for source, mark in durable.items():
        coordinator.received[source] = list(mark)
        coordinator.durable[source] = mark
    return coordinator


class Protocol(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.out = Output("r")
        self.generated: list[bytes] = []  # replayable messages, in generation order
        self.impulses: list[bytes] = []
        self.order: list[bytes] = []  # everything the sender produced, in order
        self.log: list[bytes] = []  # the receiver's durable log
        self.r = receiver({})
        self.connected = False
        self.counter = 0

    def _message(self, impulse: bool) -> bytes:
        self.counter += 1
        return bytes([0x81 if impulse else 0x01]) + self.counter.to_bytes(4, "big")

    @rule()
    def send_replayable(self) -> None:
        message = self._message(False)
        self.out.append(message, impulse=False)
        self.generated.append(message)
        self.order.append(message)

    @rule()
    def send_impulse(self) -> None:
        message = self._message(True)
        self.out.append(message, impulse=True)
        self.impulses.append(message)
        self.order.append(message)

    @rule()
    def connect(self) -> None:
        """A handshake: the receiver reports its durable watermark (it waits for it)."""
        self.r.durable.update({"s": tuple(self.r.received.get("s", [0, 0]))})  # type: ignore[dict-item]
        self._flush()
        total, replayable = self.r.durable.get("s", (0, 0))
        if self.out.rebase_pending:
            self.out.rebase(total, replayable)
        else:
            self.out.resume(total)
        self.connected = True

    @precondition(lambda self: self.connected)
    @rule(limit=st.integers(1, 64))
    def transmit(self, limit: int) -> None:
        first, replayable, batch = self.out.unsent(limit)
        if batch:
            payload = b"".join(batch)
            self.r.accept_batch("s", first, len(batch), replayable, payload)

    def _flush(self) -> None:
        page = self.r._seal()
        for entry in page.entries:
            self.log.extend(wire.split_messages(entry.batch, entry.count))
        self.r.durable.update(page.inputs)

    @rule()
    def flush(self) -> None:
        self._flush()

    @precondition(lambda self: self.connected)
    @rule()
    def acknowledge(self) -> None:
        total, _ = self.r.durable.get("s", (0, 0))
        self.out.trim(total)

    @rule()
    def drop_link(self) -> None:
        self.connected = False

    @rule()
    def crash_receiver(self) -> None:
        self.r = receiver(dict(self.r.durable))  # the unsealed page is lost
        self.connected = False

    @rule(lag=st.integers(0, 20))
    def crash_sender(self, lag: int) -> None:
        """Recovery regenerates every replayable message (replay) and none of the impulses,
        and drops what the logged trim watermarks cover: they lag behind the receiver's log
        by any amount."""
        out = Output("r")
        for message in self.generated:
            out.append(message, impulse=False)
        durable_replayable = self.r.durable.get("s", (0, 0))[1]
        out.trim_replayable(max(0, durable_replayable - lag))
        self.out = out
        self.connected = False

    @invariant()
    def log_is_faithful(self) -> None:
        replayable = [m for m in self.log if not m[0] & 0x80]
        assert replayable == self.generated[: len(replayable)]
        impulses = [m for m in self.log if m[0] & 0x80]
        assert len(set(impulses)) == len(impulses)
        assert [m for m in self.impulses if m in set(impulses)] == impulses
        positions = [self.order.index(m) for m in self.log]
        assert positions == sorted(positions)

    def teardown(self) -> None:
        # heal: connect, deliver everything, flush; every replayable message must be there
        self.connect()
        while True:
            first, replayable, batch = self.out.unsent(1 << 20)
            if not batch:
                break
            self.r.accept_batch("s", first, len(batch), replayable, b"".join(batch))
        self._flush()
        self.log_is_faithful()
        assert [m for m in self.log if not m[0] & 0x80] == self.generated


TestProtocol = Protocol.TestCase
TestProtocol.settings = hsettings(max_examples=300, stateful_step_count=60, deadline=None)
