"""``ambrosia-edge status``: who is primary for a log, read from its lease and control socket,
for a real immortal in a child process on the local and the shared-mount tiers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import APPS, Child, free_port, wait_for

from ambrosia_edge import control
from ambrosia_edge.cli import main
from ambrosia_edge.store import open_store


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


def status_json(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code = main(["status", url, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("tier", ["file", "nfs"])
def test_status_names_the_primary_then_says_it_is_gone(
    tmp_path: Path, tier: str, children: list[Child], capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(tmp_path / "server") if tier == "file" else f"nfs://{tmp_path / 'server'}"
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    port = free_port()
    child = Child(f"{APPS}:Counter", "server", url, port, {}, status_dir)
    children.append(child)
    child.start()
    identity = control.log_identity(open_store(url))

    def answering() -> bool:
        for path in control.find_sockets(identity):
            try:
                control.request(path, {"op": "status"})
            except OSError:
                continue
            return True
        return False

    wait_for(answering, 60, "the server's control socket", child.output)
    store = open_store(url)
    wait_for(store.list_checkpoints, 60, "the first checkpoint", child.output)
    assert child.proc is not None
    code, status = status_json(url, capsys)
    assert code == 0, status
    assert status["state"] == "running"
    assert status["primary"] == f"127.0.0.1:{port}"
    assert status["pid"] == child.proc.pid
    assert isinstance(status["epoch"], int) and status["epoch"] >= 1
    assert status["standbys"] == []
    assert status["checkpoint"] == 1  # the first chunk opens with a checkpoint
    if tier == "nfs":
        assert isinstance(status["lease_age_s"], float) and status["lease_age_s"] < 5
    else:
        assert status["lease_age_s"] is None  # flock: held while the process lives

    assert main(["status", url]) == 0
    text = capsys.readouterr().out
    assert f"primary:     127.0.0.1:{port} (pid {child.proc.pid} on " in text
    assert "standbys:    none\n" in text

    child.kill()
    code, status = status_json(url, capsys)
    assert code == 3
    assert status["primary"] is None
    assert status["state"] == "lapsed", status  # killed: it never released the lease


def test_a_cleanly_stopped_shared_log_is_stopped(
    tmp_path: Path, children: list[Child], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"nfs://{tmp_path / 'server'}"
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    child = Child(f"{APPS}:Counter", "server", url, free_port(), {}, status_dir)
    children.append(child)
    child.start()
    wait_for(lambda: child.status() is not None, 60, "the server to run", child.output)
    assert child.stop() == 0
    started = time.monotonic()
    code, status = status_json(url, capsys)
    assert time.monotonic() - started < 5
    assert (code, status["state"], status["primary"]) == (3, "stopped", None)
    assert status["epoch"] == 1


def test_a_memory_log_has_nothing_running_to_show(capsys: pytest.CaptureFixture[str]) -> None:
    code, status = status_json("memory://nowhere", capsys)
    assert code == 3
    assert status["state"] == "in-process"
    assert status["primary"] is None and status["standbys"] == []
