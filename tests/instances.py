"""In-process immortals that tests can crash (cancel without any clean-up) and restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ambrosia_edge.config import PeerAddress, Settings
from ambrosia_edge.runtime import Runtime


def settings(name: str, log: Path, port: int, peers: dict[str, int], **extra: Any) -> Settings:
    return Settings(
        target="tests:inprocess",
        name=name,
        log=str(log),
        listen=PeerAddress("127.0.0.1", port),
        peers={peer: PeerAddress("127.0.0.1", p) for peer, p in peers.items()},
        **extra,
    )


class Instance:
    """One immortal hosted in the test's event loop.

    ``crash`` cancels it: whatever was not yet on disk is gone, exactly as after SIGKILL,
    because the runtime writes nothing on the way out.
    """

    def __init__(self, tg: TaskGroup, cls: type, settings: Settings) -> None:
        self.tg = tg
        self.cls = cls
        self.settings = settings
        self.runtime: Runtime | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    async def start(self) -> Runtime:
        self.runtime = Runtime(self.cls, self.settings)
        self._scope = anyio.CancelScope()
        self._stopped = anyio.Event()
        runtime, scope, stopped = self.runtime, self._scope, self._stopped

        async def host(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await runtime.serve(task_status=task_status)
            finally:
                stopped.set()

        await self.tg.start(host)
        return self.runtime

    async def crash(self) -> None:
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    @property
    def obj(self) -> Any:
        assert self.runtime is not None
        return self.runtime.immortal


async def eventually(condition: Any, what: str, timeout: float = 20) -> None:
    """Wait for ``condition()`` with a deadline (no fixed sleeps)."""
    try:
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None
