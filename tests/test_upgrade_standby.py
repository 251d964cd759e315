"""Upgrading without downtime (issue 14): version 2 of a server starts as a standby of its
version 1 primary, on the same log, and takes over when version 1 is stopped (SIGTERM) or
killed (SIGKILL), converting the state as it becomes the primary; real processes throughout.

A client streams awaited calls through ``--peer server=ADDR1,ADDR2`` and must see exactly
1, 3, 6, ... (no call lost, none run twice); ``peek`` (version 2's new method) must answer the
final total. While it follows version 1, the standby writes the checkpoints the primary leaves
to it, labelled as version 1's (they hold version 1's state), and each recovers to the same end.
The downtime, from the signal to the first call the client sees answered by version 2, is
printed.
"""

from __future__ import annotations

import signal
import time
from functools import partial
from pathlib import Path

import pytest
from apps.upgrading import ServerV2
from support import Child, free_port, wait_for
from test_crash_recovery import recovered_state
from test_standby import standby_ready

from ambrosia_edge.checkpoint import decode_checkpoint
from ambrosia_edge.recovery import Replayer
from ambrosia_edge.store import open_store

APPS = Path(__file__).resolve().parent / "apps" / "upgrading.py"
CALLS = 3000
SUM = CALLS * (CALLS + 1) // 2


