"""Upgrade under fire: a server upgraded from version 1 to 2 (a field renamed, a method added)
while a client streams awaited calls, the new version SIGKILLed at random points of the
upgrade, real processes throughout (issue 14).

Each run: version 1 serves a random number of calls and is killed; version 2 is started twice
with a failpoint (ambrosia_edge/failpoints.py) that kills it at a point of the upgrade
(state converted in memory; the new version's chunk header durable but not its checkpoint;
just after that checkpoint; while writing one of its first pages), then once more to finish.
The client must see exactly 1, 3, 6, ... (no call lost, none run twice), ``peek`` (version 2's
new method) must answer the final total, and the server's log must recover as version 2 with
the old ``count`` in ``total``.
"""

from __future__ import annotations

import random
import signal
import subprocess
from pathlib import Path

import pytest
from apps.upgrading import ServerV2
from support import Child, free_port, wait_for
from test_crash_recovery import recovered_state

APPS = Path(__file__).resolve().parent / "apps" / "upgrading.py"
CALLS = 120
SUM = CALLS * (CALLS + 1) // 2
RUNS = 12  # every way to crash first in two runs
POINTS = ["upgraded", "chunk-started", "checkpoint-stored", "page-write:1", "page-write:3"]
#: besides the failpoints: a SIGKILL from outside, this long after the start (in recovery, in
#: the upgrade, or just after it, depending on the machine's speed)
DELAY = "delay"


def reachable(after: str) -> list[str]:
    """Where the next start can still be killed, after a kill at ``after``."""
    if after == "upgraded":  # nothing of the upgrade was written: all of it is done again
        return [*POINTS, DELAY]
    if after == "chunk-started":  # converted at the header in replay, then checkpointed
        return [*POINTS[1:], DELAY]
    # the new version's checkpoint is durable (or may be, after a kill from outside): the
    # upgrade is over, only pages are left to crash in
    return [*POINTS[-2:], DELAY]


def one_run(root: Path, rng: random.Random, first: str) -> list[str]:
    status = root / "status"
    status.mkdir(parents=True)
    ps, pc = free_port(), free_port()
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    server = Child(f"{APPS}:Server", "server", root / "server", ps, {"client": pc}, status, env)
    client = Child(f"{APPS}:Client", "client", root / "client", pc, {"server": ps}, status, env)
    points = []
    try:
        server.start()
        client.start()
        target = rng.randint(1, CALLS // 2)
        wait_for(
            lambda: (s := client.status()) and len(s["seen"]) >= target,
            60,
            f"{target} calls to version 1",
            lambda: client.output() + server.output(),
        )
        server.kill()
        server.target = f"{APPS}:ServerV2"
        for _ in range(2):
            point = rng.choice(reachable(points[-1])) if points else first
            if point == DELAY:
                point = f"{DELAY} {rng.uniform(0.0, 1.0):.2f} s"
                points.append(point)
                server.env = env
                server.start()
                assert server.proc is not None
                try:  # a random moment to crash at, not a wait for something to happen
                    server.proc.wait(timeout=float(point.split()[1]))
                except subprocess.TimeoutExpired:
                    server.proc.send_signal(signal.SIGKILL)
                code = server.proc.wait(timeout=60)
                server.proc = None
                continue
            points.append(point)
            server.env = dict(env, AMBROSIA_EDGE_FAILPOINTS=point)
            server.start()
            assert server.proc is not None
            code = server.proc.wait(timeout=60)
            assert code == -9, (
                f"version 2 with failpoint {point} ended with {code}: " + (server.output()[-3000:])
            )
            server.proc = None
        server.env = env
        server.start()
        wait_for(
            lambda: (s := client.status()) and s["done"],
            120,
            "the client to finish against version 2",
            lambda: client.output() + server.output(),
        )
        seen = client.status()["seen"]  # type: ignore[index]
        assert seen == [i * (i + 1) // 2 for i in range(1, CALLS + 1)], points
        assert client.status()["peeked"] == SUM, points  # type: ignore[index]
        wait_for(lambda: server.status() is not None, 60, "version 2 to be up")
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        server.kill()
        client.kill()
    final = recovered_state(ServerV2, "server", root / "server")
    assert type(final) is ServerV2, points
    assert (final.total, hasattr(final, "count")) == (SUM, False), points
    return points


@pytest.mark.parametrize("run", range(RUNS))
def test_upgrade_under_fire(tmp_path: Path, run: int) -> None:
    # every point first in two runs; the progress before the kill and the second point random,
    # and the moment of a kill from outside
    one_run(tmp_path, random.Random(1400 + run), [*POINTS, DELAY][run % (len(POINTS) + 1)])
