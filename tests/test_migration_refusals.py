"""``--migrate-from`` given something it must not take a log from, or a place it must not put
one: each is a clear error, and nothing is written (no log, no copy beside it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import APPS, Child, free_port, wait_for

from ambrosia_edge.config import PeerAddress, Settings
from ambrosia_edge.discovery import StaticDiscovery
from ambrosia_edge.errors import MigrationError
from ambrosia_edge.migration import migrate_in
from ambrosia_edge.runtime import default_transport
from ambrosia_edge.store import open_store


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ambrosia_edge",
            "run",
            f"{APPS}:Counter",
            "--name",
            "server",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        env=dict(os.environ, **(env or {})),
    )


def nothing_written(log: Path) -> None:
    assert not log.exists()
    assert not log.with_name(log.name + ".migrating").exists()


class Stranger:
    """A TCP server that is not ambrosia-edge: it greets every connection with ``greeting``
    (or with nothing) and keeps it open."""

    def __init__(self, greeting: bytes) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            if self.greeting:
                conn.sendall(self.greeting)

    def close(self) -> None:
        self.sock.close()
        for conn in self.open:
            conn.close()


@pytest.fixture
def stranger(request: pytest.FixtureRequest) -> Iterator[Stranger]:
    server = Stranger(request.param)
    yield server
    server.close()


@pytest.mark.parametrize(
    ("stranger", "why"),
    [
        (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", "not an ambrosia-edge instance of server"),
        (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n", "not an ambrosia-edge"),
        (b"", "sent nothing in 1 s"),
    ],
    indirect=["stranger"],
    ids=["ssh", "http", "silent"],
)
def test_an_address_that_is_not_ambrosia_edge_is_refused(
    tmp_path: Path, stranger: Stranger, why: str
) -> None:
    log = tmp_path / "new" / "server"
    done = run(
        "--log", str(log), "--listen", f"127.0.0.1:{free_port()}", "--handshake-timeout", "1",
        "--migrate-from", f"127.0.0.1:{stranger.port}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert why in done.stderr and "nothing was written" in done.stderr, done.stderr
    nothing_written(log)


def test_an_address_where_nothing_listens_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "new" / "server"
    port = free_port()
    done = run(
        "--log", str(log), "--listen", f"127.0.0.1:{free_port()}",
        "--migrate-from", f"127.0.0.1:{port}", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"cannot reach the running instance at 127.0.0.1:{port}" in done.stderr
    nothing_written(log)


def test_another_immortal_a_wrong_secret_and_a_used_log_are_refused(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.mkdir()
    port = free_port()
    secret = {"AMBROSIA_EDGE_SECRET": "s3cret"}
    client = Child(f"{APPS}:Client", "client", tmp_path / "client", port, {}, status, secret)
    client.start()
    try:
        wait_for(lambda: client.status(), 30, "the client to run", client.output)
        log = tmp_path / "new" / "server"
        listen = f"127.0.0.1:{free_port()}"
        other = run("--log", str(log), "--listen", listen, "--migrate-from", f"127.0.0.1:{port}",
                    cwd=tmp_path, env=secret)  # fmt: skip
        assert other.returncode == 1
        assert "refused to hand server over: this is immortal 'client'" in other.stderr
        nothing_written(log)

        wrong = run("--name", "client", "--log", str(log), "--listen", listen,
                    "--migrate-from", f"127.0.0.1:{port}", cwd=tmp_path,
                    env={"AMBROSIA_EDGE_SECRET": "guess"})  # fmt: skip
        assert wrong.returncode == 1
        assert "failed authentication" in wrong.stderr, wrong.stderr
        nothing_written(log)
        assert "handing over" not in client.output()  # it never held its inputs

        used = tmp_path / "client"  # the running client's own log
        mine = run("--name", "client", "--log", str(used), "--listen", listen,
                   "--migrate-from", f"127.0.0.1:{port}", cwd=tmp_path, env=secret)  # fmt: skip
        assert mine.returncode == 1
        assert "already holds a log of its own" in mine.stderr
    finally:
        client.kill()


def test_a_move_needs_a_listen_port_and_a_local_log(tmp_path: Path) -> None:
    log = tmp_path / "new" / "server"
    no_listen = run("--log", str(log), "--migrate-from", "127.0.0.1:9", cwd=tmp_path)
    assert no_listen.returncode == 1 and "needs --listen HOST:PORT" in no_listen.stderr
    nothing_written(log)
    shared = run("--log", "memory://server", "--listen", "127.0.0.1:0",
                 "--migrate-from", "127.0.0.1:9", cwd=tmp_path)  # fmt: skip
    assert shared.returncode == 1 and "is not one" in shared.stderr, shared.stderr


def test_a_name_is_resolved_through_discovery(tmp_path: Path) -> None:
    """``--migrate-from server``: the Discovery contract's resolve finds the old instance (here
    the static table; zeroconf gives the same addresses on a LAN)."""
    status = tmp_path / "status"
    status.mkdir()
    port = free_port()
    old = Child(f"{APPS}:Counter", "server", tmp_path / "old", port, {}, status)
    old.start()
    try:
        wait_for(lambda: old.status(), 30, "the old instance to run", old.output)
        log = tmp_path / "new" / "server"
        settings = Settings(
            f"{APPS}:Counter",
            "server",
            log=str(log),
            listen=PeerAddress("127.0.0.1", free_port()),
            migrate_from="server",
        )
        with pytest.raises(MigrationError, match="no address is known for 'server'"):
            migrate_in(settings, open_store(str(log)), default_transport(), StaticDiscovery())
        nothing_written(log)
        found = StaticDiscovery(peers={"server": PeerAddress("127.0.0.1", port)})
        migrate_in(settings, open_store(str(log)), default_transport(), found)
        assert old.proc is not None and old.proc.wait(timeout=30) == 0
        assert (log / "chunk-00000001.log").exists()
        assert "moved to 127.0.0.1:" in old.output()
    finally:
        old.kill()
