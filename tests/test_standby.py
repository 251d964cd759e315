"""Active standbys, end to end: a client streams forks and awaited calls to a server run by a
primary and a standby (``--peer server=ADDR1,ADDR2``); the primary is killed with SIGKILL
again and again, a fresh standby started after each failover, and every fork and call is
counted exactly once, in order. Each failover is timed from the kill to the new primary
serving (it reports its pid from ``becoming_primary``); the client's calls must then go on.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from apps import counting
from apps.counting import Counter, Mixer
from support import APPS, Child, free_port, wait_for
from test_crash_recovery import log_url, recovered_state

from ambrosia_edge.logstatus import read_status
from ambrosia_edge.recovery import Replayer
from ambrosia_edge.store import open_store

CALLS = 8000
FAILOVERS = 5


def standby_ready(child: Child) -> bool:
    """The child follows the log as a standby and answers peers (its log says so)."""
    if child.proc is None:
        return False
    newest = child.status_dir / f"{child.name}.{child.starts - 1}.log"
    return "standby has caught up" in newest.read_text(errors="replace")


def run_failovers(
    tmp_path: Path,
    server_log: Path | str,
    client_log: Path | str,
    monkeypatch: pytest.MonkeyPatch,
    *,
    env: dict[str, str] | None = None,
    recover: Callable[[type, str, Path | str], Any] = recovered_state,
    failovers: int = FAILOVERS,
    calls: int = CALLS,
) -> list[float]:
    """The acceptance scenario; returns each failover's time in seconds. ``env`` is given to
    every process (a store's endpoint, say), ``recover`` rebuilds an immortal from its log."""
    pc = free_port()
    ports = [free_port(), free_port()]
    for key, value in (env or {}).items():  # this process reads the logs too (status)
        monkeypatch.setenv(key, value)
    env = {"AMBROSIA_TEST_CALLS": str(calls), **(env or {})}
    servers = []
    for port in ports:  # one status directory each: both are "server"
        status = tmp_path / f"status-{port}"
        status.mkdir()
        servers.append(
            Child(f"{APPS}:Counter", "server", server_log, port, {"client": pc}, status, env)
        )
    client_status = tmp_path / "status-client"
    client_status.mkdir()
    client = Child(f"{APPS}:Mixer", "client", client_log, pc, {}, client_status, env)
    client.args = ["--peer", "server=" + ",".join(f"127.0.0.1:{p}" for p in ports)]
    everyone = [*servers, client]

    def outputs() -> str:
        reports = [str(c.status_dir / "server.json") for c in servers]
        for path in [*reports, str(client_status / "client.json")]:
            if Path(path).exists():
                reports.append(Path(path).read_text()[:300])
        return "\n".join([*(c.output() for c in everyone), *reports])

    def seen() -> int:
        status = client.status()
        return len(status["seen"]) if status else -1

    times: list[float] = []
    primary, standby = servers
    try:
        primary.start()
        wait_for(primary.status, 60, "the first primary", outputs)
        standby.start()
        client.start()
        for _ in range(failovers):
            wait_for(partial(standby_ready, standby), 60, "the standby to follow", outputs)
            wait_for(  # recorded beside the lease, so status lists it
                lambda s=standby: read_status(str(server_log)).standbys == [f"127.0.0.1:{s.port}"],
                30,
                "status to list the standby",
                outputs,
            )
            before = seen()
            wait_for(lambda b=before: seen() >= b + 10, 60, "the client's progress", outputs)
            assert primary.proc is not None
            killed = time.monotonic()
            primary.kill()
            # serving: the standby holds the log, listens and has become primary (its
            # becoming_primary reports its pid, every 20 ms)
            wait_for(standby.status, 60, "the standby to take over", outputs, poll=0.002)
            times.append(time.monotonic() - killed)
            then = seen()
            wait_for(lambda t=then: seen() > t, 60, "calls answered by the new primary", outputs)
            primary, standby = standby, primary
            standby.start()  # a fresh standby where the old primary was
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish", outputs)
        assert client.status()["seen"] == list(range(1, calls + 1))  # type: ignore[index]
        server = wait_for(
            lambda: (s := primary.status()) and s["count"] == calls and s, 60, "the last calls"
        )
        assert server["received"] == 10 * calls
        assert server["last"] == 10 * calls
        assert server["out_of_order"] == 0
        assert server["total"] == sum(range(1, 10 * calls + 1))
        wait_for(partial(standby_ready, standby), 60, "the last standby", outputs)
        assert standby.stop() == 0  # a standby stops cleanly on SIGTERM
        assert primary.stop() == 0
        assert client.stop() == 0
    finally:
        for child in everyone:
            child.kill()
    # the client's code, replayed here, reads how many calls to make as the children did
    monkeypatch.setattr(counting, "CALLS", calls)
    counter = recover(Counter, "server", server_log)
    assert (counter.count, counter.received, counter.out_of_order) == (calls, 10 * calls, 0)
    assert recover(Mixer, "client", client_log).seen == list(range(1, calls + 1))
    return times


def report_failovers(tier: str, times: list[float]) -> None:
    print(
        f"\nfailover on {tier}:// after SIGKILL, {len(times)} times: median "
        f"{statistics.median(times):.3f} s, worst {max(times):.3f} s "
        f"({', '.join(f'{t:.3f}' for t in times)})"
    )


@pytest.mark.parametrize("tier", ["file", "nfs"])
def test_sigkilled_primaries_fail_over_to_standbys_exactly_once(
    tmp_path: Path, tier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_log, client_log = log_url(tmp_path, "server", tier), log_url(tmp_path, "client", tier)
    times = run_failovers(tmp_path, server_log, client_log, monkeypatch)
    assert len(times) == FAILOVERS
    report_failovers(tier, times)


def test_a_standby_can_be_refused(tmp_path: Path) -> None:
    """--no-standby keeps the old answer: the log is in use, naming its holder."""
    status = tmp_path / "status"
    status.mkdir()
    log = tmp_path / "server"
    first = Child(f"{APPS}:Counter", "server", log, free_port(), {}, status)
    first.start()
    try:
        wait_for(first.status, 60, "the primary", first.output)
        assert first.proc is not None
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "ambrosia_edge",
                "run",
                f"{APPS}:Counter",
                "--name",
                "server",
                "--log",
                str(log),
                "--no-standby",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=status,
        )
        assert second.returncode != 0
        assert f"is in use by pid {first.proc.pid}" in second.stderr
    finally:
        first.kill()


def test_a_paused_primary_is_deposed_by_its_standby(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the shared-mount tier a primary SIGSTOPped past its lease is replaced by its standby;
    SIGCONTed, it stops at once with status 3 saying it was deposed, and the client's forks and
    calls across all of it count exactly once. (``--lease-ttl`` sets the lease here.)"""
    calls = 3000
    server_log = f"nfs://{tmp_path / 'server'}"
    client_log = tmp_path / "client"
    pc, p1, p2 = free_port(), free_port(), free_port()
    env = {"AMBROSIA_TEST_CALLS": str(calls)}
    dirs = [tmp_path / name for name in ("status-1", "status-2", "status-client")]
    for directory in dirs:
        directory.mkdir()
    first = Child(f"{APPS}:Counter", "server", server_log, p1, {"client": pc}, dirs[0], env)
    second = Child(f"{APPS}:Counter", "server", server_log, p2, {"client": pc}, dirs[1], env)
    first.args = second.args = ["--lease-ttl", "0.5"]
    client = Child(f"{APPS}:Mixer", "client", client_log, pc, {}, dirs[2], env)
    client.args = ["--peer", f"server=127.0.0.1:{p1},127.0.0.1:{p2}"]
    everyone = (first, second, client)

    def outputs() -> str:
        return "\n".join(c.output() for c in everyone)

    def seen() -> int:
        status = client.status()
        return len(status["seen"]) if status else -1

    first.start()
    try:
        wait_for(first.status, 60, "the primary", outputs)
        second.start()
        client.start()
        wait_for(partial(standby_ready, second), 60, "the standby", outputs)
        wait_for(lambda: seen() >= 20, 60, "the client's progress", outputs)
        assert first.proc is not None
        paused = first.proc
        paused.send_signal(signal.SIGSTOP)
        try:
            wait_for(second.status, 30, "the standby to take over", outputs)
            at = seen()
            wait_for(lambda: seen() > at + 10, 30, "calls answered by the new primary", outputs)
        finally:
            paused.send_signal(signal.SIGCONT)
        assert paused.wait(timeout=30) == 3, first.output()
        first.proc = None
        assert "deposed: epoch 2 of the lease was taken" in first.output()
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish", outputs)
        server = wait_for(lambda: (s := second.status()) and s["count"] == calls and s, 60, "end")
        assert (server["received"], server["out_of_order"]) == (10 * calls, 0)
        assert second.stop() == 0
        assert client.stop() == 0
    finally:
        for child in everyone:
            if child.proc is not None:
                child.proc.send_signal(signal.SIGCONT)
            child.kill()
    monkeypatch.setattr(counting, "CALLS", calls)
    counter = recovered_state(Counter, "server", server_log)
    assert (counter.count, counter.received, counter.out_of_order) == (calls, 10 * calls, 0)
    assert recovered_state(Mixer, "client", client_log).seen == list(range(1, calls + 1))


@pytest.mark.parametrize("tier", ["file", "nfs"])
def test_the_standby_writes_the_checkpoints_and_they_recover_exactly(
    tmp_path: Path, tier: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a standby, the primary begins each chunk and the standby writes its checkpoint,
    from its replay; recovering from any of them gives exactly the state of a replay of the
    whole log. Failing over keeps working from there on."""
    check_standby_checkpoints(tmp_path, log_url(tmp_path, "server", tier), monkeypatch)


def check_standby_checkpoints(
    tmp_path: Path,
    server_log: Path | str,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str] | None = None,
    writer: Callable[[int], str | None] | None = None,
    checkpoint_bytes: str = "16KiB",
) -> None:
    """The test above with the server's log at ``server_log`` (``env`` for the children);
    ``writer(n)``, where the tier records it, says who wrote checkpoint ``n``: every one
    stored before the primary is killed, but the first, must be the standby's."""
    calls = 1500
    client_log = tmp_path / "client"
    pc, p1, p2 = free_port(), free_port(), free_port()
    env = {**(env or {}), "AMBROSIA_TEST_CALLS": str(calls)}
    dirs = [tmp_path / name for name in ("status-1", "status-2", "status-client")]
    for directory in dirs:
        directory.mkdir()
    servers = [
        Child(f"{APPS}:Counter", "server", server_log, port, {"client": pc}, directory, env)
        for port, directory in ((p1, dirs[0]), (p2, dirs[1]))
    ]
    for server in servers:
        server.args = ["--checkpoint-bytes", checkpoint_bytes, "--keep-checkpoints", "1000"]
    first, second = servers
    client = Child(f"{APPS}:Mixer", "client", client_log, pc, {}, dirs[2], env)
    client.args = ["--peer", f"server=127.0.0.1:{p1},127.0.0.1:{p2}"]
    everyone = (first, second, client)

    def outputs() -> str:
        return "\n".join(c.output() for c in everyone)

    def seen() -> int:
        status = client.status()
        return len(status["seen"]) if status else -1

    first.start()
    try:
        wait_for(first.status, 60, "the primary", outputs)
        second.start()
        wait_for(partial(standby_ready, second), 60, "the standby", outputs)
        # recorded beside the lease: status names it, and the primary leaves checkpoints to it
        wait_for(
            lambda: read_status(str(server_log)).standbys == [f"127.0.0.1:{p2}"],
            30,
            "status to name the standby",
            outputs,
        )
        client.start()
        wait_for(
            lambda: second.output().count("written by the standby") >= 3,
            60,
            "checkpoints by the standby",
            outputs,
        )
        before_kill = open_store(str(server_log)).list_checkpoints()
        first.kill()
        wait_for(second.status, 60, "the standby to take over", outputs)
        status = read_status(str(server_log))
        assert (status.primary, status.standbys) == (f"127.0.0.1:{p2}", [])
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish", outputs)
        assert second.stop() == 0
        assert client.stop() == 0
    finally:
        for child in everyone:
            child.kill()
    by_primary = [line for line in first.output().splitlines() if "checkpoint" in line]
    assert by_primary[0].startswith("ambrosia-edge: server: checkpoint 1 written ("), by_primary
    if writer is None:
        # its first, before any standby; later ones only where the standby had not stored the
        # one before (a standby slowed down, as on a loaded machine: the primary takes the next)
        by_standby = second.output().count("written by the standby")
        assert len(by_primary) - 1 < by_standby, (by_primary, by_standby)
    else:
        # a standby that falls behind a fast-rolling log leaves some to the primary
        writers = [writer(n) for n in before_kill]
        assert writers[0] == "primary" and writers.count("standby") >= 3, writers
        assert writers.count("primary") == len(by_primary), (writers, by_primary)
    store = open_store(str(server_log))
    checkpoints = store.list_checkpoints()
    assert len(checkpoints) >= 4
    whole = Replayer(Counter, store, name="server", checkpoint=None, read_only=True)
    whole.run()
    assert (whole.obj.count, whole.obj.received, whole.obj.out_of_order) == (
        calls,
        10 * calls,
        0,
    )
    for n in checkpoints:
        replay = Replayer(Counter, store, name="server", checkpoint=n, read_only=True)
        replay.run()
        assert replay.state == whole.state, f"checkpoint {n}"
        assert replay.coordinator.snapshot() == whole.coordinator.snapshot(), f"checkpoint {n}"
    monkeypatch.setattr(counting, "CALLS", calls)
    assert recovered_state(Mixer, "client", client_log).seen == list(range(1, calls + 1))
