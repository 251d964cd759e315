"""Two immortals in one process over real loopback TCP, on asyncio and trio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from instances import eventually, settings
from support import free_port

from ambrosia_edge import Immortal, NondeterminismError, RemoteError, rpc
from ambrosia_edge.runtime import Runtime

pytestmark = pytest.mark.anyio


class Server(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count

    @rpc
    async def boom(self) -> None:
        raise KeyError("no such thing")

    @rpc
    async def sleepy(self) -> None:
        await anyio.sleep(0.01)


class Caller(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []
        self.errors: list[str] = []
        self.done = False

    async def on_first_start(self) -> None:
        server = self.proxy("server")
        for _ in range(50):
            self.seen.append(await server.inc())
        try:
            await server.boom()
        except RemoteError as exc:
            self.errors.append(f"{exc.type_name}:{exc.message}")
        try:
            await server.sleepy()
        except RemoteError as exc:
            self.errors.append(f"{exc.type_name}:{exc.message}")
        self.done = True


async def test_awaited_calls_return_values_and_remote_errors(tmp_path: Path) -> None:
    ps, pc = free_port(), free_port()
    server = Runtime(Server, settings("server", tmp_path / "s", ps, {"client": pc}))
    client = Runtime(Caller, settings("client", tmp_path / "c", pc, {"server": ps}))
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        await tg.start(client.serve)
        await eventually(lambda: client.immortal.done, "the client to finish", 20)  # type: ignore[attr-defined]
        tg.cancel_scope.cancel()
    caller: Any = client.immortal
    assert caller.seen == list(range(1, 51))
    assert caller.errors[0] == "KeyError:'no such thing'"
    assert caller.errors[1].startswith("NondeterminismError:handler Server.sleepy awaited")
    assert server.immortal.count == 50  # type: ignore[attr-defined]

    # recovery from the logs alone rebuilds the same state
    again = Runtime(Caller, settings("client", tmp_path / "c", pc, {"server": ps}))
    again.recover()
    again.store.close()
    assert again.immortal.seen == caller.seen  # type: ignore[attr-defined]
    assert NondeterminismError.code == "nondeterminism"
