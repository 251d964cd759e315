"""The immortals the benchmarks run, and the read-only observers that time them.

Both immortals run in their own process (``python -m benchmarks.host``). The harness talks to
them through files in the directory named by ``$BENCH_STATUS``:

* each immortal's observer writes ``NAME.json`` once it is live (with its pid), and again when
  its part of the workload is over;
* the harness starts a workload by writing ``go.json``; the client's observer turns it into one
  ``go`` impulse, which is logged like any input, so the handlers stay deterministic.

Timing never goes through the log: observers are tasks spawned in ``becoming_primary`` that
only *read* state, and the ping handler writes its round-trip times to a module-level list that
is not part of the immortal's state (a probe: it changes neither state nor outputs).
"""

from __future__ import annotations

import json
import os
import time

import anyio

from ambrosia_edge import Immortal, impulse, rpc

from .status import publish, status_dir

#: Round-trip times of the ping workload in ns, filled by ``BenchClient.pings`` (not state).
PROBE: list[int] = []

#: When the typical server executed its first message (``time.time()``; a probe, not state).
FIRST_EXECUTED: list[float] = []

#: How often the server's observer looks at its progress counter, in seconds.
SERVER_POLL = 0.001
CLIENT_POLL = 0.002


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


class BenchServer(Immortal):
    """Counts what it receives: payload messages and bytes, increments, pings."""

    def __init__(self) -> None:
        self.received = 0
        self.bytes = 0
        self.count = 0
        self.pings = 0

    @rpc
    def receive(self, payload: bytes) -> None:
        self.received += 1
        self.bytes += len(payload)

    @rpc
    def inc(self) -> None:
        self.count += 1

    @rpc
    def ping(self, payload: bytes) -> bytes:
        self.pings += 1
        return payload

    def progress(self) -> int:
        return self.received + self.count + self.pings

    async def becoming_primary(self) -> None:
        self.spawn(observe_server, self)


async def observe_server(server: BenchServer) -> None:
    """Record when the first dispatched page shows up and when the expected total is reached.

    The counters move a whole page at a time, so the rate is taken over the messages after the
    first page seen: (last_n - first_n) / (last_t - first_t).
    """
    expect = int(os.environ.get("BENCH_EXPECT", "0"))
    # every status says how far recovery brought the counters: the first one a harness sees
    # may already be the final one
    base = {"pid": os.getpid(), "ready": True, "recovered": server.progress()}
    publish(server.name, base)
    first: tuple[float, int, float] | None = None
    while True:
        n = server.progress()
        if first is None and n > 0:
            first = (time.time(), n, _cpu())
        if expect and n >= expect:
            now = time.time()
            assert first is not None
            publish(
                server.name,
                {
                    **base,
                    "done": True,
                    "first_t": first[0],
                    "first_n": first[1],
                    "last_t": now,
                    "last_n": n,
                    "received": server.received,
                    "bytes": server.bytes,
                    "count": server.count,
                    "pings": server.pings,
                    **({"first_executed_t": FIRST_EXECUTED[0]} if FIRST_EXECUTED else {}),
                },
            )
            return
        await anyio.sleep(SERVER_POLL)


class BenchClient(Immortal):
    """Drives one workload against the immortal ``server``, in continuation steps.

    ``go`` (an impulse) sets the workload; each step forks or awaits up to ``batch`` calls and
    then forks itself again, so checkpoints can happen between steps and no handler runs long.
    """

    def __init__(self) -> None:
        self.workload = ""
        self.size = 0
        self.total = 0
        self.batch = 0
        self.sent = 0
        self.done = False

    @impulse
    def go(self, workload: str, size: int, total: int, batch: int) -> None:
        if self.workload:
            return  # one workload per life
        self.workload, self.size, self.total, self.batch = workload, size, total, batch
        if workload == "throughput":
            self.this.fork.produce()
        elif workload == "ping":
            self.this.fork.pings()
        elif workload == "counter":
            self.this.fork.increments()
        else:
            raise ValueError(f"unknown workload {workload!r}")

    @rpc
    def produce(self) -> None:
        server = self.proxy("server")
        payload = b"x" * self.size
        n = min(self.batch, self.total - self.sent)
        for _ in range(n):
            server.fork.receive(payload)
        self.sent += n
        if self.sent < self.total:
            self.this.fork.produce()
        else:
            self.done = True

    @rpc
    def increments(self) -> None:
        server = self.proxy("server")
        n = min(self.batch, self.total - self.sent)
        for _ in range(n):
            server.fork.inc()
        self.sent += n
        if self.sent < self.total:
            self.this.fork.increments()
        else:
            self.done = True

    @rpc
    async def pings(self) -> None:
        server = self.proxy("server")
        payload = b"x" * self.size
        n = min(self.batch, self.total - self.sent)
        clock = time.perf_counter_ns
        probe = PROBE.append
        for _ in range(n):
            started = clock()
            await server.ping(payload)
            probe(clock() - started)
        self.sent += n
        if self.sent < self.total:
            self.this.fork.pings()
        else:
            self.done = True

    async def becoming_primary(self) -> None:
        self.spawn(observe_client, self)


async def observe_client(client: BenchClient) -> None:
    """Wait for ``go.json``, send the ``go`` impulse, then report when the handlers are done."""
    base = {"pid": os.getpid(), "ready": True}
    publish(client.name, base)
    go = status_dir() / "go.json"
    while not go.exists():
        await anyio.sleep(CLIENT_POLL)
    params = json.loads(go.read_text())
    go_t = time.time()
    client.this.fork.go(params["workload"], params["size"], params["total"], params["batch"])
    while not client.done:
        await anyio.sleep(CLIENT_POLL)
    publish(
        client.name,
        {**base, "done": True, "go_t": go_t, "done_t": time.time(), "samples": PROBE},
    )


class TypicalServer(BenchServer):
    """The throughput server as a user writes it: an ``async def`` handler updating two
    attributes (issue 16's "typical app"), beside the tuned plain ``def`` one.

    The time of its first executed message is taken by a probe, so that the rate runs from
    the first message executed to the last, not from the first page the observer saw.
    """

    @rpc
    async def receive(self, payload: bytes) -> None:
        if not self.received:
            FIRST_EXECUTED.append(time.time())
        self.received += 1
        self.bytes += len(payload)


class TypicalClient(BenchClient):
    """The throughput client as a user writes it: ``async def`` handlers, and a continuation
    step of a fixed number of forks (1,000 or 100) that forks itself again."""

    @impulse
    async def go(self, workload: str, size: int, total: int, batch: int) -> None:
        if self.workload:
            return
        self.workload, self.size, self.total, self.batch = workload, size, total, batch
        self.this.fork.produce()

    @rpc
    async def produce(self) -> None:
        server = self.proxy("server")
        payload = b"x" * self.size
        n = min(self.batch, self.total - self.sent)
        for _ in range(n):
            server.fork.receive(payload)
        self.sent += n
        if self.sent < self.total:
            self.this.fork.produce()
        else:
            self.done = True
