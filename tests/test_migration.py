"""Live migration (``run --migrate-from``): an immortal moves between two devices while a client
streams awaited calls to it, and every call is executed once, in order.

The two "devices" are two log directories and two ports on loopback. Each move starts the new
instance with ``--migrate-from`` the old one's address; the old one seals its log, says where
the immortal went and exits 0; the client, which lists both addresses for the server, follows.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support import APPS, Child, free_port, wait_for

CALLS = 1500


def cli(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ambrosia_edge", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


class Devices:
    """A server that moves between device A and device B, and a client that calls it."""

    def __init__(self, tmp_path: Path, calls: int = CALLS) -> None:
        self.tmp = tmp_path
        self.status = tmp_path / "status"
        self.status.mkdir()
        self.env = {"AMBROSIA_TEST_CALLS": str(calls)}
        self.calls = calls
        self.pa, self.pb, self.pc = free_port(), free_port(), free_port()
        self.a = tmp_path / "device-a" / "server"
        self.b = tmp_path / "device-b" / "server"
        self.instances: list[Child] = []
        self.client = Child(
            f"{APPS}:Client", "client", tmp_path / "client", self.pc, {}, self.status, self.env
        )
        self.client.args = ["--peer", f"server=127.0.0.1:{self.pa},127.0.0.1:{self.pb}"]

    def server(self, log: Path, port: int, *args: str) -> Child:
        child = Child(
            f"{APPS}:Counter", "server", log, port, {"client": self.pc}, self.status, self.env
        )
        child.starts = 100 * len(self.instances)  # its own output files
        child.args = list(args)
        self.instances.append(child)
        return child

    def output(self) -> str:
        return "".join(c.output() for c in self.instances[-3:]) + self.client.output()

    def seen(self) -> list[int]:
        state = self.client.status()
        return list(state["seen"]) if state else []

    def wait_calls(self, n: int) -> None:
        wait_for(lambda: len(self.seen()) >= n, 60, f"{n} calls", self.output)

    def stop_all(self) -> None:
        for child in [*self.instances, self.client]:
            child.kill()


def test_a_server_migrating_three_times_under_load_executes_every_call_once(
    tmp_path: Path,
) -> None:
    d = Devices(tmp_path)
    server = d.server(d.a, d.pa)
    server.start()
    d.client.start()
    try:
        homes = [(d.b, d.pb), (d.a, d.pa), (d.b, d.pb)]
        for move, (log, port) in enumerate(homes, 1):
            d.wait_calls(move * d.calls // 5)
            old = server
            server = d.server(log, port, "--migrate-from", f"127.0.0.1:{old.port}")
            server.start()
            assert old.proc is not None
            assert old.proc.wait(timeout=60) == 0, d.output()
            assert f"server moved to 127.0.0.1:{port}" in old.output()
            before = len(d.seen())
            d.wait_calls(before + 20)  # the client follows by itself
        wait_for(lambda: (s := d.client.status()) and s["done"], 120, "every call", d.output)
        assert d.seen() == list(range(1, d.calls + 1))  # no gap, no duplicate

        # device A's log was sealed by the third move: starting it there refuses, naming B
        stale = d.server(d.a, d.pa)
        stale.start()
        assert stale.proc is not None
        code = stale.proc.wait(timeout=60)
        out = stale.output()
        assert code == 3, out
        assert "is sealed" in out and f"moved to 127.0.0.1:{d.pb}" in out
        assert len(d.seen()) == d.calls
    finally:
        d.stop_all()
