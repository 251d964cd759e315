"""Failover: a primary killed with SIGKILL while a standby follows its log, again and again.

A client pings (awaited calls, one at a time) a server run by a primary and a standby, its peer
entry listing both addresses. The primary is killed; the failover time runs from the kill to
the moment the standby, now primary, is live (listening, and its ``becoming_primary`` started:
its status file names its pid). A fresh standby is then started where the killed primary was,
and the next round kills the new primary. At the end every ping must have run exactly once.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from typing import Any

from ambrosia_edge.testing import free_port

from .processes import BenchmarkError, Child, Runner, ambrosia_args, read_status, send_go

#: pings per continuation step of the client
_BATCH = 100


def measure_failover(runner: Runner, *, failovers: int, pings: int) -> dict[str, Any]:
    """Kill the primary ``failovers`` times (or as often as the ``pings`` last); the times."""
    run_dir = runner.new_dir("failover")
    env = runner.env(run_dir, pings)
    pc, ports = free_port(), [free_port(), free_port()]
    peers = ",".join(f"127.0.0.1:{p}" for p in ports)
    client_args = ambrosia_args("client", run_dir, pc, ports[0], True)
    client_args[client_args.index("--peer") + 1] = f"server={peers}"
    servers = [ambrosia_args("server", run_dir, p, pc, True) for p in ports]
    children: list[Child] = []
    times: list[float] = []
    seq = 0

    def start(index: int) -> Child:
        nonlocal seq
        seq += 1
        child = Child(f"server-{seq}", servers[index], run_dir, env)
        children.append(child)
        return child

    def live(child: Child) -> bool:
        return read_status(run_dir, "server").get("pid") == child.pid

    def following(child: Child) -> bool:
        return "standby has caught up" in child.text()

    try:
        primary, where = start(0), 0
        runner.wait("the first primary", lambda: live(primary), children)
        standby = start(1)
        runner.wait("the standby to follow the log", lambda: following(standby), children)
        client = Child("client", client_args, run_dir, env)
        children.append(client)
        runner.wait("the client", lambda: "connected to server" in client.text(), children)
        send_go(run_dir, workload="ping", size=16, total=pings, batch=_BATCH)
        for _ in range(failovers):
            runner.wait("the standby to follow the log", partial(following, standby), children)
            if "done" in read_status(run_dir, "client"):
                break  # the pings ended first: fewer failovers than asked
            killed = time.monotonic()
            primary.proc.kill()
            primary.proc.wait()
            children.remove(primary)
            runner.wait("the standby to take over", partial(live, standby), children)
            times.append(time.monotonic() - killed)
            where = 1 - where
            primary, standby = standby, start(1 - where)
        runner.wait("the pings to end", lambda: "done" in read_status(run_dir, "client"), children)
        runner.wait(
            "the server to count every ping",
            lambda: "done" in read_status(run_dir, "server"),
            children,
        )
        counted = read_status(run_dir, "server").get("pings")
    finally:
        for child in children:
            child.stop()
    if counted != pings:
        raise BenchmarkError(
            f"exactly-once broken across failovers: the server counted {counted} pings of "
            f"{pings}; the run is kept in {run_dir}"
        )
    if not times:
        raise BenchmarkError(f"the {pings} pings ended before the first failover")
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"tier": "file", "pings": pings, "times_s": times, "exactly_once": True}
