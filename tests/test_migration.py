"""Live migration (``run --migrate-from``): an immortal moves between two devices while a client
streams awaited calls to it, and every call is executed once, in order.

The two "devices" are two log directories and two ports on loopback. Each move starts the new
instance with ``--migrate-from`` the old one's address; the old one seals its log, says where
the immortal went and exits 0; the client, which lists both addresses for the server, follows.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Callable
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
        # with a deployment secret: the handover's MACs are checked in every move
        self.env = {"AMBROSIA_TEST_CALLS": str(calls), "AMBROSIA_EDGE_SECRET": "s3cret"}
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
        n = min(n, self.calls)
        wait_for(lambda: len(self.seen()) >= n, 60, f"{n} calls", self.output)

    def watch(self) -> Callable[[], list[float]]:
        """Record when the client's count of results grows; the returned function stops and
        gives the longest times without a new result (the pauses the moves cause)."""
        marks: list[tuple[float, int]] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(0.005):
                marks.append((time.monotonic(), len(self.seen())))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()

        def pauses() -> list[float]:
            stop.set()
            thread.join()
            changes = [t for (t, n), (_, m) in zip(marks[1:], marks, strict=False) if n != m]
            return sorted((b - a for a, b in itertools.pairwise(changes)), reverse=True)

        return pauses

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
        d.wait_calls(1)
        pauses = d.watch()
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
        longest = pauses()[:3]
        print(f"\nthe three longest pauses of the client's calls: {longest} s")

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


# --- crashes in the middle of a move ----------------------------------------------------------
#
# Each test kills one side at one point of the handover (a failpoint: the process SIGKILLs
# itself there) and checks that one of the two instances ends up the owner, and that the
# client's calls are all executed exactly once in the end.

KILLED = 2000


def failpoint(d: Devices, name: str) -> dict[str, str]:
    return {**d.env, "AMBROSIA_EDGE_FAILPOINTS": f"{name}:1"}


def finish(d: Devices) -> None:
    wait_for(lambda: (s := d.client.status()) and s["done"], 120, "every call", d.output)
    assert d.seen() == list(range(1, d.calls + 1))  # no gap, no duplicate


def exited(child: Child, timeout: float = 60) -> int:
    assert child.proc is not None
    return child.proc.wait(timeout=timeout)


def test_the_old_instance_killed_before_sealing_keeps_the_immortal(tmp_path: Path) -> None:
    d = Devices(tmp_path, KILLED)
    old = d.server(d.a, d.pa)
    old.env = failpoint(d, "handover-seal")  # dies when the copy is confirmed, before the seal
    old.start()
    d.client.start()
    try:
        d.wait_calls(KILLED // 4)
        new = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        new.start()
        assert exited(new) == 1
        assert exited(old) == -9
        out = new.output()
        assert "interrupted after the copy was made" in out, out
        assert not d.b.exists()  # no log at the new home, half or whole
        staging = d.b.with_name("server.migrating")
        assert staging.exists() and f"mv {staging} {d.b}" in out
        assert "sealed" not in cli("status", str(d.a), cwd=tmp_path).stdout  # so: not moved

        # the old log was not sealed: the old instance runs again, and owns the immortal
        old.env = d.env
        old.start()
        d.wait_calls(len(d.seen()) + 20)
        # moving it once more works, and replaces the stale copy
        again = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        again.start()
        assert exited(old) == 0, d.output()
        finish(d)
        assert not staging.exists()
    finally:
        d.stop_all()


def test_the_old_instance_killed_after_sealing_hands_over_by_a_rename(tmp_path: Path) -> None:
    d = Devices(tmp_path, KILLED)
    old = d.server(d.a, d.pa)
    old.env = failpoint(d, "handover-sealed")  # dies right after the seal, before saying so
    old.start()
    d.client.start()
    try:
        d.wait_calls(KILLED // 4)
        new = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        new.start()
        assert exited(new) == 1
        assert exited(old) == -9
        staging = d.b.with_name("server.migrating")
        assert staging.exists() and not d.b.exists()
        # started again, the old instance refuses: its log names the new home
        old.env = d.env
        old.start()
        assert exited(old) == 3
        assert f"moved to 127.0.0.1:{d.pb}" in old.output()
        status = cli("status", str(d.a), cwd=tmp_path)
        assert f"the log is sealed: the immortal moved to 127.0.0.1:{d.pb}" in status.stdout
        # a plain start at the new home refuses too, until the move is finished by hand
        plain = d.server(d.b, d.pb)
        plain.start()
        assert exited(plain) == 1
        assert "unfinished move" in plain.output()
        staging.rename(d.b)  # what the error messages say to do
        d.server(d.b, d.pb).start()
        finish(d)
    finally:
        d.stop_all()


def test_the_new_instance_killed_before_ready_leaves_the_old_one_in_charge(
    tmp_path: Path,
) -> None:
    d = Devices(tmp_path, KILLED)
    old = d.server(d.a, d.pa)
    old.start()
    d.client.start()
    try:
        d.wait_calls(KILLED // 4)
        new = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        new.env = failpoint(d, "migrate-ready")  # dies with the copy made, before saying READY
        new.start()
        assert exited(new) == -9
        wait_for(lambda: "abandoned" in old.output(), 30, "the old instance to go on", d.output)
        d.wait_calls(len(d.seen()) + 20)  # it does, as the primary
        assert old.proc is not None and old.proc.poll() is None
        assert not d.b.exists()
        again = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        again.start()
        assert exited(old) == 0, d.output()
        finish(d)
    finally:
        d.stop_all()


def test_the_new_instance_killed_after_the_seal_finishes_when_started_again(
    tmp_path: Path,
) -> None:
    d = Devices(tmp_path, KILLED)
    old = d.server(d.a, d.pa)
    old.start()
    d.client.start()
    try:
        d.wait_calls(KILLED // 4)
        new = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        new.env = failpoint(d, "migrate-sealed")  # dies after SEALED, before the rename
        new.start()
        assert exited(new) == -9
        assert exited(old) == 0, d.output()
        assert not d.b.exists()
        # the same command again: the copy is known to be sealed, so it becomes the log
        again = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}")
        again.start()
        wait_for(lambda: "finished the move" in again.output(), 30, "the move", d.output)
        finish(d)
    finally:
        d.stop_all()


def test_a_move_over_tls_needs_a_certificate_for_the_immortal(tmp_path: Path) -> None:
    """With TLS the new instance proves itself as a link's sender does: a certificate of the
    deployment's CA for the immortal's name. One for another name is refused, nothing moves."""
    import trustme

    ca = trustme.CA()
    tls = tmp_path / "tls"
    tls.mkdir()
    ca.cert_pem.write_to_path(str(tls / "ca.pem"))

    def flags(name: str) -> list[str]:
        cert = ca.issue_cert(name)
        cert.cert_chain_pems[0].write_to_path(str(tls / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(tls / f"{name}.key"))
        return ["--tls-cert", str(tls / f"{name}.pem"), "--tls-key", str(tls / f"{name}.key"),
                "--tls-ca", str(tls / "ca.pem")]  # fmt: skip

    d = Devices(tmp_path, 400)
    d.client.args += flags("client")
    server = d.server(d.a, d.pa, *flags("server"))
    server.start()
    d.client.start()
    try:
        d.wait_calls(100)
        impostor = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}", *flags("client"))
        impostor.start()
        assert exited(impostor) == 1
        assert "refused to hand server over" in impostor.output(), impostor.output()
        assert not d.b.exists() and not d.b.with_name("server.migrating").exists()
        new = d.server(d.b, d.pb, "--migrate-from", f"127.0.0.1:{d.pa}", *flags("server"))
        new.start()
        assert exited(server) == 0, d.output()
        finish(d)
    finally:
        d.stop_all()
