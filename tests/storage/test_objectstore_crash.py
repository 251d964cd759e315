"""Exactly-once across SIGKILL with both logs on s3:// (SeaweedFS started here): the core's
Counter/Client test, with a killed writer's lease taken over by its restart on this host."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("obstore")

from ambrosia_edge.storage.objectstore import ObjectStore
from apps.counting import Client, Counter
from objectservers import ObjectServer, seaweedfs_server
from support import APPS, Child, free_port, wait_for

from ambrosia_edge.cli import main
from ambrosia_edge.config import Settings
from ambrosia_edge.runtime import Runtime
from ambrosia_edge.store import open_store

CALLS = 120


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectServer]:
    with seaweedfs_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def recovered_state(cls: type, name: str, log: str, server: ObjectServer) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        for key, value in server.env().items():
            mp.setenv(key, value)
        runtime = Runtime(cls, Settings(target="tests:inprocess", name=name, log=log))
        runtime.recover()
        runtime.store.close()
        return runtime.immortal


def test_awaited_calls_exactly_once_with_logs_on_s3(
    tmp_path: Path, seaweedfs: ObjectServer
) -> None:
    rng = random.Random(5)
    base = f"s3://{seaweedfs.bucket}/crash/{uuid.uuid4().hex}"
    env = {"AMBROSIA_TEST_CALLS": str(CALLS), **seaweedfs.env()}
    ps, pc = free_port(), free_port()
    status = tmp_path / "status"
    status.mkdir()
    server_log, client_log = f"{base}/server", f"{base}/client"
    server = Child(f"{APPS}:Counter", "server", server_log, ps, {"client": pc}, status, env)  # type: ignore[arg-type]
    client = Child(f"{APPS}:Client", "client", client_log, pc, {"server": ps}, status, env)  # type: ignore[arg-type]
    server.start()
    client.start()
    try:
        progress = 0
        for round_ in range(8):
            target = min(progress + rng.randint(1, 8), CALLS - 20)
            wait_for(
                lambda target=target: (s := client.status()) and len(s["seen"]) >= target,
                120,
                f"client progress to {target}",
                lambda: client.output() + server.output(),
            )
            progress = len(client.status()["seen"])  # type: ignore[index]
            victim = server if round_ % 2 == 0 else client
            victim.kill()
            victim.start()
        wait_for(
            lambda: (s := client.status()) and s["done"],
            180,
            "the client to finish",
            lambda: client.output() + server.output(),
        )
        assert client.status()["seen"] == list(range(1, CALLS + 1))  # type: ignore[index]
        wait_for(lambda: server.status() is not None, 60, "the restarted server to be up")
        assert server.stop() == 0
        assert client.stop() == 0
    finally:
        server.kill()
        client.kill()
    seen = recovered_state(Client, "client", client_log, seaweedfs).seen
    assert seen == list(range(1, CALLS + 1))
    assert recovered_state(Counter, "server", server_log, seaweedfs).count == CALLS


def test_status_and_inspect_read_a_log_on_s3(
    tmp_path: Path, seaweedfs: ObjectServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The operator's two tools on an object-store log: ``status`` names the running primary,
    then says it is gone; ``inspect`` lists its checkpoint and pages, with the lease."""
    url = f"s3://{seaweedfs.bucket}/tools/{uuid.uuid4().hex}/server"
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    port = free_port()
    server = Child(f"{APPS}:Counter", "server", url, port, {}, status_dir, seaweedfs.env())
    with pytest.MonkeyPatch.context() as mp:
        for key, value in seaweedfs.env().items():
            mp.setenv(key, value)
        server.start()
        try:
            store = open_store(url)
            wait_for(store.list_checkpoints, 60, "the first checkpoint", server.output)
            wait_for(lambda: server.status() is not None, 60, "the server to be up", server.output)
            assert main(["status", url, "--json"]) == 0
            running = json.loads(capsys.readouterr().out)
            assert running["state"] == "running", running
            assert running["primary"] == f"127.0.0.1:{port}"
            assert isinstance(running["epoch"], int) and running["epoch"] >= 1
            assert running["checkpoint"] == 1
            assert server.stop() == 0
        finally:
            server.kill()
        assert main(["status", url, "--json"]) == 3
        stopped = json.loads(capsys.readouterr().out)
        assert stopped["primary"] is None
        assert main(["inspect", url, "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
    assert report["log"] == url
    assert report["immortal"] == "server"
    assert [c["number"] for c in report["checkpoints"]] == [1]
    assert report["checkpoints"][0]["class_path"].endswith(":Counter")
    assert [c["number"] for c in report["chunks"]] == [1]
    assert report["lock"]["state"].startswith("free"), report["lock"]


def test_sigkilled_primaries_fail_over_to_standbys_with_logs_on_s3(
    tmp_path: Path, seaweedfs: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failover acceptance test of tests/test_standby.py, both logs on s3:// (SeaweedFS):
    a standby on this host takes over as soon as the killed primary's pid is gone."""
    from test_standby import report_failovers, run_failovers

    base = f"s3://{seaweedfs.bucket}/failover/{uuid.uuid4().hex}"

    def recover(cls: type, name: str, log: Path | str) -> Any:
        return recovered_state(cls, name, str(log), seaweedfs)

    times = run_failovers(
        tmp_path,
        f"{base}/server",
        f"{base}/client",
        monkeypatch,
        env=seaweedfs.env(),
        recover=recover,
        failovers=3,
        calls=3000,
    )
    report_failovers("s3", times)


def test_the_standby_writes_the_checkpoints_with_the_log_on_s3(
    tmp_path: Path, seaweedfs: ObjectServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tests/test_standby.py's checkpoint test with the server's log on s3:// (SeaweedFS): the
    primary writes checkpoint 1, the standby every later one until the primary is killed (as
    the objects record), and recovering from each gives exactly the state of the whole log."""
    from test_standby import check_standby_checkpoints

    for key, value in seaweedfs.env().items():
        monkeypatch.setenv(key, value)
    server_log = f"s3://{seaweedfs.bucket}/standby-follows/{uuid.uuid4().hex}/server"
    store = ObjectStore(server_log)
    # chunks four times longer than on a disk: the standby reads each page object with a GET of
    # its own and would otherwise fall ever further behind the primary's chunk rolls
    check_standby_checkpoints(
        tmp_path,
        server_log,
        monkeypatch,
        env=seaweedfs.env(),
        writer=store.checkpoint_writer,
        checkpoint_bytes="64KiB",
    )