def files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.mark.parametrize(
    ("how", "standbys"),
    [(signal.SIGTERM, 1), (signal.SIGKILL, 1), (signal.SIGKILL, 2)],
    ids=["sigterm", "sigkill", "sigkill-two-standbys"],
)
def test_version_2_takes_over_from_version_1_as_its_standby(
    tmp_path: Path, how: signal.Signals, standbys: int
) -> None:
    """With two standbys, the one left follows the new primary (the chunk headers tell it the
    version changed), writes its checkpoints as version 2's, and takes over in its turn."""
    server_log = tmp_path / "server"
    pc = free_port()
    ports = [free_port() for _ in range(1 + standbys)]
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    dirs = [tmp_path / f"status-{i}" for i in range(1 + standbys)]
    for directory in [*dirs, tmp_path / "status-client"]:
        directory.mkdir()
    servers = [
        Child(
            f"{APPS}:{'ServerV2' if i else 'Server'}",
            "server",
            server_log,
            port,
            {"client": pc},
            directory,
            env,
        )
        for i, (port, directory) in enumerate(zip(ports, dirs, strict=True))
    ]
    old, new = servers[0], servers[1:]
    for server in servers:  # checkpoints often, so the standby writes some
        server.args = ["--checkpoint-bytes", "16KiB", "--keep-checkpoints", "1000"]
    client = Child(
        f"{APPS}:Client", "client", tmp_path / "client", pc, {}, tmp_path / "status-client", env
    )
    client.args = ["--peer", "server=" + ",".join(f"127.0.0.1:{p}" for p in ports)]
    everyone = (*servers, client)

    def outputs() -> str:
        return "\n".join(c.output() for c in everyone)

    def seen() -> int:
        status = client.status()
        return len(status["seen"]) if status else -1

    def by_standby(child: Child) -> list[int]:
        lines = child.output().splitlines()
        return [int(line.split()[3]) for line in lines if "written by the standby" in line]

    try:
        old.start()
        wait_for(old.status, 60, "version 1 as the primary", outputs)
        for standby in new:  # the same command, the new target: a standby, as the log is held
            standby.start()
            wait_for(partial(standby_ready, standby), 60, "version 2 to follow", outputs)
        client.start()
        wait_for(
            lambda: sum(len(by_standby(c)) for c in new) >= 2 and seen() >= 50,
            60,
            "calls to version 1, and checkpoints by the standby",
            outputs,
        )
        assert old.proc is not None
        signalled = time.monotonic()
        old.proc.send_signal(how)
        at_signal = seen()
        assert at_signal < CALLS, "the client finished before the upgrade: raise CALLS"
        wait_for(lambda: seen() > at_signal, 60, "version 2 to answer", outputs)
        downtime = time.monotonic() - signalled
        assert old.proc.wait(timeout=30) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
        old.proc = None
        primary = wait_for(
            lambda: next((c for c in new if c.status()), None), 60, "the new primary", outputs
        )
        if standbys == 2:  # the other follows version 2, then takes over from it
            (other,) = (c for c in new if c is not primary)
            written = len(by_standby(other))
            wait_for(
                lambda: len(by_standby(other)) > written,
                60,
                "a checkpoint of version 2 by the standby left",
                outputs,
            )
            at_kill = seen()
            assert at_kill < CALLS, "the client finished before the second failover"
            primary.kill()
            wait_for(lambda: seen() > at_kill, 60, "the last standby to answer", outputs)
            primary = other
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish", outputs)
        status = client.status()
        assert status is not None
        assert status["seen"] == [i * (i + 1) // 2 for i in range(1, CALLS + 1)]
        assert status["peeked"] == SUM  # version 2's new method
        wait_for(lambda: (s := primary.status()) and s["total"] == SUM, 60, "version 2's report")
        assert primary.stop() == 0
        assert client.stop() == 0
    finally:
        for child in everyone:
            child.kill()
    print(
        f"\nupgrade from version 1 to 2 through a standby, after {how.name}: "
        f"{downtime * 1000:.0f} ms from the signal to version 2's first answer "
        f"({at_signal} of {CALLS} calls answered by version 1)"
    )
    # the one that took over from version 1: converted once, logged, then checkpointed
    upgraded = [c for c in new if "upgraded from version" in c.output()]
    # once: a standby left must follow version 2's pages with version 2's code, not convert again
    assert len(upgraded) == 1, "\n".join(c.output() for c in upgraded)
    (first,) = upgraded
    lines = first.output().splitlines()
    at = next(i for i, line in enumerate(lines) if "upgraded from version 1 to 2" in line)
    after = [line for line in lines[at:] if "checkpoint" in line and " written (" in line]
    assert after, "no checkpoint of the converted state:\n" + first.output()
    first_v2 = int(after[0].split()[3])
    assert first.output().count("upgraded from version") == 1
    store = open_store(str(server_log))
    try:
        for n in store.list_checkpoints():
            checkpoint = decode_checkpoint(store.read_checkpoint(n), f"checkpoint {n}")
            # what a standby wrote while following version 1 is version 1's state
            expected = (1, "Server") if n < first_v2 else (2, "ServerV2")
            assert (checkpoint.class_version, checkpoint.class_path.split(":")[-1]) == expected, n
            # and each checkpoint, old or new, recovers to the same end under version 2
            replay = Replayer(ServerV2, store, name="server", checkpoint=n, read_only=True)
            replay.run()
            assert type(replay.obj) is ServerV2, n
            assert replay.obj.total == SUM, n
    finally:
        store.close()
    # the standbys' checkpoints taken while version 1 was primary (with two standbys, either
    # may write a chunk's checkpoint: whichever reaches it first) hold version 1's state
    before = [n for child in new for n in by_standby(child) if n < first_v2]
    assert before, "no checkpoint by a standby while version 1 was primary"
    assert not [n for n in by_standby(first) if n >= first_v2]  # it was primary from then on
    final = recovered_state(ServerV2, "server", server_log)
    assert (type(final), final.total, hasattr(final, "count")) == (ServerV2, SUM, False)


def test_a_standby_of_an_older_version_is_refused_before_writing(tmp_path: Path) -> None:
    """Version 1 started as a standby of version 2 (a downgrade): a clear error, at once,
    and not a byte of the log written."""
    server_log = tmp_path / "server"
    dirs = [tmp_path / "status-1", tmp_path / "status-2"]
    for directory in dirs:
        directory.mkdir()
    new = Child(f"{APPS}:ServerV2", "server", server_log, free_port(), {}, dirs[0])
    old = Child(f"{APPS}:Server", "server", server_log, free_port(), {}, dirs[1])
    try:
        new.start()
        wait_for(new.status, 60, "version 2 as the primary", new.output)
        new.proc.send_signal(signal.SIGUSR1)  # type: ignore[union-attr]  # after checkpoint 1
        wait_for(lambda: "checkpoint 2 written" in new.output(), 60, "checkpoint 2", new.output)
        before = files(server_log)
        old.start()
        assert old.proc is not None
        code = old.proc.wait(timeout=60)
        old.proc = None
        assert code == 1
        assert "a version cannot go backwards" in old.output(), old.output()
        assert "run version 2 or later" in old.output(), old.output()
        assert "standby has caught up" not in old.output()
        assert files(server_log) == before
        assert new.status() is not None  # the primary goes on
    finally:
        new.kill()
        old.kill()


def test_a_standby_of_the_old_version_stops_where_the_new_one_took_over(tmp_path: Path) -> None:
    """A version 1 standby, following when version 2 becomes the primary (here: paused while
    version 1 is killed and version 2 started), stops at version 2's first chunk header with
    the same clear error, and version 2 goes on."""
    server_log = tmp_path / "server"
    dirs = [tmp_path / f"status-{i}" for i in range(3)]
    for directory in dirs:
        directory.mkdir()
    v1 = Child(f"{APPS}:Server", "server", server_log, free_port(), {}, dirs[0])
    behind = Child(f"{APPS}:Server", "server", server_log, free_port(), {}, dirs[1])
    v2 = Child(f"{APPS}:ServerV2", "server", server_log, free_port(), {}, dirs[2])
    everyone = (v1, behind, v2)

    def outputs() -> str:
        return "\n".join(c.output() for c in everyone)

    try:
        v1.start()
        wait_for(v1.status, 60, "version 1 as the primary", outputs)
        behind.start()
        wait_for(partial(standby_ready, behind), 60, "the version 1 standby", outputs)
        assert behind.proc is not None
        behind.proc.send_signal(signal.SIGSTOP)
        v1.kill()
        v2.start()
        wait_for(v2.status, 60, "version 2 as the primary", outputs)
        wait_for(lambda: " written (" in v2.output(), 60, "version 2's checkpoint", outputs)
        assert "upgraded from version 1 to 2" in v2.output()
        behind.proc.send_signal(signal.SIGCONT)
        assert behind.proc.wait(timeout=60) == 1
        behind.proc = None
        assert "a version cannot go backwards" in behind.output(), behind.output()
        assert "holds the log now" not in behind.output()
        assert v2.status() is not None
        assert v2.stop() == 0
    finally:
        for child in everyone:
            child.kill()
