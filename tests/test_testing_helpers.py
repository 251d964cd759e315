"""The helpers shipped for applications' own tests work as documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ambrosia_edge import Immortal, rpc
from ambrosia_edge.testing import Cluster, eventually

pytestmark = pytest.mark.anyio


class Counter(Immortal):
    def __init__(self) -> None:
        self.count = 0

    @rpc
    async def inc(self) -> int:
        self.count += 1
        return self.count


class HundredCalls(Immortal):
    def __init__(self) -> None:
        self.seen: list[int] = []

    async def on_first_start(self) -> None:
        for _ in range(100):
            self.seen.append(await self.proxy("server").inc())


async def test_cluster_crash_and_restart_keep_exactly_once(tmp_path: Path) -> None:
    async with Cluster(tmp_path) as cluster:
        cluster.port("client")
        await cluster.start(Counter, "server")
        await cluster.start(HundredCalls, "client")
        await eventually(lambda: len(cluster["client"].obj.seen) >= 30, "some calls")
        await cluster.crash("server")
        await cluster.crash("client")
        await cluster.start(HundredCalls, "client")
        await cluster.start(Counter, "server")
        await eventually(lambda: len(cluster["client"].obj.seen) == 100, "all calls")
        assert cluster["client"].obj.seen == list(range(1, 101))
        assert cluster["server"].obj.count == 100


class Client(Immortal):
    """The docstring's client: it calls the server and says when it is done."""

    def __init__(self) -> None:
        self.done = False

    async def on_first_start(self) -> None:
        for _ in range(3):
            await self.proxy("server").inc()
        self.done = True


async def test_cluster_works_as_its_docstring_shows(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        # as in ambrosia_edge.testing's docstring, the server first and nothing declared ahead
        async with Cluster(tmp_path) as cluster:
            server = await cluster.start(Counter, "server")
            client = await cluster.start(Client, "client")
            await cluster.crash("server")  # as after SIGKILL: only the log survives
            await cluster.start(Counter, "server")
            await eventually(lambda: cluster["client"].obj.done)
        # a member restarted under its name is the same Hosted
        assert server is cluster["server"] and client is cluster["client"]
        assert cluster["server"].obj.count == 3


async def test_a_member_started_later_is_known_to_those_started_before(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with Cluster(tmp_path) as cluster:
            await cluster.start(Counter, "server")
            await cluster.start(Client, "client")
            await eventually(lambda: cluster["client"].obj.done, "the replies")


async def test_members_named_ahead_are_not_restarted(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with Cluster(tmp_path) as cluster:
            cluster.port("client")
            server = await cluster.start(Counter, "server")
            runtime = server.runtime
            await cluster.start(Client, "client")
            await eventually(lambda: cluster["client"].obj.done, "the replies")
            assert server.runtime is runtime


def test_the_helpers_import_without_pytest() -> None:
    # the suites import pytest; the helpers an application's own code may use must not
    code = "import sys; sys.modules['pytest'] = None; import ambrosia_edge.testing"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
