"""Exactly-once across SIGKILL: real child processes, real sockets, real fsync (issue: core).

The checks are exact: the client sees 1..N with no gap and no repeat, the fork receiver counts
every message once and in order. Progress is observed through status files the immortals
publish from a non-deterministic task, and the final verdict comes from replaying the logs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import trustme
from apps.counting import Client, Counter
from support import APPS, Child, free_port, wait_for

from ambrosia_edge.config import Settings
from ambrosia_edge.runtime import Runtime

CALLS = 300
FORKS = 100_000


def recovered_state(cls: type, name: str, log: Path | str) -> Any:
    """Rebuild an immortal from its log alone (the processes are stopped)."""
    runtime = Runtime(cls, Settings(target="tests:inprocess", name=name, log=str(log)))
    runtime.recover()
    runtime.store.close()
    return runtime.immortal


def log_url(tmp_path: Path, name: str, tier: str) -> Path | str:
    """Where a test's immortal logs: a bare path (the local tier) or a tier's URL."""
    return tmp_path / name if tier == "file" else f"{tier}://{tmp_path / name}"


def pair(
    tmp_path: Path,
    client_class: str,
    env: dict[str, str],
    tier: str = "file",
    *,
    tls: bool = False,
) -> tuple[Child, Child]:
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    server = Child(
        f"{APPS}:Counter",
        "server",
        log_url(tmp_path, "server", tier),
        ps,
        {"client": pc},
        status,
        env,
    )
    client = Child(
        f"{APPS}:{client_class}",
        "client",
        log_url(tmp_path, "client", tier),
        pc,
        {"server": ps},
        status,
        env,
    )
    if tls:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        for child in (server, client):
            cert = ca.issue_cert(child.name)
            cert.cert_chain_pems[0].write_to_path(str(tmp_path / f"{child.name}.pem"))
            cert.private_key_pem.write_to_path(str(tmp_path / f"{child.name}.key"))
            child.args += ["--tls-cert", str(tmp_path / f"{child.name}.pem")]
            child.args += ["--tls-key", str(tmp_path / f"{child.name}.key")]
            child.args += ["--tls-ca", str(tmp_path / "ca.pem")]
    return server, client


# nfs: the shared-mount tier on a local directory, its epoch lease in place of flock; tls:
# the links between the two over mutually authenticated TLS
@pytest.mark.parametrize(("tier", "link"), [("file", "tcp"), ("nfs", "tcp"), ("file", "tls")])
def test_awaited_calls_exactly_once_while_both_sides_are_killed(
    tmp_path: Path, tier: str, link: str
) -> None:
    rng = random.Random(7)
    env = {"AMBROSIA_TEST_CALLS": str(CALLS)}
    server, client = pair(tmp_path, "Client", env, tier, tls=link == "tls")
    server.start()
    client.start()
    kills = {"server": 0, "client": 0}
    try:
        progress = 0
        for round_ in range(24):
            # let a few calls through (none, sometimes: a kill during recovery), then kill
            # one side at that moment; the client keeps calling throughout
            target = min(progress + rng.randint(0, 8), CALLS - 20)
            wait_for(
                lambda target=target: (s := client.status()) and len(s["seen"]) >= target,
                60,
                f"client progress to {target}",
                lambda: client.output() + server.output(),
            )
            progress = len(client.status()["seen"])  # type: ignore[index]
            victim = server if round_ % 2 == 0 else client
            victim.kill()
            kills[victim.name] += 1
            victim.start()
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish")
        seen = client.status()["seen"]  # type: ignore[index]
        assert seen == list(range(1, CALLS + 1))
        # The client can finish on replies it had logged while the restarted server is still
        # starting; a SIGTERM before it runs would kill it rather than stop it cleanly.
        wait_for(lambda: server.status() is not None, 60, "the restarted server to be up")
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        server.kill()
        client.kill()
    assert kills["server"] >= 10 and kills["client"] >= 10, kills
    assert recovered_state(Client, "client", client.log).seen == list(range(1, CALLS + 1))
    assert recovered_state(Counter, "server", server.log).count == CALLS


@pytest.mark.parametrize(
    ("forks", "step", "kills"),
    [
        (FORKS, 1000, 8),
        # steps of 10 forks: the client runs a chain of pages ahead of their flushes, and
        # writes those that queue up together; a kill takes pages in flight with it
        (20_000, 10, 6),
    ],
)
def test_fork_stream_exactly_once_and_in_order_across_kills(
    tmp_path: Path, forks: int, step: int, kills: int
) -> None:
    rng = random.Random(11)
    env = {"AMBROSIA_TEST_FORKS": str(forks), "AMBROSIA_TEST_STEP": str(step)}
    server, client = pair(tmp_path, "Streamer", env)
    server.start()
    client.start()
    try:
        for round_ in range(kills):
            target = (round_ + 1) * forks // (kills + 2)
            wait_for(
                lambda target=target: (s := server.status()) and s["received"] >= target,
                120,
                f"the server to receive {target}",
                lambda: server.output() + client.output(),
            )
            victim = server if rng.random() < 0.5 else client
            victim.kill()
            victim.start()
        wait_for(lambda: (s := server.status()) and s["received"] >= forks, 180, "all forks")
        status = server.status()
        assert status is not None
        assert status["received"] == forks
        assert status["total"] == forks * (forks + 1) // 2
        assert status["last"] == forks
        assert status["out_of_order"] == 0
        server.stop()
        client.stop()
    finally:
        server.kill()
        client.kill()
    final = recovered_state(Counter, "server", server.log)
    assert (final.received, final.total, final.out_of_order) == (forks, forks * (forks + 1) // 2, 0)


@pytest.mark.parametrize("first", ["server", "client"])
def test_both_killed_at_once_then_restarted_in_either_order(tmp_path: Path, first: str) -> None:
    server, client = pair(tmp_path, "Client", {"AMBROSIA_TEST_CALLS": "200"})
    server.start()
    client.start()
    try:
        wait_for(lambda: (s := client.status()) and len(s["seen"]) >= 60, 60, "some progress")
        server.kill()
        client.kill()
        order = [server, client] if first == "server" else [client, server]
        for child in order:
            child.start()
        wait_for(lambda: (s := client.status()) and s["done"], 120, "the client to finish")
        assert client.status()["seen"] == list(range(1, 201))  # type: ignore[index]
    finally:
        server.kill()
        client.kill()
    assert recovered_state(Counter, "server", server.log).count == 200
