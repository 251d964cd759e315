"""The control socket's protocol, served in this process for a stand-in immortal."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from ambrosia_edge.storage.memory import MemoryStore, reset_memory_stores

from ambrosia_edge import control

pytestmark = pytest.mark.anyio


class StandIn:
    """What serve_control needs: a name, a store, a checkpoint request and a status."""

    def __init__(self, tmp: Path) -> None:
        self.name = "standin"
        self.store = MemoryStore(f"memory://control-{os.getpid()}-{tmp.name}")
        self.requests = 0
        self.chunk = 1

    def request_checkpoint(self) -> None:
        self.requests += 1

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": os.getpid(),
            "epoch": 3,
            "log": self.store.url,
            "chunk": self.chunk,
        }


@pytest.fixture(autouse=True)
def short_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    reset_memory_stores()


async def ask(path: Path, message: dict[str, Any]) -> dict[str, Any]:
    return await anyio.to_thread.run_sync(lambda: control.request(path, message))


async def test_status_checkpoint_and_errors(tmp_path: Path) -> None:
    target = StandIn(tmp_path)
    path = control.socket_path(target.name, control.log_identity(target.store))
    async with anyio.create_task_group() as tg:
        assert await tg.start(control.serve_control, target, path) == path
        assert control.find_sockets(control.log_identity(target.store)) == [path]
        status = await ask(path, {"op": "status"})
        assert status == {"ok": True, **target.status()}
        assert await ask(path, {"op": "checkpoint"}) == {
            "ok": True,
            "name": "standin",
            "pid": os.getpid(),
        }
        assert target.requests == 1
        with pytest.raises(control.ControlError, match="unknown request 'reboot'"):
            await ask(path, {"op": "reboot"})

        def raw(lines: bytes) -> list[Any]:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
                sock.sendall(lines)
                sock.shutdown(socket.SHUT_WR)
                with sock.makefile("rb") as replies:
                    return [json.loads(line) for line in replies]

        replies = await anyio.to_thread.run_sync(raw, b'not json\n{"op": "status"}\n[1]\n')
        assert [r["ok"] for r in replies] == [False, True, False]
        assert "one JSON object per line" in replies[0]["error"]
        tg.cancel_scope.cancel()
    assert not path.exists()


async def test_wait_for_the_checkpoint_to_be_stored(tmp_path: Path) -> None:
    target = StandIn(tmp_path)
    path = control.socket_path(target.name, control.log_identity(target.store))
    target.store.open()
    async with anyio.create_task_group() as tg:
        await tg.start(control.serve_control, target, path)
        with anyio.fail_after(30):
            async with anyio.create_task_group() as waiting:
                replies: list[dict[str, Any]] = []

                async def wait() -> None:
                    replies.append(await ask(path, {"op": "checkpoint", "wait": True}))

                waiting.start_soon(wait)
                while target.requests == 0:
                    await anyio.sleep(0.01)
                target.store.write_checkpoint(1, b"old")  # not newer than the current chunk
                target.store.write_checkpoint(2, b"new")
        assert replies == [{"ok": True, "name": "standin", "pid": os.getpid(), "checkpoint": 2}]
        target.chunk = 2  # the log goes on in the chunk checkpoint 2 begins
        with pytest.raises(control.ControlError, match=r"stored none within 0\.1 s"):
            await ask(path, {"op": "checkpoint", "wait": True, "timeout": 0.1})
        tg.cancel_scope.cancel()
    target.store.close()


async def test_stale_socket_replaced_and_live_one_left_alone(tmp_path: Path) -> None:
    target = StandIn(tmp_path)
    identity = control.log_identity(target.store)
    path = control.socket_path(target.name, identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the socket of a process that died, and one of the same log under an older name
    renamed = path.with_name("oldname-" + path.name.rpartition("-")[2])
    for stale in (path, renamed):
        with socket.socket(socket.AF_UNIX) as dead:
            dead.bind(str(stale))
    async with anyio.create_task_group() as tg:
        assert await tg.start(control.serve_control, target, path) == path
        assert not renamed.exists()
        assert (await ask(path, {"op": "status"}))["name"] == "standin"
        # a second server for the same socket (a log without a lease) runs without one
        assert await tg.start(control.serve_control, StandIn(tmp_path), path) is None
        assert (await ask(path, {"op": "status"}))["pid"] == os.getpid()
        tg.cancel_scope.cancel()
    assert not path.exists()


def test_long_directories_fall_back_to_a_short_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("x" * 120)))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / ("y" * 120)))
    path = control.socket_path("server", "file:///some/log")
    assert len(os.fsencode(path)) <= control.MAX_SOCKET_PATH
    assert path.parent.name == f"ambrosia-edge-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/u")
    assert control.socket_path("server", "file:///some/log").parent == Path("/run/u/ambrosia-edge")
