"""Fencing, Jepsen style, on the shared-mount tier: a primary paused (SIGSTOP) past its lease
while another instance takes the log over and writes is, once resumed (SIGCONT), deposed: it
exits with status 3 saying so, nothing it writes from then on is part of the log, and the
calls its client made across all of it are counted exactly once, in order.

There are no standbys yet, so the instance that takes over listens elsewhere and is stopped
once it has written; a third instance then serves the client on the first one's address.
"""

from __future__ import annotations

import signal
from pathlib import Path

from ambrosia_edge.storage.shared import SharedStore
from apps.counting import Client, Counter
from support import APPS, Child, free_port, wait_for
from test_crash_recovery import recovered_state

from ambrosia_edge.logstatus import read_status

CALLS = 200


def test_a_paused_primary_is_deposed_and_its_late_writes_never_count(tmp_path: Path) -> None:
    server_log = f"nfs://{tmp_path / 'server'}?lease=0.5"
    client_log = f"nfs://{tmp_path / 'client'}"
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    first = Child(f"{APPS}:Counter", "server", server_log, ps, {"client": pc}, status, env)
    client = Child(f"{APPS}:Client", "client", client_log, pc, {"server": ps}, status, env)
    elsewhere = tmp_path / "status-taker"
    elsewhere.mkdir()
    taker = Child(f"{APPS}:Counter", "server", server_log, free_port(), {}, elsewhere, env)
    third = Child(f"{APPS}:Counter", "server", server_log, ps, {"client": pc}, status, env)
    everyone = (first, client, taker, third)

    def outputs() -> str:
        return "".join(c.output() for c in everyone)

    first.start()
    client.start()
    try:
        wait_for(
            lambda: (s := client.status()) and len(s["seen"]) >= 40, 60, "client progress", outputs
        )
        assert first.proc is not None
        paused = first.proc
        paused.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: read_status(server_log).state == "lapsed", 10, "the lease to lapse")
            taker.start()
            wait_for(lambda: taker.status() is not None, 60, "the takeover", outputs)
            store = SharedStore(server_log)
            assert store.lease.info().holder.epoch == 2  # type: ignore[union-attr]
            assert taker.stop() == 0
        finally:
            paused.send_signal(signal.SIGCONT)
        code = paused.wait(timeout=30)
        first.proc = None
        assert code == 3, first.output()
        assert "deposed: epoch 2 of the lease was taken" in first.output()

        third.start()
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish", outputs)
        assert client.status()["seen"] == list(range(1, CALLS + 1))  # type: ignore[index]
        wait_for(lambda: third.status() is not None, 60, "the third server to be up", outputs)
        assert third.stop() == 0
        assert client.stop() == 0
    finally:
        for child in everyone:
            if child.proc is not None:
                child.proc.send_signal(signal.SIGCONT)
            child.kill()
    assert recovered_state(Client, "client", client_log).seen == list(range(1, CALLS + 1))
    assert recovered_state(Counter, "server", server_log).count == CALLS
