"""Test helpers for applications: host several immortals in one event loop and crash them.

::

    async def test_counter_survives_a_crash(tmp_path):
        async with Cluster(tmp_path) as cluster:
            server = await cluster.start(Counter, "server")
            client = await cluster.start(Client, "client")
            await cluster.crash("server")          # as after SIGKILL: only the log survives
            await cluster.start(Counter, "server")
            await eventually(lambda: cluster["client"].obj.done)

Every immortal gets a loopback port and a log folder under the given directory, and knows the
address of every other one. A crash cancels the immortal without any clean-up, so whatever was
not yet durable is gone, exactly as after SIGKILL.

An immortal learns its peers when it starts, from its peer table, as with ``--peer``. So when
a new member joins, every running member that does not know it yet is restarted, as an operator
restarts an immortal to give it a longer ``--peer`` list; calls are exactly-once across that
restart as across any other. To have no such restart, name the members ahead with
``cluster.port(name)``. A member started with ``peers=`` knows only those: no member is
restarted for it, and it is not restarted for later ones.

The contracts a third-party storage tier or transport must keep are test suites of their own,
in ``ambrosia_edge.testing.storage_suite`` and ``ambrosia_edge.testing.link_suite``; they
import pytest, which this module does not need. In a ``conftest.py``,
``pytest.register_assert_rewrite`` of those two modules makes their asserts say what differed.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..config import PeerAddress, Settings
from ..immortal import Immortal
from ..runtime import Runtime

__all__ = ["Cluster", "Hosted", "eventually", "free_port"]

log = logging.getLogger("ambrosia_edge")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    condition: Callable[[], Any], what: str = "the condition", timeout: float = 20
) -> None:
    """Wait for ``condition()`` to be truthy, with a deadline; never a fixed sleep."""
    try:
        with anyio.fail_after(timeout):
            while not condition():
                await anyio.sleep(0.002)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


class Hosted:
    """One immortal hosted in the caller's event loop; ``crash`` it and ``start`` it again."""

    def __init__(self, tg: TaskGroup, cls: type[Immortal], settings: Settings) -> None:
        self.tg = tg
        self.cls = cls
        self.settings = settings
        self.runtime: Runtime | None = None
        self._scope: anyio.CancelScope | None = None
        self._stopped = anyio.Event()

    async def start(self) -> Runtime:
        runtime = self.runtime = Runtime(self.cls, self.settings)
        scope = self._scope = anyio.CancelScope()
        stopped = self._stopped = anyio.Event()

        async def host(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await runtime.serve(task_status=task_status)
            finally:
                stopped.set()

        await self.tg.start(host)
        return runtime

    async def crash(self) -> None:
        """Cancel without clean-up; returns once the log is released."""
        if self._scope is not None:
            self._scope.cancel()
            await self._stopped.wait()

    @property
    def running(self) -> bool:
        return self._scope is not None and not self._stopped.is_set()

    @property
    def obj(self) -> Any:
        """The live immortal object (for assertions; change it only through calls)."""
        assert self.runtime is not None, "start it first"
        return self.runtime.immortal


class Cluster:
    """Immortals that know each other's loopback addresses, in one task group."""

    def __init__(self, directory: Path | str, **settings: Any) -> None:
        self.directory = Path(directory)
        self.settings = settings
        self.ports: dict[str, int] = {}
        self.hosted: dict[str, Hosted] = {}
        self._chosen: dict[str, list[str] | None] = {}  # the ``peers`` each member was given
        self._tg: TaskGroup | None = None

    def port(self, name: str) -> int:
        """``name``'s port, chosen now if it has none: members started later know it."""
        if name not in self.ports:
            self.ports[name] = free_port()
        return self.ports[name]

    async def start(
        self, cls: type[Immortal], name: str, *, peers: list[str] | None = None
    ) -> Hosted:
        """Start (or restart after a crash) immortal ``name``; ``peers`` defaults to all known.

        A restarted member keeps its ``Hosted``, so a reference taken at the first start stays
        good. Unless ``peers`` is given, running members that know every other one are
        restarted to learn ``name`` if it is new to them (see the module's docstring).
        """
        assert self._tg is not None, "use `async with Cluster(...)`"
        if name in self.hosted and self.hosted[name].running:
            raise RuntimeError(f"{name} is running: crash it first")
        self.port(name)
        self._chosen[name] = peers
        for other, hosted in self.hosted.items():
            if (
                peers is None
                and other != name
                and self._chosen.get(other) is None
                and hosted.running
                and name not in hosted.settings.peers
            ):
                log.info("cluster: restarting %s so that it knows %s", other, name)
                await hosted.crash()
                hosted.settings = self._settings(hosted.cls, other)
                await hosted.start()
        settings = self._settings(cls, name)
        if name in self.hosted:
            hosted = self.hosted[name]
            hosted.cls, hosted.settings = cls, settings
        else:
            hosted = self.hosted[name] = Hosted(self._tg, cls, settings)
        await hosted.start()
        return hosted

    def _settings(self, cls: type[Immortal], name: str) -> Settings:
        chosen = self._chosen.get(name)
        names = chosen if chosen is not None else [n for n in self.ports if n != name]
        return Settings(
            target=f"{cls.__module__}:{cls.__qualname__}",
            name=name,
            log=str(self.directory / name),
            listen=PeerAddress("127.0.0.1", self.port(name)),
            peers={peer: PeerAddress("127.0.0.1", self.port(peer)) for peer in names},
            **self.settings,
        )

    async def crash(self, name: str) -> None:
        await self.hosted[name].crash()

    def __getitem__(self, name: str) -> Hosted:
        return self.hosted[name]

    async def __aenter__(self) -> Cluster:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        return await self._tg.__aexit__(exc_type, exc, tb)
